"""Invariants of the estimator, over random recipes (hypothesis): memory grows with batch,
sequence and rank; checkpointing never increases activations; more GPUs never increase the
per-GPU figure."""

from __future__ import annotations

import copy
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sftkit.errors import RecipeError
from sftkit.memory.estimator import compute, shape_for
from sftkit.memory.moments import activation_peak_bytes
from sftkit.memory.setup import setup_from_recipe
from sftkit.recipe.load import load_recipe, validate_recipe_data
from sftkit.testing import fresh_registry

REGISTRY = fresh_registry()
BASE = load_recipe(
    str(Path(__file__).resolve().parent.parent / "recipes" / "r1_gsm8k_qlora.yaml"),
    registry=REGISTRY,
).raw
MODELS = [
    "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
    "meta-llama/Llama-3.2-1B",
    "Qwen/Qwen2.5-0.5B",
    "google/gemma-2-9b",
    "microsoft/Phi-3-mini-4k-instruct",
    "Qwen/Qwen3-8B",
]
STRATEGIES = ["full-sft", "lora", "qlora-nf4", "lora-8bit"]
OPTIMIZERS = ["adamw", "adamw-8bit", "paged-adamw-8bit", "paged-adamw-32bit", "adafactor", "sgd"]
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def recipes(draw):
    strategy = draw(st.sampled_from(STRATEGIES))
    data = copy.deepcopy(BASE)
    data["model"] = {
        "name_or_path": draw(st.sampled_from(MODELS)),
        "dtype": draw(st.sampled_from(["bfloat16", "float32"])),
        "attn_implementation": draw(st.sampled_from(["sdpa", "eager", "flash_attention_2"])),
    }
    data["strategy"] = {
        "name": strategy,
        "options": {} if strategy == "full-sft" else {"rank": draw(st.sampled_from([8, 16, 64]))},
    }
    data["optimizer"] = {"name": draw(st.sampled_from(OPTIMIZERS))}
    data["training"] = {
        **data["training"],
        "micro_batch_size": draw(st.integers(1, 16)),
        "max_seq_length": draw(st.integers(64, 4096)),
        "gradient_accumulation_steps": draw(st.sampled_from([1, 4])),
        "gradient_checkpointing": draw(st.booleans()),
        "precision": draw(st.sampled_from(["bf16", "fp32"])),
    }
    data["hardware"] = {"gpu": draw(st.sampled_from(["A100-80GB", "H200", "cpu"])), "num_gpus": 1}
    return data


def peak(data, **changes):
    data = copy.deepcopy(data)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        data.setdefault(section, {})[key] = value
    try:
        resolved = validate_recipe_data(data, registry=REGISTRY)
    except RecipeError:  # a combination a validation rule forbids: not a counterexample
        assume(False)
        raise
    return compute(resolved)


@SETTINGS
@given(recipes(), st.integers(1, 8))
def test_memory_grows_with_micro_batch(data, more):
    b = data["training"]["micro_batch_size"]
    assert peak(data, training__micro_batch_size=b + more).peak_bytes >= peak(data).peak_bytes


@SETTINGS
@given(recipes(), st.integers(1, 2048))
def test_memory_grows_with_sequence_length(data, more):
    s = data["training"]["max_seq_length"]
    assert peak(data, training__max_seq_length=s + more).peak_bytes >= peak(data).peak_bytes


@SETTINGS
@given(recipes(), st.integers(1, 192))
def test_memory_grows_with_lora_rank(data, more):
    # Ranks from 8 keep every LoRA matrix above bitsandbytes' 4096-element 8-bit threshold
    # (below it the state falls back to fp32, which can make a larger rank cost less).
    if data["strategy"]["name"] == "full-sft":
        return
    rank = data["strategy"]["options"]["rank"]
    small, large = peak(data), peak(data, strategy__options={"rank": rank + more})
    # total memory (paged optimizer state included: a larger rank may page more of it)
    for phase in small.phases:
        assert large.phases[phase] + large.paged[phase] >= small.phases[phase] + small.paged[phase]


@SETTINGS
@given(recipes())
def test_checkpointing_never_increases_activations(data):
    on = copy.deepcopy(data)
    on["training"]["gradient_checkpointing"] = True
    off = copy.deepcopy(data)
    off["training"]["gradient_checkpointing"] = False
    a, b = (validate_recipe_data(d, registry=REGISTRY) for d in (on, off))
    setup_on = setup_from_recipe(a, shape_for(a), on_gpu=True)
    setup_off = setup_from_recipe(b, shape_for(b), on_gpu=True)
    assert activation_peak_bytes(setup_on) <= activation_peak_bytes(setup_off)


@SETTINGS
@given(
    recipes(),
    st.sampled_from([("fsdp", None), ("deepspeed", 2), ("deepspeed", 3), ("ddp", None)]),
    st.integers(2, 15),
)
def test_more_gpus_never_increase_the_per_gpu_figure(data, engine, n):
    data = copy.deepcopy(data)
    data["distributed"] = {"engine": engine[0], **({"zero_stage": engine[1]} if engine[1] else {})}
    data["hardware"]["gpu"] = "H200"
    fewer = peak(data, hardware__num_gpus=n)
    more = peak(data, hardware__num_gpus=n + 1)
    for phase in fewer.phases:
        assert more.phases[phase] <= fewer.phases[phase]
