"""The device's memory, and the device memory no tensor accounts for.

Memory budgets: known GPUs by name, raw sizes, the present device, or host RAM.

The catalog holds the total memory the NVIDIA driver reports for each card (``nvidia-smi``
"Total", in MiB). The CUDA context, library workspaces and allocator margin are not taken off
here: they are named terms of the estimate, so the table shows them.

Overheads, the device memory no tensor of the model accounts for. GPU only; all zero on
``cpu``.

These are stated assumptions, not measurements, and the GPU benchmark calibrates them:

- CUDA context: the driver's per-process context and the kernels loaded into it, which
  ``torch.cuda.memory_allocated`` never sees (NVML does). PyTorch's maintainers quote a few
  hundred MiB to ~700+ MiB depending on CUDA version and GPU; lazy module loading (the
  default since CUDA 11.7) keeps it near the low end. Budgeted at 512 MiB.
- Library workspaces: one cuBLAS and one cuBLASLt workspace of 32 MiB each (NVIDIA's
  recommended size on Hopper; 4 MiB suffices before it). Budgeted at 64 MiB.
- Allocator margin: the caching allocator rounds blocks up (512 B, 2 MiB segments for large
  blocks) and fragments; reserved memory runs above allocated. Budgeted at 5% of the bytes
  allocated in the phase.
- NCCL: communicator buffers per process when more than one GPU trains. Budgeted at 256 MiB.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any, Literal

from sftkit.devices import is_cpu
from sftkit.errors import SftkitError
from sftkit.memory.terms import MiB, is_size, parse_size
from sftkit.suggest import closest

BudgetKind = Literal["gpu", "cpu"]


@dataclass(frozen=True)
class MemoryBudget:
    """How many bytes one device offers. ``kind="cpu"`` means no GPU: host RAM."""

    name: str
    total_bytes: int
    kind: BudgetKind = "gpu"
    source: str = "catalog"

    @property
    def is_gpu(self) -> bool:
        return self.kind == "gpu"


# name -> total MiB as the driver reports it. Aliases map other spellings to these names.
GPU_CATALOG_MIB: dict[str, int] = {
    "A100-40GB": 40960,
    "A100-80GB": 81920,
    "H100-80GB": 81559,
    "H200": 143771,
    "L4": 23034,
    "A10G": 23028,
    "L40S": 46068,
    "RTX-4090": 24564,
    "T4": 15360,
}
ALIASES: dict[str, str] = {
    "a100": "A100-40GB",  # resolved with a note below: ambiguous
    "a100-40g": "A100-40GB",
    "a100-80g": "A100-80GB",
    "h100": "H100-80GB",
    "h100-80g": "H100-80GB",
    "h100-sxm": "H100-80GB",
    "h100-pcie": "H100-80GB",
    "h200-141gb": "H200",
    "4090": "RTX-4090",
    "rtx4090": "RTX-4090",
    "geforce-rtx-4090": "RTX-4090",
    "nvidia-l4": "L4",
    "tesla-t4": "T4",
}
AMBIGUOUS = {"a100": ("A100-40GB", "A100-80GB")}


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def known_gpus() -> list[str]:
    return list(GPU_CATALOG_MIB)


def catalog_budget(name: str) -> MemoryBudget | None:
    key = _norm(name)
    if key in AMBIGUOUS:
        options = " or ".join(AMBIGUOUS[key])
        raise SftkitError(f"GPU {name!r} is ambiguous: write {options}.")
    for known, mib in GPU_CATALOG_MIB.items():
        if _norm(known) == key or ALIASES.get(key) == known:
            return MemoryBudget(known, mib * MiB, "gpu", "catalog (driver-reported total)")
    return None


def host_budget() -> MemoryBudget:
    """Host RAM, for ``cpu``: the estimate is still computed and compared with it."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 0
    return MemoryBudget("cpu", int(total), "cpu", "host RAM")


def present_device() -> MemoryBudget:
    """The first GPU as NVML reports it (through ``nvidia-smi``, so no torch import), or the
    host when there is none."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out:
            name, _, mib = out.splitlines()[0].rpartition(",")
            try:
                return MemoryBudget(
                    name.strip(), int(float(mib)) * MiB, "gpu", "present device (nvidia-smi)"
                )
            except ValueError:
                pass
    return host_budget()


def builtin_budget(device: str) -> MemoryBudget:
    """The built-in answer for a device string; raises a SftkitError naming what is known."""
    key = _norm(device)
    if is_cpu(device):
        return host_budget()
    if key == "auto":
        return present_device()
    if is_size(device):
        return MemoryBudget(device.strip(), parse_size(device), "gpu", "size given")
    budget = catalog_budget(device)
    if budget is not None:
        return budget
    known = known_gpus()
    hint = closest(device, known)
    raise SftkitError(
        f"unknown GPU {device!r}"
        + (f"; did you mean {hint!r}?" if hint else ".")
        + f" Known: {', '.join(known)}; or a size such as 40GB / 40GiB, 'auto' (the present "
        "device) or 'cpu'.",
        hint="A plugin can add cards through the device_memory_budget hook.",
    )


def resolve_budget(device: str, manager: Any = None) -> MemoryBudget:
    """Ask the ``device_memory_budget`` hook (plugins first, the built-in catalog last)."""
    if manager is None:
        return builtin_budget(device)
    budget = manager.hook.device_memory_budget(device=device)
    if budget is None:
        return builtin_budget(device)
    if not isinstance(budget, MemoryBudget):
        raise SftkitError(
            f"a device_memory_budget implementation returned {type(budget).__name__} for "
            f"{device!r}; expected sftkit.memory.budget.MemoryBudget."
        )
    return budget


CUDA_CONTEXT_BYTES = 512 * MiB
WORKSPACE_BYTES = 2 * 32 * MiB
ALLOCATOR_MARGIN = 0.05
NCCL_BYTES = 256 * MiB


def allocator_margin(allocated: int) -> int:
    return int(allocated * ALLOCATOR_MARGIN)
