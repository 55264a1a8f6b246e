"""Trainable parameters, their gradients, and optimizer state, from the optimizer spec.

State is allocated lazily by ``optimizer.step()`` the first time it runs: it is absent from the
first forward/backward and present from the first optimizer step on. The spec's
``state_for(options)`` prices each trainable tensor; this module adds what depends on the
implementation rather than the algorithm:

- foreach temporaries (``DenseMomentState.temporaries``): torch's multi-tensor kernels build
  them for a whole dtype group at once, so they are summed over the largest group; other
  optimizers step tensor by tensor, so only the largest tensor's temporaries count.
- optimizer in backward (``training.optimizer_in_backward``): every parameter has its own
  optimizer, stepped in backward as soon as its gradient exists, which is then freed: one
  gradient lives at a time (the largest is priced), each tensor's step builds its own
  temporaries, and state an optimizer shares across its tensors (quantization maps) is
  built once per tensor.
- paged state (``OptimizerSpec.paged``): bitsandbytes allocates a state buffer in CUDA unified
  memory only for tensors of at least 100,000 elements (``Optimizer8bit.get_state_buffer``);
  smaller buffers and the fp32 block maxima (``absmax1/2``) are ordinary device tensors.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sftkit.memory.layout import LaidTensor
from sftkit.memory.setup import Setup

PAGED_MIN_NUMEL = 100_000  # bitsandbytes: `if not self.is_paged or p.numel() < 1e5`


@dataclass(frozen=True)
class OptimizerCost:
    trainable_parameters: int
    trainable_bytes: int
    gradient_bytes: int  # all gradients (what lives before optimizer.step())
    live_gradient_bytes: int  # the most gradient bytes alive at once
    state_device_bytes: int
    state_paged_bytes: int
    step_temporary_bytes: int

    @property
    def state_bytes(self) -> int:
        return self.state_device_bytes + self.state_paged_bytes


def _state_bytes(state: Any, t: LaidTensor) -> int:
    factored = getattr(state, "factored_bytes", None)
    if callable(factored):
        return int(factored(t.shape))
    return int(state.state_bytes(t.numel, t.dtype_bytes))


def _paged_part(state: Any, t: LaidTensor) -> int:
    """Bytes of one tensor's state that a paged optimizer puts in unified memory."""
    if t.numel < PAGED_MIN_NUMEL:
        return 0
    paged = getattr(state, "paged_bytes", None)
    return int(paged(t.numel, t.dtype_bytes)) if callable(paged) else _state_bytes(state, t)


def optimizer_cost(setup: Setup, tensors: list[LaidTensor]) -> OptimizerCost:
    spec = setup.optimizer
    state = spec.state_for(setup.optimizer_options)
    trainable = [t for t in tensors if t.trainable]
    params = sum(t.numel * t.count for t in trainable)
    nbytes = sum(t.numel * t.dtype_bytes * t.count for t in trainable)
    device = paged = 0
    for t in trainable:
        total = _state_bytes(state, t)
        part = _paged_part(state, t) if spec.paged else 0
        device += (total - part) * t.count
        paged += part * t.count
    shared = getattr(state, "shared_bytes", None)
    in_backward = setup.optimizer_in_backward
    if callable(shared):
        if in_backward:  # one optimizer per tensor, each with its own shared state
            device += sum(int(shared([t.numel])) * t.count for t in trainable)
        else:
            device += int(shared([t.numel for t in trainable]))
    if getattr(state, "temporaries_per_group", False) and not in_backward:
        # torch steps one param group at a time (sftkit puts 1-D tensors in a no-decay group)
        # and, inside it, one dtype at a time: the largest such batch builds its temporaries.
        groups: dict[tuple[bool, int], int] = defaultdict(int)
        for t in trainable:
            key = (len(t.shape) < 2, t.dtype_bytes)
            groups[key] += state.step_temporary_bytes(t.numel, t.dtype_bytes) * t.count
        temporaries = max(groups.values(), default=0)
    else:
        temporaries = max(
            (state.step_temporary_bytes(t.numel, t.dtype_bytes) for t in trainable), default=0
        )
    largest = max((t.numel * t.dtype_bytes for t in trainable), default=0)
    live = largest if in_backward else nbytes
    return OptimizerCost(params, nbytes, nbytes, live, device, paged, temporaries)
