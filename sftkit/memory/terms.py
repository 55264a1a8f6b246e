"""Named memory terms and the phases of a training run they are live in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# Phases in the order a run goes through them. The first phase over budget is where a run
# dies; the peak is the largest phase.
PHASES: tuple[str, ...] = (
    "load",
    "forward_backward",
    "optimizer_step",
    "later_steps",
    "evaluation",
)
PHASE_LABELS: dict[str, str] = {
    "load": "loading the model",
    "forward_backward": "first forward/backward",
    "optimizer_step": "first optimizer step",
    "later_steps": "later training steps",
    "evaluation": "evaluation",
}
TRAINING = ("forward_backward", "optimizer_step", "later_steps", "evaluation")
ALL = PHASES

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
    (CPU RAM, e.g. offloaded optimizer state; never counted against the GPU).
    """

    name: str
    bytes: int
    phases: tuple[str, ...]
    category: Category = "other"
    formula: str = ""
    pool: Pool = "device"
    source: str = ""  # which plugin contributed it, for extra_memory_terms
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        unknown = [p for p in self.phases if p not in PHASES]
        if unknown:
            raise ValueError(f"memory term {self.name!r}: unknown phases {unknown}; known {PHASES}")
        if self.bytes < 0:
            raise ValueError(f"memory term {self.name!r}: negative bytes {self.bytes}")
