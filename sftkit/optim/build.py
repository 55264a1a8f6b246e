"""Optimizer factories: ``build_x(param_groups, options) -> torch.optim.Optimizer``.

Each is the factory of one optimizer plugin (`sftkit.builtin.optimizers`). `param_groups`
come from the strategy's ``param_groups`` or sftkit's default grouping; a group's own ``lr``
or ``weight_decay`` (biases and norm weights carry ``weight_decay: 0.0``) overrides the
default passed here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

#: ``[{"params": [...], "weight_decay": 0.0}, {"params": [...]}]``: torch's parameter groups.
ParamGroups = list[dict[str, Any]]


class OptimizerFactory(Protocol):
    """An optimizer spec's factory: ``build(param_groups, options) -> torch.optim.Optimizer``.

    `param_groups` keep their own keys (the no-decay group's ``weight_decay: 0.0``), which
    override the defaults the factory passes; `options` is the validated options model.
    """

    def __call__(self, param_groups: ParamGroups, options: Any, /) -> torch.optim.Optimizer: ...


def build_torch_adamw(groups: ParamGroups, options: Any) -> Any:
    import torch

    fused = options.fused and fused_supported(groups)
    return torch.optim.AdamW(
        groups,
        lr=options.lr,
        betas=tuple(options.betas),
        eps=options.eps,
        weight_decay=options.weight_decay,
        fused=True if fused else None,
        foreach=None if fused else True,
    )


def fused_supported(groups: ParamGroups) -> bool:
    """torch's fused AdamW takes floating-point parameters on CPU or CUDA only."""
    params = [p for g in groups for p in g["params"]]
    devices = {p.device.type for p in params}
    return (
        bool(params) and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params)
    )


def _bnb() -> Any:
    try:
        import bitsandbytes as bnb
    except ImportError as exc:
        from sftkit.errors import MissingDependencyError

        raise MissingDependencyError("bitsandbytes", "this optimizer") from exc
    return bnb


def _bnb_adamw(class_name: str, groups: ParamGroups, options: Any, **extra: Any) -> Any:
    return getattr(_bnb().optim, class_name)(
        groups,
        lr=options.lr,
        betas=tuple(options.betas),
        eps=options.eps,
        weight_decay=options.weight_decay,
        **extra,
    )


def build_bnb_adamw_8bit(groups: ParamGroups, options: Any) -> Any:
    return _bnb_adamw("AdamW8bit", groups, options, min_8bit_size=options.min_8bit_size)


def build_bnb_paged_adamw_8bit(groups: ParamGroups, options: Any) -> Any:
    # On a machine without CUDA bitsandbytes falls back to ordinary (unpaged) state.
    return _bnb_adamw("PagedAdamW8bit", groups, options, min_8bit_size=options.min_8bit_size)


def build_bnb_paged_adamw_32bit(groups: ParamGroups, options: Any) -> Any:
    return _bnb_adamw("PagedAdamW32bit", groups, options)


def build_adafactor(groups: ParamGroups, options: Any) -> Any:
    from transformers.optimization import Adafactor

    relative_step = options.lr is None if options.relative_step is None else options.relative_step
    return Adafactor(
        groups,
        lr=options.lr,
        scale_parameter=options.scale_parameter,
        relative_step=relative_step,
        warmup_init=options.warmup_init,
        weight_decay=options.weight_decay,
    )


def build_sgd(groups: ParamGroups, options: Any) -> Any:
    import torch

    return torch.optim.SGD(
        groups,
        lr=options.lr,
        momentum=options.momentum,
        nesterov=options.nesterov,
        weight_decay=options.weight_decay,
    )
