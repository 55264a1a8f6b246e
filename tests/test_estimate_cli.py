"""`sftkit estimate-memory`: exit codes, table, JSON, --fit, --gpu, --model, --measure, and no
training stack imported."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sftkit.cli import run_cli

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
FULL = str(RECIPES / "r1_gsm8k_full.yaml")
QLORA = str(RECIPES / "r1_gsm8k_qlora.yaml")
HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "trl")


def run(capsys, *args):
    code = run_cli(["estimate-memory", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_full_finetune_is_rejected_with_exit_3(capsys):
    code, out, _ = run(capsys, FULL)
    assert code == 3
    assert "DOES NOT FIT" in out
    assert "first optimizer step: adamw state for 8.0 B parameters needs" in out
    assert "Cheapest changes that fit" in out and "strategy.name=qlora-nf4" in out
    assert "GiB = 2**30 bytes" in out


def test_qlora_fits_with_exit_0_and_says_how_much_is_left(capsys):
    code, out, _ = run(capsys, QLORA)
    assert code == 0
    assert "FITS" in out and "to spare" in out
    for phase in ("load", "fwd/bwd", "opt step", "later", "eval"):
        assert phase in out


def test_json_output(capsys):
    code, out, _ = run(capsys, QLORA, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["parameters"] == 8_030_261_248
    assert data["fits"] is True and data["peak_bytes"] <= data["budget_bytes"]
    assert data["peak_phase"] in data["phases"]
    assert {"name", "phase", "bytes"} <= set(data["terms"][0])


def test_json_of_a_rejection_still_exits_3(capsys):
    code, out, _ = run(capsys, FULL, "--json")
    assert code == 3
    data = json.loads(out)
    assert data["fits"] is False and data["first_failing_phase"] == "optimizer_step"
    assert data["suggestions"] and all(
        s["peak_bytes"] <= data["budget_bytes"] for s in data["suggestions"]
    )


def test_gpu_option_and_overrides(capsys):
    code, out, _ = run(capsys, FULL, "--gpu", "H200")
    assert code == 0 and "H200" in out
    code, out, _ = run(capsys, QLORA, "training.micro_batch_size=64", "--gpu", "24GB")
    assert code == 3
    code, out, _ = run(capsys, QLORA, "--gpu", "80GiB", "--json")
    assert json.loads(out)["budget_bytes"] == 80 * 2**30


def test_bad_input_exits_2(capsys, tmp_path):
    code, _, err = run(capsys, QLORA, "--gpu", "A1000")
    assert code == 2 and "unknown GPU 'A1000'" in err
    code, _, err = run(capsys, QLORA, "training.micro_batch_size=0")
    assert code == 2 and "micro_batch_size" in err
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "rwkv"}))
    code, _, err = run(capsys, QLORA, "--model", str(config))
    # not in the catalog, and the generic path prices attention decoders only
    assert code == 2 and "'rwkv'" in err


def test_model_option(capsys):
    code, out, _ = run(capsys, QLORA, "--model", "Qwen/Qwen2.5-7B", "--json")
    assert code == 0 and json.loads(out)["parameters"] == 7_615_616_512


def test_fit_option(capsys):
    code, out, _ = run(capsys, QLORA, "--fit")
    assert code == 0
    assert "training.micro_batch_size = " in out and "training.max_seq_length = " in out
    code, out, _ = run(capsys, QLORA, "--fit", "--json")
    found = json.loads(out)["fit_search"]
    assert found["training.micro_batch_size"]["value"] >= 4


def test_answers_fast_in_process():
    from sftkit.memory import estimate
    from sftkit.recipe.load import load_recipe
    from sftkit.testing import fresh_registry

    registry = fresh_registry()
    start = time.perf_counter()
    estimate(load_recipe(FULL, registry=registry))  # a rejection, advice included
    estimate(load_recipe(QLORA, registry=registry))
    assert time.perf_counter() - start < 1.0


PROBE = """
import sys
from sftkit.cli import run_cli
code = run_cli(sys.argv[1:])
print("HEAVY=" + ",".join(sorted(m for m in {heavy!r} if m in sys.modules)))
sys.exit(code)
"""


@pytest.mark.parametrize("extra", [[], ["--json"], ["--fit"]], ids=["table", "json", "fit"])
@pytest.mark.parametrize("recipe", [QLORA, FULL], ids=["qlora", "full"])
def test_estimate_memory_imports_no_training_stack(recipe, extra):
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), "estimate-memory", recipe, *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode in (0, 3), result.stderr
    assert result.stdout.rstrip().endswith("HEAVY="), result.stdout[-300:]


TINY = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 176,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 256,
    "max_position_embeddings": 256,
}


@pytest.mark.filterwarnings("ignore")
def test_measure_on_cpu_checks_the_static_terms(capsys, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    pytest.importorskip("bitsandbytes")
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        f"""
model: {{name_or_path: {tmp_path}, dtype: bfloat16, random_init: true}}
strategy: {{name: qlora-nf4, options: {{rank: 4}}}}
optimizer: {{name: paged-adamw-8bit}}
training: {{micro_batch_size: 2, max_seq_length: 16, gradient_checkpointing: false}}
hardware: {{gpu: cpu}}
"""
    )
    code, out, err = run(capsys, str(recipe), "--measure", "--json")
    assert code == 0, err
    measured = json.loads(out)["measured"]
    rows = {r["what"]: r for r in measured["rows"]}
    assert {
        "weights",
        "trainable",
        "gradients",
        "optimizer state",
        "saved activations (no checkpointing)",
    } <= set(rows)
    assert all(r["ok"] for r in measured["rows"]), measured
    assert rows["weights"]["predicted_bytes"] == rows["weights"]["measured_bytes"]
    code, out, _ = run(capsys, str(recipe), "--measure")
    assert code == 0 and "measured on cpu" in out and "MISMATCH" not in out
