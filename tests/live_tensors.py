"""Every tensor alive during a forward and backward on CPU, counted as each is created and
freed: the peak the estimator's activation moments predict, transients included (measure
mode counts only what autograd saves)."""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class LiveTensors(TorchDispatchMode):
    """`ignore`: tensors that exist already (the model's weights): a view of one that an op
    returns is not a new tensor."""

    def __init__(self, ignore: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self.sizes: dict[int, int] = {t.untyped_storage().data_ptr(): 0 for t in ignore}
        self.now = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr():
                storage = t.untyped_storage()
                if storage.data_ptr() not in self.sizes:
                    self.sizes[storage.data_ptr()] = storage.nbytes()
                    self.now += storage.nbytes()
                    self.peak = max(self.peak, self.now)
                    weakref.finalize(storage, self.free, storage.data_ptr())
        return out

    def free(self, ptr: int) -> None:
        self.now -= self.sizes.pop(ptr, 0)


def live_peak_and_prediction(
    tmp_path: Path, config: dict[str, Any], training: str
) -> tuple[int, int]:
    """(the live-tensor peak of one checkpointed QLoRA forward and backward of a random
    tiny model, the estimator's activation peak for it); `training`: the recipe's training
    keys in YAML flow style (`max_seq_length` and the switches)."""
    import dataclasses

    import sftkit.training.loss as runtime
    from sftkit.memory.estimator import shape_for
    from sftkit.memory.moments import activation_peak_bytes
    from sftkit.memory.setup import setup_from_recipe
    from sftkit.modeling import build_model
    from sftkit.recipe.load import load_recipe_text
    from sftkit.testing import fresh_registry
    from sftkit.training.measure import autocast_context, install_loss_head, prepare_for_training

    (tmp_path / "config.json").write_text(json.dumps(config))
    resolved = load_recipe_text(
        f"""
model: {{name_or_path: {tmp_path}, dtype: bfloat16, random_init: true}}
strategy: {{name: qlora-nf4, options: {{rank: 8}}}}
optimizer: {{name: adamw}}
training: {{gradient_checkpointing: true, precision: bf16, {training}}}
hardware: {{gpu: cpu}}
""",
        registry=fresh_registry(),
    )
    setup = dataclasses.replace(
        setup_from_recipe(resolved, shape_for(resolved), on_gpu=False), padded=False
    )
    torch.manual_seed(0)
    model = build_model(resolved, None, base_dir=tmp_path / "base")
    prepare_for_training(model, setup)
    heads = {"full": runtime.full_head, "chunked": runtime.chunked_head}
    forward, extra = install_loss_head(model, setup, heads[resolved.recipe.training.loss])
    ids = torch.randint(0, config["vocab_size"], (1, setup.seq_len))
    with LiveTensors() as live:
        with autocast_context(setup, "cpu"):
            loss = forward(input_ids=ids, labels=ids.clone(), **extra).loss
        loss.backward()
    return live.peak, activation_peak_bytes(setup)
