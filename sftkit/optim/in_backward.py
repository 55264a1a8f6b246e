"""Optimizer in backward (``training.optimizer_in_backward``; torchtune's ``optimizer_in_bwd``).

Each trainable parameter gets its own optimizer, built by the recipe's optimizer factory from
a one-parameter group that keeps its group's settings, and a post-accumulate-grad hook that
steps it and frees its gradient as soon as backward has produced it: at most one gradient
lives at a time, instead of all of them until ``optimizer.step()``.

The trainer holds `OptimizerInBackward`: its ``param_groups`` are the recipe's groups (the
learning-rate scheduler scales them, and every hook copies its group's current settings into
the parameter's optimizer before stepping); ``step()`` does nothing, the hooks did it; the
state is the per-parameter optimizers' (``state``, ``state_dict``, ``load_state_dict``).

It cannot combine with gradient accumulation (a parameter would be stepped on every
micro-batch) or with global gradient clipping (the norm needs every gradient at once); the
recipe schema refuses both, and distributed engines (whose gradient reduction runs in the
same backward hooks), before anything loads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Factory = Callable[[list[dict[str, Any]]], torch.optim.Optimizer]


class OptimizerInBackward(torch.optim.Optimizer):
    def __init__(self, groups: list[dict[str, Any]], build: Factory) -> None:
        params = [p for g in groups for p in g["params"]]
        if not params:
            raise ValueError("optimizer in backward: no trainable parameter")
        # the factory's defaults (lr, betas, ...), read off a throwaway one-element optimizer
        probe = torch.nn.Parameter(params[0].detach().new_zeros(1))
        defaults = build([{"params": [probe]}]).defaults
        super().__init__(groups, dict(defaults))
        self._inner: dict[torch.Tensor, tuple[torch.optim.Optimizer, dict[str, Any]]] = {}
        self._handles = []
        for group in self.param_groups:
            settings = {k: v for k, v in group.items() if k != "params"}
            for p in group["params"]:
                self._inner[p] = (build([{"params": [p], **settings}]), group)
                self._handles.append(p.register_post_accumulate_grad_hook(self._step_one))

    def _step_one(self, param: torch.Tensor) -> None:
        optimizer, group = self._inner[param]
        inner = optimizer.param_groups[0]
        for key, value in group.items():
            if key != "params":
                inner[key] = value
        optimizer.step()
        param.grad = None

    @property
    def inner_optimizers(self) -> list[torch.optim.Optimizer]:
        return [optimizer for optimizer, _ in self._inner.values()]

    @property  # type: ignore[override]
    def state(self) -> dict[torch.Tensor, Any]:
        inner = getattr(self, "_inner", {})
        return {p: opt.state[p] for p, (opt, _) in inner.items() if p in opt.state}

    @state.setter
    def state(self, value: Any) -> None:
        # torch.optim.Optimizer.__init__ assigns an empty state: it lives in the
        # per-parameter optimizers instead.
        pass

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Nothing left to do: each parameter was stepped in backward."""
        return closure() if closure is not None else None

    def state_dict(self) -> dict[str, Any]:
        groups = [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]
        return {"param_groups": groups, "inner": [o.state_dict() for o in self.inner_optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        inner = state_dict["inner"]
        if len(inner) != len(self._inner) or len(state_dict["param_groups"]) != len(
            self.param_groups
        ):
            raise ValueError("optimizer in backward: the state was saved for other parameters")
        for group, saved in zip(self.param_groups, state_dict["param_groups"], strict=True):
            group.update(saved)
        for optimizer, saved in zip(self.inner_optimizers, inner, strict=True):
            optimizer.load_state_dict(saved)
