"""The estimator on the seed's recipes, budgets, hooks and the estimate's data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from sftkit.errors import DoesNotFitError, ModelShapeError, PluginError, SftkitError
from sftkit.hookspecs import hookimpl
from sftkit.memory import estimate, preflight
from sftkit.memory.advice import fit_search
from sftkit.memory.budget import MemoryBudget, builtin_budget, known_gpus
from sftkit.memory.terms import PHASES, GiB, MemoryTerm, parse_size
from sftkit.recipe.load import load_recipe
from sftkit.registry import Registry
from sftkit.testing import fresh_manager

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
FULL = str(RECIPES / "r1_gsm8k_full.yaml")
QLORA = str(RECIPES / "r1_gsm8k_qlora.yaml")
LORA8 = str(RECIPES / "r1_gsm8k_lora8bit.yaml")


def load(path: str, *overrides: str, registry: Registry | None = None):
    from sftkit.testing import fresh_registry

    return load_recipe(path, overrides, registry=registry or fresh_registry())


# --------------------------------------------------------------------------- units, budgets


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("40GB", 40 * 10**9),
        ("40GiB", 40 * GiB),
        ("24576MiB", 24 * GiB),
        ("1.5 TB", 15 * 10**11),
        ("80gib", 80 * GiB),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["40", "GB", "forty GB", "40 XB", ""])
def test_bad_sizes_are_errors(text):
    with pytest.raises(SftkitError, match="not a memory size"):
        parse_size(text)


def test_gpu_catalog_names_aliases_and_sizes():
    assert builtin_budget("A100-40GB").total_bytes == 40960 * 2**20
    assert builtin_budget("a100_80gb").name == "A100-80GB"
    assert builtin_budget("H100").name == "H100-80GB"
    assert builtin_budget("4090").name == "RTX-4090"
    assert builtin_budget("40GiB").total_bytes == 40 * GiB
    assert builtin_budget("cpu").kind == "cpu"
    assert {"A100-40GB", "A100-80GB", "H100-80GB", "H200", "L4", "A10G", "RTX-4090"} <= set(
        known_gpus()
    )


def test_ambiguous_and_unknown_gpus_say_what_to_write():
    with pytest.raises(SftkitError, match="A100-40GB or A100-80GB"):
        builtin_budget("A100")
    with pytest.raises(SftkitError, match="did you mean 'H200'") as info:
        builtin_budget("H20O")
    assert "40GiB" in str(info.value)


# --------------------------------------------------------------------------- the seed's case


def test_full_finetune_is_rejected_at_the_first_optimizer_step():
    result = estimate(load(FULL))
    assert not result.fits
    assert result.first_failing_phase == "optimizer_step"
    assert result.phases["forward_backward"] <= result.budget_bytes  # it got that far
    term = result.dominant_term("optimizer_step")
    assert term.category == "optimizer" and "adamw state for 8.0 B parameters" in term.name
    # bf16 AdamW: two bf16 moments per parameter plus a 4-byte step per tensor
    assert term.bytes == 2 * 2 * 8_030_261_248 + 4 * 291
    text = result.rejection()
    assert "first optimizer step: adamw state for 8.0 B parameters needs 29.92 GiB" in text
    assert "Cheapest changes that fit" in text


def test_every_suggestion_fits_when_applied():
    registry = None
    result = estimate(load(FULL))
    assert result.suggestions
    kinds = " ".join(s.change for s in result.suggestions)
    for word in ("optimizer", "strategy", "GPUs"):
        assert word in kinds
    for s in result.suggestions:
        again = estimate(load(FULL, *s.overrides, registry=registry), advise=False)
        assert again.fits, s.change
        assert again.peak_bytes == s.peak_bytes


def test_qlora_fits_with_room_to_spare():
    result = estimate(load(QLORA))
    assert result.fits
    # The evaluators' merged bf16 copy takes room only because it fits (memory/evalcopy.py);
    # without it the recipe has plenty to spare.
    copy = [t for t in result.terms if t.name.startswith("bf16 copy with adapters merged")]
    assert [t.phases for t in copy] == [("evaluation",)]
    assert copy[0].bytes == 2 * result.parameters
    plain = estimate(load(QLORA, "evaluation.evaluators.0.options.merged_copy=false"))
    assert plain.headroom_bytes > 10 * GiB
    assert result.peak_bytes - plain.peak_bytes >= copy[0].bytes
    assert result.parameters == 8_030_261_248
    assert 0 < result.trainable_parameters < 50_000_000
    assert "to spare" in result.render()


def test_lora_8bit_fits_and_prices_int8_weights():
    result = estimate(load(LORA8))
    assert result.fits
    names = [t.name for t in result.terms]
    assert any(n.startswith("LLM.int8 weights") for n in names)
    assert any("row scales" in n for n in names)


def test_preflight_raises_does_not_fit_with_the_same_text():
    resolved = load(FULL)
    with pytest.raises(DoesNotFitError) as info:
        preflight(resolved)
    assert info.value.exit_code == 3
    assert info.value.message == estimate(resolved).rejection()
    assert preflight(load(QLORA)).fits


def test_preflight_never_rejects_a_cpu_recipe():
    result = preflight(
        load(FULL, "hardware.gpu=cpu", "model.name_or_path=meta-llama/Llama-3.1-70B")
    )
    assert result.budget.kind == "cpu"
    assert not any(t.name == "CUDA context" for t in result.terms)


def test_json_has_the_documented_keys_and_consistent_totals():
    result = estimate(load(QLORA))
    data = json.loads(json.dumps(result.to_dict()))
    for key, kind in (
        ("parameters", int),
        ("trainable_parameters", int),
        ("peak_bytes", int),
        ("budget_bytes", int),
        ("fits", bool),
        ("peak_phase", str),
        ("phases", dict),
        ("terms", list),
    ):
        assert isinstance(data[key], kind), key
    assert set(data["phases"]) == set(PHASES)
    assert data["phases"]["rollout"] == 0  # an sft run generates nothing to train on
    for phase in [p for p in PHASES if p != "rollout"]:
        device = sum(
            t["bytes"] for t in data["terms"] if t["phase"] == phase and t["pool"] == "device"
        )
        # device used: the device terms and the paged state resident on the device
        paged = sum(
            t["bytes"] for t in data["terms"] if t["phase"] == phase and t["pool"] == "paged"
        )
        resident = data["resident_paged_bytes"][phase]
        assert 0 <= resident <= paged == data["paged_bytes"][phase]
        assert device + resident == data["phases"][phase]
        figures = data["phase_figures"][phase]
        assert figures["allocated"] < figures["reserved"] < figures["device_used"]
        assert figures["device_used"] == data["phases"][phase]
        context = sum(
            t["bytes"]
            for t in data["terms"]
            if t["phase"] == phase
            and t["name"] in ("CUDA context", "allocator margin (5% of allocated)")
        )
        assert figures["device_used"] - resident - figures["allocated"] == context
    assert data["peak_bytes"] == max(data["phases"].values())
    assert all({"name", "phase", "bytes"} <= set(t) for t in data["terms"])


def test_model_override_and_unknown_architecture(tmp_path):
    result = estimate(load(QLORA), model="meta-llama/Llama-3.2-1B")
    assert result.parameters == 1_235_814_400
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "mamba", "architectures": ["MambaForCausalLM"]}))
    with pytest.raises(ModelShapeError, match="'mamba'"):
        estimate(load(QLORA), model=str(config))


def test_more_gpus_with_fsdp_lower_the_per_gpu_figure():
    one = estimate(load(FULL), advise=False)
    four = estimate(load(FULL, "hardware.num_gpus=4", "distributed.engine=fsdp"), advise=False)
    assert four.peak_bytes < one.peak_bytes
    assert "per GPU" in four.setting


def test_paged_optimizer_state_is_its_own_pool_and_its_spill_is_reported():
    result = estimate(load(FULL, "optimizer.name=paged-adamw-8bit"), advise=False)
    assert any(t.pool == "paged" for t in result.terms)
    assert result.paged["optimizer_step"] > 10 * GiB
    assert result.fits and result.paged_spill_bytes > 0
    assert "spills to host" in result.render()


def test_checkpointing_off_adds_activations():
    on = estimate(load(QLORA), advise=False)
    off = estimate(load(QLORA, "training.gradient_checkpointing=false"), advise=False)
    assert off.phases["forward_backward"] > on.phases["forward_backward"]


def test_fit_search_finds_the_boundary():
    resolved = load(QLORA)
    found = fit_search(resolved)
    batch = found["training.micro_batch_size"]
    assert batch["value"] >= 4 and batch["peak_bytes"] <= builtin_budget("A100-40GB").total_bytes
    assert (
        batch["next"] == batch["value"] + 1
        and batch["next_peak_bytes"] > builtin_budget("A100-40GB").total_bytes
    )
    seq = found["training.max_seq_length"]
    assert seq["value"] % 64 == 0 and seq["value"] >= 1024


def test_fit_search_finds_the_fewest_gpus_with_the_recipes_engine():
    resolved = load(FULL, "hardware.num_gpus=2", "distributed.engine=fsdp")
    found = fit_search(resolved)["hardware.num_gpus"]
    n = found["fewest"]
    assert n is not None and n >= 2
    assert estimate(
        load(FULL, f"hardware.num_gpus={n}", "distributed.engine=fsdp"), advise=False
    ).fits
    assert not estimate(
        load(FULL, f"hardware.num_gpus={n - 1}", "distributed.engine=fsdp"), advise=False
    ).fits


# --------------------------------------------------------------------------- hooks


class AcmeHardware:
    @hookimpl
    def device_memory_budget(self, device):
        return MemoryBudget("acme-48", 48 * GiB) if device == "acme-48" else None


class ExtraBuffers:
    @hookimpl
    def extra_memory_terms(self, recipe, shape):
        return [
            MemoryTerm(
                name="acme kernel workspace",
                bytes=shape.hidden_size * 2**20,
                phases=("forward_backward", "later_steps"),
                category="other",
            )
        ]


def _registry_with(*plugins):
    manager = fresh_manager()
    for i, plugin in enumerate(plugins):
        assert manager.register(plugin, f"test-{i}")
    return Registry.from_manager(manager)


def test_device_memory_budget_hook_names_a_new_card():
    registry = _registry_with(AcmeHardware())
    result = estimate(load(QLORA, "hardware.gpu=acme-48", registry=registry))
    assert result.budget.name == "acme-48" and result.budget_bytes == 48 * GiB
    # the built-in catalog still answers what the plugin passes on
    assert estimate(load(QLORA, registry=registry)).budget.name == "A100-40GB"
    assert registry.manager.hook.device_memory_budget(device="acme-48").total_bytes == 48 * GiB


def test_extra_memory_terms_hook_adds_its_term_to_its_phases():
    plain = estimate(load(QLORA), advise=False)
    registry = _registry_with(ExtraBuffers())
    with_extra = estimate(load(QLORA, registry=registry), advise=False)
    term = next(t for t in with_extra.terms if t.name == "acme kernel workspace")
    assert term.bytes == 4096 * 2**20
    assert with_extra.phases["load"] == plain.phases["load"]
    assert with_extra.phases["forward_backward"] > plain.phases["forward_backward"] + term.bytes - 1


def test_memory_term_rejects_unknown_phases():
    with pytest.raises(ValueError, match="unknown phases"):
        MemoryTerm("x", 1, ("backward",))


class CutCrossEntropyHead:
    """A plugin's loss memory taking the place of the estimate's own loss terms, with a note."""

    @hookimpl
    def extra_memory_terms(self, recipe, shape):
        return [
            MemoryTerm(
                name="cut cross-entropy: one chunk of logits",
                bytes=2**20,
                phases=("forward_backward", "later_steps"),
                category="logits",
                replaces=REPLACED,
                notes=("the loss never holds the full logits.",),
            )
        ]


REPLACED = "gradients in flight"


def test_a_plugin_term_replaces_a_builtin_term_and_its_notes_are_shown():
    plain = estimate(load(QLORA), advise=False)
    replaced = next(t for t in plain.terms if t.name.startswith(REPLACED))
    registry = _registry_with(CutCrossEntropyHead())
    result = estimate(load(QLORA, registry=registry), advise=False)
    names = [t.name for t in result.terms]
    assert not any(n.startswith(REPLACED) for n in names)
    assert "cut cross-entropy: one chunk of logits" in names
    fb = "forward_backward"
    assert result.allocated[fb] == plain.allocated[fb] - replaced.bytes + 2**20
    # the note is printed, with the plugin that gave it (its `source` by default)
    assert "the loss never holds the full logits. (test-0)" in result.notes
    assert "the loss never holds the full logits. (test-0)" in result.render()


def test_a_term_that_replaces_nothing_is_the_plugins_error(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "REPLACED", "no such term")
    registry = _registry_with(CutCrossEntropyHead())
    with pytest.raises(PluginError, match=r"of test-0 replaces 'no such term'"):
        estimate(load(QLORA, registry=registry), advise=False)


def test_measure_predicts_with_the_plugins_terms():
    from sftkit.memory.estimator import extra_terms, shape_for
    from sftkit.memory.setup import setup_from_recipe
    from sftkit.training.measure import predicted_figures

    resolved = load(QLORA, registry=_registry_with(ExtraBuffers()))
    shape = shape_for(resolved)
    setup = setup_from_recipe(resolved, shape, on_gpu=True)
    terms = extra_terms(resolved, shape)
    assert [t.source for t in terms] == ["test-0"]
    plain = predicted_figures(setup, [], 80 * GiB)
    with_terms = predicted_figures(setup, terms, 80 * GiB)
    fb = "forward_backward"
    assert with_terms["allocated"][fb] == plain["allocated"][fb] + terms[0].bytes
    assert with_terms["allocated"]["load"] == plain["allocated"]["load"]
