"""Device memory no tensor of the model accounts for. GPU only; all zero on ``cpu``.

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

from sftkit.memory.units import MiB

CUDA_CONTEXT_BYTES = 512 * MiB
WORKSPACE_BYTES = 2 * 32 * MiB
ALLOCATOR_MARGIN = 0.05
NCCL_BYTES = 256 * MiB


def allocator_margin(allocated: int) -> int:
    return int(allocated * ALLOCATOR_MARGIN)
