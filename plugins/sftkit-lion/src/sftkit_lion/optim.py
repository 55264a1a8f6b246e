"""Lion factories: ``build_x(param_groups, options) -> torch.optim.Optimizer``, the same
signature as sftkit's built-in optimizer factories. Imported only when a run builds one."""

from __future__ import annotations

from typing import Any


def _bnb() -> Any:
    try:
        import bitsandbytes as bnb
    except ImportError as exc:
        from sftkit import MissingDependencyError

        raise MissingDependencyError("bitsandbytes", "the Lion optimizers") from exc
    return bnb


def build_lion_8bit(groups: list[dict[str, Any]], options: Any) -> Any:
    return _bnb().optim.Lion8bit(
        groups,
        lr=options.lr,
        betas=tuple(options.betas),
        weight_decay=options.weight_decay,
        min_8bit_size=options.min_8bit_size,
    )


def build_paged_lion_8bit(groups: list[dict[str, Any]], options: Any) -> Any:
    return _bnb().optim.PagedLion8bit(
        groups,
        lr=options.lr,
        betas=tuple(options.betas),
        weight_decay=options.weight_decay,
        min_8bit_size=options.min_8bit_size,
    )


def build_lion_32bit(groups: list[dict[str, Any]], options: Any) -> Any:
    return _bnb().optim.Lion(
        groups,
        lr=options.lr,
        betas=tuple(options.betas),
        weight_decay=options.weight_decay,
        optim_bits=32,
    )
