"""What the estimator audit found (issue 23, item 7), each fixed and held here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sftkit.errors import RecipeError
from sftkit.memory.estimator import estimate, shape_for
from sftkit.memory.layout import layout
from sftkit.memory.moments import _moments
from sftkit.memory.setup import setup_from_recipe, sharding
from sftkit.memory.terms import gib
from sftkit.recipe.load import load_recipe
from sftkit.testing import fresh_registry

GiB = 2**30
LOWMEM = "recipes/r1_gsm8k_qlora_lowmem.yaml"


def _load(recipe, *overrides):
    return load_recipe(recipe, list(overrides), registry=fresh_registry())


def _term(result, name, phase="load"):
    return sum(t.bytes for t in result.terms if t.name == name and phase in t.phases)


def test_a_tensor_never_cast_or_quantized_is_not_staged_while_loading():
    # bf16 table and lm_head over a bf16 checkpoint: loaded in place; the largest staged
    # tensor is an MLP weight on its way to NF4 (14,336 x 4,096 in bf16)
    lowmem = estimate(_load(LOWMEM), advise=False)
    assert _term(lowmem, "one tensor staged while loading") == 14336 * 4096 * 2
    # PEFT's fp32 upcast replaces the bf16 lm_head: that one is staged
    upcast = estimate(_load("recipes/r1_gsm8k_qlora.yaml"), advise=False)
    assert _term(upcast, "one tensor staged while loading") == 128256 * 4096 * 2


def test_paged_state_on_the_cpu_is_host_memory_and_spills_nowhere():
    resolved = _load("recipes/r1_gsm8k_full.yaml", "optimizer.name=paged-adamw-32bit")
    result = estimate(resolved, gpu="cpu", advise=False)
    paged = result.paged["later_steps"]
    assert paged > 50 * GiB
    assert result.phases["later_steps"] >= paged  # in the total
    assert result.paged_spill_bytes == 0
    assert "spills to host" not in result.render()


def test_a_cuda_only_loss_head_never_fits_the_cpu():
    result = estimate(_load("recipes/quickstart.yaml", "training.loss=liger"), advise=False)
    assert not result.fits and "needs a CUDA GPU" in result.cannot_run
    assert "CANNOT RUN on the cpu" in result.render() and "FITS" not in result.render()


def test_optimizer_in_backward_steps_inside_the_layers_backward_not_at_its_start():
    resolved = _load(LOWMEM)
    setup = setup_from_recipe(resolved, shape_for(resolved), on_gpu=True)
    from sftkit.memory.terms import Part

    temps = (Part("adamw step temporaries", 123 * 2**20, "optimizer"),)
    start, top, bottom, _ = _moments(
        setup, layout(setup), 0, "", sharding(setup), False, step_temporaries=temps
    )
    assert temps[0] not in start and temps[0] in top and temps[0] in bottom
    dequant = [p for p in start if p.name.startswith("dequantized weight")]
    assert not dequant  # the loss head's backward dequantizes nothing
    assert any(p.name.startswith("dequantized weight") for p in top)


def test_checkpointed_layers_bring_back_one_layers_autocast_copies():
    from sftkit.memory import activations as act

    resolved = _load("recipes/r1_gsm8k_qlora.yaml", "strategy.options.adapter_dtype=float32")
    setup = setup_from_recipe(resolved, shape_for(resolved), on_gpu=True)
    tensors = layout(setup)
    at_start, in_layer = act.autocast_copies_in_backward(setup, tensors)
    whole = act.autocast_weight_copy_bytes(setup, tensors)
    per_layer = (whole - at_start) // setup.shape.num_layers
    assert in_layer == at_start + per_layer and per_layer > 0


def test_fused_adamw_is_priced_without_foreach_temporaries():
    fused = setup_from_recipe(r := _load("recipes/r1_gsm8k_full.yaml"), shape_for(r), on_gpu=True)
    assert fused.optimizer.state_for(fused.optimizer_options).temporaries == 0
    foreach = _load("recipes/r1_gsm8k_full.yaml", "optimizer.options.fused=false")
    state = foreach.optimizer.spec.state_for(foreach.optimizer.options)
    assert state.temporaries == 1


def test_fused_adamw_is_what_the_trainer_builds():
    torch = pytest.importorskip("torch")
    from sftkit.optim.build import build_torch_adamw

    resolved = _load("recipes/quickstart.yaml")
    groups = [{"params": [torch.nn.Parameter(torch.zeros(4))]}]
    assert build_torch_adamw(groups, resolved.optimizer.options).defaults["fused"]


def test_advice_keeps_the_three_cheapest_of_each_kind():
    result = estimate(_load("recipes/r1_gsm8k_full.yaml"))
    strategies = [s for s in result.suggestions if s.change.startswith("strategy ")]
    assert "strategy qlora-nf4" in [s.change for s in strategies]
    peaks = [s.peak_bytes for s in strategies]
    assert peaks == sorted(peaks)


def test_options_of_a_component_that_takes_none():
    with pytest.raises(RecipeError) as info:
        _load("recipes/r1_gsm8k_full.yaml", "strategy.options.upcast_non_quantized=false")
    text = str(info.value)
    assert "strategy 'full-sft' takes no options" in text and "expected one of: ." not in text


def test_a_section_check_does_not_dump_the_section():
    with pytest.raises(RecipeError) as info:
        _load(
            "recipes/r1_gsm8k_full.yaml",
            "training.optimizer_in_backward=true",
            "training.gradient_accumulation_steps=1",
        )
    text = str(info.value)
    assert "set max_grad_norm to null" in text and "found {" not in text


def test_the_low_memory_headers_host_figure_is_the_estimates():
    header = Path(LOWMEM).read_text()
    stated = re.search(r"Host RAM it needs besides the usual: ([\d.]+) GiB", header)
    host = max(estimate(_load(LOWMEM), advise=False).host.values())
    assert stated and f"{stated.group(1)} GiB" == gib(host)


def test_the_live_tensors_of_a_checkpointed_qlora_step_match_the_activation_peak(tmp_path):
    """The per-token slope of a checkpointed QLoRA step with the full-logits loss (the HF +
    FlashAttention 2 baseline's shape): every tensor alive at any moment of forward and
    backward on CPU peaks where the estimator's activation moments do, within 1%."""
    pytest.importorskip("torch")
    pytest.importorskip("bitsandbytes")
    from live_tensors import live_peak_and_prediction

    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
              "intermediate_size": 176, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 8192, "tie_word_embeddings": False,
              "max_position_embeddings": 1024}  # fmt: skip
    live, predicted = live_peak_and_prediction(tmp_path, config, "max_seq_length: 256, loss: full")
    assert live == pytest.approx(predicted, rel=0.01)
