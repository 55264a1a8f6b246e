"""Activation offloading (``training.activation_offload``): the checkpointed layer inputs live
in host memory (pinned on CUDA) between the forward pass and the backward pass.

With non-reentrant gradient checkpointing, what each decoder layer keeps for backward is its
input, which `torch.utils.checkpoint` saves through the saved-tensor mechanism before the
layer runs; everything inside the layer is recomputed. `install` opens
`torch.autograd.graph.saved_tensors_hooks` for the span of the decoder stack in a training
forward (from the backbone's start to the final norm), so exactly those inputs are packed:
each is copied to host memory and the device copy is freed; backward brings one back at a
time as it recomputes that layer. Integer tensors saved there (the token ids an embedding
that trains keeps) stay where they are. The estimator prices the inputs as host memory and
one input back on the device while its layer is recomputed.
"""

from __future__ import annotations

from typing import Any

import torch


class CheckpointOffload:
    """The pack/unpack pair and the bookkeeping the tests read (`packed_bytes`)."""

    def __init__(self, backbone: torch.nn.Module, final_norm: torch.nn.Module) -> None:
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)
        self.active = False
        self.packed_bytes = 0  # bytes moved to host in the last forward
        self.handles = [
            backbone.register_forward_pre_hook(self._start),
            final_norm.register_forward_pre_hook(self._stop),
            backbone.register_forward_hook(self._stop, always_call=True),
        ]

    def pack(self, tensor: torch.Tensor) -> Any:
        if not tensor.is_floating_point():
            return tensor
        self.packed_bytes += tensor.nbytes
        if tensor.device.type == "cpu":  # already host memory: a copy keeps the same path
            return (tensor.device, tensor.detach().clone())
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        host.copy_(tensor, non_blocking=True)
        return (tensor.device, host)

    @staticmethod
    def unpack(packed: Any) -> torch.Tensor:
        if isinstance(packed, torch.Tensor):
            return packed
        device, host = packed
        return host.to(device, non_blocking=True)

    def _start(self, module: torch.nn.Module, args: Any) -> None:
        if module.training and torch.is_grad_enabled() and not self.active:
            self.packed_bytes = 0
            self.hooks.__enter__()
            self.active = True

    def _stop(self, module: torch.nn.Module, *args: Any) -> None:
        if self.active:
            self.hooks.__exit__(None, None, None)
            self.active = False

    def remove(self) -> None:
        self._stop(torch.nn.Module())
        for handle in self.handles:
            handle.remove()


def install(model: Any) -> CheckpointOffload:
    """Offload the checkpointed layer inputs of `model` (a transformers causal LM, possibly
    under PEFT) during its training forwards."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = base.base_model
    norm = getattr(backbone, "norm", None) or getattr(backbone, "final_layernorm", None)
    if norm is None:
        from sftkit.errors import SftkitError

        raise SftkitError(
            f"training.activation_offload: {type(backbone).__name__} has no final norm "
            "(norm / final_layernorm) to end the offloaded span at."
        )
    offload = CheckpointOffload(backbone, norm)
    model._sftkit_offload = offload  # keeps it alive with the model
    return offload
