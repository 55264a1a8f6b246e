"""Every memory switch trains the quickstart model on CPU through `sftkit run` (Liger's loss
head is refused there, with the reason, before anything loads)."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")

from sftkit.errors import SftkitError  # noqa: E402
from sftkit.recipe.load import load_recipe  # noqa: E402
from sftkit.testing import fresh_registry  # noqa: E402
from sftkit.training.runner import run_recipe  # noqa: E402

SMALL = [
    "data.format.options.train_size=16",
    "data.format.options.test_size=4",
    "data.format.options.dev_size=2",
    "training.micro_batch_size=8",
    "training.max_steps=3",
    "training.logging_steps=1",
    "training.save_steps=null",
    "training.report_to=[none]",
    "evaluation.before_training=false",
    "evaluation.after_training=false",
]
SWITCHES = [
    "training.loss=chunked",
    "training.optimizer_in_backward=true",
    "training.max_grad_norm=null",
    "training.gradient_checkpointing=true",
    "training.activation_offload=true",
]
KBIT = [
    "strategy.name=qlora-nf4",
    "strategy.options.rank=8",
    "strategy.options.upcast_non_quantized=false",
    "strategy.options.embeddings_on_host=true",
    "model.dtype=bfloat16",
    "training.precision=bf16",
    "optimizer.name=paged-adamw-8bit",
    "~optimizer.options.betas",
]


def _losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [e["loss"] for e in map(json.loads, lines) if "loss" in e]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("kbit", [False, True], ids=["full-sft", "qlora-nf4"])
def test_the_quickstart_trains_with_every_switch(tmp_path, kbit):
    overrides = [*SMALL, *SWITCHES, *(KBIT if kbit else []), f"output_dir={tmp_path / 'run'}"]
    resolved = load_recipe("recipes/quickstart.yaml", overrides, registry=fresh_registry())
    result = run_recipe(resolved)
    assert result.status == "completed"
    losses = _losses(tmp_path / "run")
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    trainer = result.context.trainer
    assert type(trainer.optimizer.optimizer).__name__ == "OptimizerInBackward"
    assert trainer.model._sftkit_offload.packed_bytes > 0


def test_liger_is_refused_on_cpu_before_anything_loads(tmp_path):
    resolved = load_recipe(
        "recipes/quickstart.yaml",
        [*SMALL, "training.loss=liger", f"output_dir={tmp_path / 'run'}"],
        registry=fresh_registry(),
    )
    with pytest.raises(SftkitError, match="needs a CUDA GPU"):
        run_recipe(resolved)
    assert not (tmp_path / "run" / "base").exists()


FAST = [
    "data.packing=true",
    "training.mask_free_packing=true",
    "training.tiled_mlp=true",
    "training.compile=true",
]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_the_quickstart_trains_packed_mask_free_tiled_and_compiled(tmp_path):
    from sftkit.attention import SEQUENCE_SDPA
    from sftkit.training.layers import decoder_layers

    overrides = [*SMALL, *FAST, f"output_dir={tmp_path / 'run'}"]
    resolved = load_recipe("recipes/quickstart.yaml", overrides, registry=fresh_registry())
    result = run_recipe(resolved)
    assert result.status == "completed"
    losses = _losses(tmp_path / "run")
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    model = result.context.trainer.model
    assert model.config._attn_implementation == SEQUENCE_SDPA
    layers = list(decoder_layers(model))
    assert layers and all(layer.mlp.sftkit_tiled for layer in layers)
    assert all(layer._compiled_call_impl is not None for layer in layers)
