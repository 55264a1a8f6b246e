"""What an estimate is made of: named memory terms, the phases of a run they are live in, the
per-phase contributions (`Part`) they are merged from, and byte units (sftkit prints binary
gibibytes, GiB = 2**30 bytes, everywhere, and says so).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal, get_args

from sftkit.errors import SftkitError

# Phases in the order a run goes through them. The first phase over budget is where a run
# dies; the peak is the largest phase.
PHASES: tuple[str, ...] = (
    "load",
    "rollout",
    "forward_backward",
    "optimizer_step",
    "later_steps",
    "evaluation",
)
PHASE_LABELS: dict[str, str] = {
    "load": "loading the model",
    "rollout": "generating completions (rollout)",
    "forward_backward": "first forward/backward",
    "optimizer_step": "first optimizer step",
    "later_steps": "later training steps",
    "evaluation": "evaluation",
}

Pool = Literal["device", "paged", "host"]
Category = Literal[
    "weights",
    "trainable",
    "gradients",
    "optimizer",
    "activations",
    "logits",
    "overhead",
    "communication",
    "other",
]


@dataclass(frozen=True)
class MemoryTerm:
    """`bytes` of memory, live in each of `phases`.

    `pool` says where it lives: ``device`` (the CUDA caching allocator), ``paged`` (CUDA
    unified memory that can spill to host RAM; bitsandbytes paged optimizers) or ``host``
    (CPU RAM, e.g. offloaded optimizer state; never counted against the GPU). A plugin's
    term (`extra_memory_terms`) may take the place of the estimate's own: `replaces` names
    them as ``estimate-memory`` prints them (or their beginning), in this term's phases. Its
    `notes` are printed with the estimate's, each followed by `source` (default: the plugin).
    """

    name: str
    bytes: int
    phases: tuple[str, ...]
    category: Category = "other"
    formula: str = ""
    pool: Pool = "device"
    source: str = ""  # which plugin contributed it, for extra_memory_terms
    notes: tuple[str, ...] = field(default=(), compare=False)
    replaces: str = ""

    def __post_init__(self) -> None:
        unknown = [p for p in self.phases if p not in PHASES]
        if unknown:
            raise ValueError(f"memory term {self.name!r}: unknown phases {unknown}; known {PHASES}")
        if self.bytes < 0:
            raise ValueError(f"memory term {self.name!r}: negative bytes {self.bytes}")
        for what, value, allowed in (
            ("category", self.category, get_args(Category)),
            ("pool", self.pool, get_args(Pool)),
        ):
            if value not in allowed:
                raise ValueError(f"memory term {self.name!r}: {what} {value!r}; known {allowed}")


#: Which of a phase's three device figures a device part first counts in: ``allocated``
#: (handed out by the caching allocator: tensors, library workspaces), ``reserved`` (held by
#: the allocator above that: its margin), ``outside`` (device memory the allocator never sees:
#: the CUDA context, NCCL's buffers). Each figure includes the ones before it.
Figure = Literal["allocated", "reserved", "outside"]


@dataclass(frozen=True)
class Part:
    """One contribution to one phase, before parts are merged into terms."""

    name: str
    bytes: int
    category: Category
    formula: str = ""
    pool: Pool = "device"
    figure: Figure = "allocated"


def div(n: int, k: int) -> int:
    return math.ceil(n / k) if k > 1 else n


KiB, MiB, GiB, TiB = 2**10, 2**20, 2**30, 2**40
UNIT_NOTE = "GiB = 2**30 bytes"

_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": KiB,
    "mib": MiB,
    "gib": GiB,
    "tib": TiB,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*$")


def gib(n: int | float) -> str:
    """``12.34 GiB`` (two decimals; the unit every report uses)."""
    return f"{n / GiB:.2f} GiB"


def gib_number(n: int | float) -> str:
    """The bare number in GiB, for tables whose header names the unit."""
    return f"{n / GiB:.2f}"


def is_size(text: str) -> bool:
    match = _SIZE.match(text)
    return bool(match and match.group(2).lower() in _UNITS)


def parse_size(text: str) -> int:
    """``40GB`` -> 40*10**9, ``40GiB`` -> 40*2**30 (decimal and binary units both accepted)."""
    match = _SIZE.match(text)
    if not match or match.group(2).lower() not in _UNITS:
        raise SftkitError(
            f"{text!r} is not a memory size; write a number and a unit such as 40GB, 40GiB or 24576MiB."
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
