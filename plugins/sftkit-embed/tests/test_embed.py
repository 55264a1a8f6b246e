"""sftkit-embed's own tests: registration, pricing equal to the real tensors, a run on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sftkit_embed.plugin as plugin

from sftkit.errors import RecipeError
from sftkit.recipe.load import load_recipe
from sftkit.testing import registered

HERE = Path(__file__).resolve().parent.parent
QUICK = HERE / "recipes" / "quickstart_embed.yaml"
R1 = HERE / "recipes" / "r1_gsm8k_qlora_embed.yaml"


def test_registers_both_strategies():
    with registered(plugin) as registry:
        qlora = load_recipe(QUICK, ["strategy.name=qlora-nf4-embed"], registry=registry)
        parts = qlora.strategy_parts
        assert parts.storage.quantized
        assert parts.trains_module("lm_head") and parts.trains_module("embed_tokens")
        lora = load_recipe(QUICK, registry=registry)
        assert not lora.strategy_parts.storage.quantized


def test_option_typo_names_the_key():
    with registered(plugin) as registry, pytest.raises(RecipeError) as info:
        load_recipe(QUICK, ["strategy.options.train_modles=[lm_head]"], registry=registry)
    assert "strategy.options.train_modles" in str(info.value) and "train_modules" in str(info.value)


def test_r1_recipe_is_priced_with_the_copies():
    from sftkit.memory import estimate

    with registered(plugin) as registry:
        embed = estimate(load_recipe(R1, registry=registry))
        plain = estimate(load_recipe(R1, ["strategy.name=qlora-nf4"], registry=registry))
    ours = [t for t in embed.terms if "embed_tokens+lm_head" in t.name]
    assert len(ours) == 1
    # 8B: embed_tokens and lm_head are 128256 x 4096 each, cast to bf16 by SFTTrainer (it
    # casts every trainable parameter of a k-bit model)
    assert ours[0].bytes == 2 * 128256 * 4096 * 2
    # their gradients and optimizer state are priced with every other trainable tensor
    grads = {t.name: t.bytes for t in embed.terms if t.category == "gradients"}
    plain_grads = {t.name: t.bytes for t in plain.terms if t.category == "gradients"}
    assert sum(grads.values()) - sum(plain_grads.values()) == 2 * 128256 * 4096 * 2
    assert embed.peak_bytes > plain.peak_bytes


def test_sharding_splits_the_copies():
    from sftkit.memory import estimate

    with registered(plugin) as registry:
        one = estimate(load_recipe(R1, ["optimizer.name=adamw"], registry=registry))
        four = estimate(
            load_recipe(
                R1,
                ["optimizer.name=adamw", "distributed.engine=fsdp", "hardware.num_gpus=4"],
                registry=registry,
            )
        )

    def copy_bytes(est):
        return next(t.bytes for t in est.terms if "embed_tokens+lm_head" in t.name)

    assert copy_bytes(four) == -(-copy_bytes(one) // 4)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("strategy", ["lora-embed", "qlora-nf4-embed"])
@pytest.mark.parametrize("optimizer", ["adamw", "adamw-8bit"])
def test_predicted_bytes_equal_the_real_tensors_after_one_step(tmp_path, strategy, optimizer):
    pytest.importorskip("torch")
    pytest.importorskip("bitsandbytes")
    from sftkit.testing import static_bytes_after_one_step

    with registered(plugin) as registry:
        resolved = load_recipe(
            QUICK,
            [
                f"strategy.name={strategy}",
                f"optimizer.name={optimizer}",
                "~optimizer.options",
                "model.dtype=bfloat16",
                "training.precision=bf16",  # as on a GPU: bf16 copies over the fp32 stream
                "training.micro_batch_size=2",
                "training.max_seq_length=16",
            ],
            registry=registry,
        )
        predicted, measured = static_bytes_after_one_step(resolved, tmp_path / "base")
    assert predicted.as_dict() == measured.as_dict()


def test_runs_end_to_end_on_cpu(quick_run):
    run_dir = quick_run(recipe=QUICK)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "completed" and run["strategy"] == "lora-embed"
    adapter = json.loads((run_dir / "final" / "adapter_config.json").read_text())
    assert set(adapter["modules_to_save"]) == {"embed_tokens", "lm_head"}
