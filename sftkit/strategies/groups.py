"""Optimizer parameter groups: sftkit's default grouping, and the check every group list
passes before an optimizer is built from it.

A group is a dict as ``torch.optim.Optimizer`` takes it: ``params`` (a list of parameters)
plus any hyperparameter that overrides the optimizer's own (``lr``, ``weight_decay``, ...).
Imports no torch: the functions only walk what the model gives them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sftkit.errors import ParamGroupsError

if TYPE_CHECKING:
    import torch


def decays(name: str, param: torch.nn.Parameter) -> bool:
    """sftkit's weight-decay rule: matrices decay; biases and 1-D weights (norms) do not."""
    return not (param.ndim < 2 or name.endswith(".bias"))


def default_param_groups(model: torch.nn.Module) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: matrices decay; biases and norm weights (1-D) do
    not (the no-decay group carries ``weight_decay: 0.0``, overriding the optimizer's)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if decays(name, param) else no_decay).append(param)
    groups: list[dict[str, Any]] = []
    if decay:
        groups.append({"params": decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def check_param_groups(
    groups: object, model: torch.nn.Module, *, strategy: str
) -> list[dict[str, Any]]:
    """`groups` if every trainable parameter of `model` is in exactly one group and nothing
    else is; else `ParamGroupsError` naming the strategy and the offending parameters."""

    def fail(problem: str) -> ParamGroupsError:
        return ParamGroupsError(
            f"strategy {strategy!r}: param_groups() {problem}",
            hint="Each trainable parameter must be in exactly one group's 'params', and no "
            "frozen parameter in any; return None for sftkit's default groups.",
        )

    if not isinstance(groups, list) or not groups:
        shown = type(groups).__name__ if groups else repr(groups)
        raise fail(f"must return a non-empty list of dicts or None, not {shown}.")
    names = {id(p): n for n, p in model.named_parameters()}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    seen: dict[int, int] = {}
    for index, group in enumerate(groups):
        if not isinstance(group, dict) or not isinstance(group.get("params"), list):
            raise fail(f"group {index} is not a dict with a 'params' list.")
        for param in group["params"]:
            key = id(param)
            if key not in names:
                raise fail(f"group {index} holds a tensor that is not a parameter of the model.")
            if key not in trainable:
                raise fail(f"group {index} holds the frozen parameter {names[key]!r}.")
            if key in seen:
                raise fail(f"puts {names[key]!r} in group {seen[key]} and again in group {index}.")
            seen[key] = index
    missing = [names[key] for key in names if key in trainable and key not in seen]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        shown = ", ".join(repr(n) for n in missing[:3])
        raise fail(f"leaves trainable parameters out of every group: {shown}{more}.")
    return groups
