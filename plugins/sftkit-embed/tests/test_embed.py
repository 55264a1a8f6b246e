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
        assert registry.strategies.get("qlora-nf4-embed").base_storage == "4bit"
        assert registry.strategies.get("lora-embed").base_storage == "dense"


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
    assert len(ours) == 3
    # 8B: embed_tokens and lm_head are 128256 x 4096 each, fp32 after k-bit preparation.
    assert ours[0].bytes == 2 * 128256 * 4096 * 4
    assert embed.peak_bytes > plain.peak_bytes


def test_predicted_bytes_equal_the_real_tensors_after_one_step(tiny_model):
    torch = pytest.importorskip("torch")
    from sftkit.memory.compute import extra_terms, shape_for
    from sftkit.training.optimizer import build_optimizer

    with registered(plugin) as registry:
        for strategy in ("lora-embed", "qlora-nf4-embed"):
            resolved = load_recipe(
                QUICK, [f"strategy.name={strategy}", "model.dtype=bfloat16"], registry=registry
            )
            model, _ = tiny_model(resolved)  # a fixture of sftkit's test kit
            optimizer = build_optimizer(resolved, model)
            ids = torch.randint(0, 50, (2, 16))
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            copies = [
                p for n, p in model.named_parameters() if "modules_to_save" in n and p.requires_grad
            ]
            assert copies, "PEFT trains copies of embed_tokens and lm_head"
            weights = sum(p.numel() * p.element_size() for p in copies)
            grads = sum(p.grad.numel() * p.grad.element_size() for p in copies)
            state = sum(
                t.numel() * t.element_size()
                for p in copies
                for t in optimizer.state[p].values()
                if torch.is_tensor(t)
            )
            terms = {
                t.category: t.bytes
                for t in extra_terms(resolved, shape_for(resolved))
                if t.source == "embed"
            }
            assert terms == {"trainable": weights, "gradients": grads, "optimizer": state}


def test_runs_end_to_end_on_cpu(quick_run):
    run_dir = quick_run(recipe=QUICK)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "completed" and run["strategy"] == "lora-embed"
    adapter = json.loads((run_dir / "final" / "adapter_config.json").read_text())
    assert set(adapter["modules_to_save"]) == {"embed_tokens", "lm_head"}
