"""grpo with vLLM colocated on the training GPU (``use_vllm``): the options reach TRL's
config, what stops it is said before anything loads, and the estimate prices vLLM's share of
the GPU in the phases that hold it and refuses a share that cannot start vLLM.

vLLM itself is not installed here (it needs CUDA); its run is a GPU check (issue 26)."""

from __future__ import annotations

import importlib.util

import pytest

from sftkit.memory import colocated
from sftkit.memory.budget import resolve_budget
from sftkit.memory.estimator import compute, shape_for
from sftkit.memory.setup import setup_from_recipe
from sftkit.memory.terms import PHASES
from sftkit.testing import invoke_cli, tiny_recipe

GRPO = (
    "training.objective=grpo",
    "training.objective_options.num_generations=4",
    "training.objective_options.max_completion_length=12",
    "training.objective_options.use_vllm=true",
)
ON_GPU = "hardware.gpu=A100-40GB"
GIB = 2**30


def _engine(estimate):
    return next((t for t in estimate.terms if t.name.startswith("vLLM (colocate)")), None)


@pytest.mark.parametrize("sleeps", [False, True])
def test_the_share_is_priced_where_vllm_holds_it(sleeps):
    resolved = tiny_recipe(
        *GRPO, ON_GPU, "strategy.name=lora",
        f"training.objective_options.vllm_enable_sleep_mode={str(sleeps).lower()}",
        "training.objective_options.vllm_gpu_memory_utilization=0.25",
    )  # fmt: skip
    estimate = compute(resolved)
    term = _engine(estimate)
    assert term is not None and term.bytes == int(0.25 * 40 * GIB)
    held = {"rollout"} if sleeps else set(PHASES) - {"load"}
    assert set(term.phases) == held
    # generation happens in vLLM's share: the model's own KV cache is not priced beside it
    assert not any(t.name.startswith("rollout: KV cache") for t in estimate.terms)
    without = compute(tiny_recipe(*GRPO[:-1], ON_GPU, "strategy.name=lora"))
    assert any(t.name.startswith("rollout: KV cache") for t in without.terms)
    assert _engine(without) is None


def test_a_share_too_small_to_start_vllm_cannot_run_and_names_the_share_that_can():
    resolved = tiny_recipe(*GRPO, ON_GPU, "strategy.name=lora")
    shape = shape_for(resolved)
    setup = setup_from_recipe(resolved, shape, on_gpu=True)
    budget = resolve_budget("A100-40GB", None)
    need = colocated.served_weight_bytes(setup) + colocated.kv_bytes_per_sequence(setup)
    # a share just below what vLLM needs at start, then the lowest one the message names
    small = need / budget.total_bytes * 0.9
    tight = tiny_recipe(
        *GRPO, ON_GPU, "strategy.name=lora",
        f"training.objective_options.vllm_gpu_memory_utilization={small}",
    )  # fmt: skip
    estimate = compute(tight)
    assert not estimate.fits and "could start it" in estimate.cannot_run
    lowest = float(estimate.cannot_run.split("at least ")[1].split(" ")[0])
    enough = tiny_recipe(
        *GRPO, ON_GPU, "strategy.name=lora",
        f"training.objective_options.vllm_gpu_memory_utilization={lowest}",
    )  # fmt: skip
    assert compute(enough).cannot_run == ""


def test_the_cli_says_cannot_run_with_exit_3(tmp_path):
    result = invoke_cli(
        "estimate-memory", "recipes/r1_gsm8k_grpo.yaml",
        "training.objective_options.use_vllm=true",
        "training.objective_options.vllm_gpu_memory_utilization=0.1",
    )  # fmt: skip
    assert result.exit_code == 3, result.stderr
    assert "CANNOT RUN" in result.stdout and "vllm_gpu_memory_utilization" in result.stdout


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("hardware.gpu=cpu", "CUDA GPU"),
        ("strategy.name=lora-8bit", "8-bit"),
    ],
)
def test_what_stops_vllm_is_said_at_validation(override, message):
    extra = () if override.startswith("hardware") else (ON_GPU,)
    result = invoke_cli("validate", "quickstart", *GRPO, *extra, override)
    assert result.exit_code == 2, result.stderr
    assert "training.objective_options.use_vllm" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr


def test_the_config_bounds_vllms_context_to_prompt_and_completion(monkeypatch):
    pytest.importorskip("trl")
    from sftkit.training import reinforcement

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "vllm" else real(name, *a),
    )
    config = reinforcement.SftkitGrpoConfig(
        output_dir="unused", use_vllm=True, max_length=512, max_completion_length=64,
        num_generations=4, per_device_train_batch_size=4, use_cpu=True,
    )  # fmt: skip
    assert config.vllm_mode == "colocate"
    assert config.vllm_max_model_length == 512 + 64


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_without_vllm_installed_the_run_says_what_to_install():
    pytest.importorskip("trl")
    from sftkit.errors import MissingDependencyError
    from sftkit.training import reinforcement

    with pytest.raises(MissingDependencyError) as caught:
        reinforcement.SftkitGrpoConfig(
            output_dir="unused", use_vllm=True, max_length=64, num_generations=4,
            per_device_train_batch_size=4, use_cpu=True,
        )  # fmt: skip
    assert "vllm" in caught.value.message and "use_vllm" in caught.value.message


@pytest.mark.parametrize("strategy", ["lora", "qlora-nf4"])
def test_vllms_copy_of_the_weights_is_the_checkpoint_loaded_as_the_base(tmp_path, strategy):
    """The bytes of the tiny base loaded from its checkpoint the way vLLM gets it (TRL hands
    it a 4-bit base as bitsandbytes; plain weights stay in the checkpoint's dtype, with no
    k-bit training preparation) equal the estimate's copy. vLLM's own layout of the same
    quantization is taken to match bitsandbytes' (its bitsandbytes loader uses its kernels)."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from sftkit.testing import tiny_model
    from sftkit.training.measure import _storages, model_tensors

    resolved = tiny_recipe(*GRPO[:-1], f"output_dir={tmp_path}", f"strategy.name={strategy}")
    setup = setup_from_recipe(resolved, shape_for(resolved), on_gpu=False)
    tiny_model(tiny_recipe(f"output_dir={tmp_path}", "strategy.name=lora"), tmp_path / "m")
    kwargs = {}
    if strategy == "qlora-nf4":
        options = resolved.strategy.options
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=options.quant_type,
            bnb_4bit_use_double_quant=options.double_quant,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    dtype = getattr(torch, resolved.recipe.model.dtype)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m" / "base", dtype=dtype, **kwargs)
    # weights and quantization state; vLLM builds its own rotary tables (not priced)
    buffers = sum(b.untyped_storage().nbytes() for b in model.buffers())
    held = sum(_storages(model_tensors(model)).values()) - buffers
    assert held == colocated.served_weight_bytes(setup)
