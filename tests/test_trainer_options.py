"""What people expect from the trainer: NEFTune, a DeepSpeed JSON or accelerate config of
their own for `sftkit launch`, and `sftkit recipes cp NAME DEST`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from tiny_models import config_dir, recipe_text

from sftkit.cli import run_cli
from sftkit.distributed.configs import deepspeed_overrides, merge_accelerate_config
from sftkit.errors import LaunchError
from sftkit.recipe.load import bundled_recipes_dir

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
DEEPSPEED = {
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "bf16": {"enabled": "auto"},
    "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"}},
}


# --------------------------------------------------------------------------- NEFTune


@pytest.mark.slow
def test_neftune_noise_reaches_the_trainer(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("trl")
    from transformers import TrainerCallback

    from sftkit.recipe.load import load_recipe_text
    from sftkit.testing import fresh_registry
    from sftkit.training.runner import run_recipe

    text = recipe_text(config_dir(tmp_path / "model"), tmp_path / "run", max_steps=1)
    resolved = load_recipe_text(
        text, ["training.neftune_noise_alpha=5"], registry=fresh_registry(), source="t.yaml"
    )
    seen: dict[str, Any] = {}

    class Probe(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            embedding = model.get_input_embeddings()
            seen["alpha"] = getattr(embedding, "neftune_noise_alpha", None)
            embedding.train()
            ids = torch.tensor([[1, 5, 6, 7]])
            seen["noisy"] = not torch.equal(embedding(ids), embedding.weight[ids])

    result = run_recipe(resolved, callbacks=[Probe()])
    assert result.status == "completed"
    assert seen == {"alpha": 5.0, "noisy": True}  # transformers' NEFTune hook was on


# --------------------------------------------------------------------------- launch configs


def test_a_deepspeed_json_sets_the_recipe_it_launches(tmp_path, capsys):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(DEEPSPEED))
    recipe = str(RECIPES / "r1_gsm8k_full.yaml")
    args = ["launch", recipe, "hardware.gpu=H100-80GB", "--nproc", "4", "--dry-run"]
    assert run_cli([*args, "--deepspeed-config", str(path)]) == 0
    out = capsys.readouterr().out
    # the estimate and recipe.yaml state what the JSON does; the JSON itself is written as is
    assert "distributed.zero_stage=3 distributed.cpu_offload=true" in out
    assert "DeepSpeed ZeRO-3, optimizer offloaded" in out
    assert json.dumps(DEEPSPEED) in out
    assert run_cli([*args, "distributed.engine=fsdp", "--deepspeed-config", str(path)]) == 2
    assert "the recipe's engine is 'fsdp'" in capsys.readouterr().err
    path.write_text(json.dumps({"zero_optimization": {"stage": 1}}))
    assert run_cli([*args, "--deepspeed-config", str(path)]) == 2
    assert "ZeRO-2 or ZeRO-3" in capsys.readouterr().err


def test_deepspeed_overrides_follow_offloading():
    stage2 = deepspeed_overrides({"zero_optimization": {"stage": 2}}, source="x")
    assert stage2 == [
        "distributed.engine=deepspeed",
        "distributed.zero_stage=2",
        "distributed.cpu_offload=false",
    ]
    both = {"stage": 3, "offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "cpu"}}
    assert deepspeed_overrides({"zero_optimization": both}, source="x")[-1] == (
        "distributed.deepspeed.offload_params=true"
    )


def test_an_accelerate_config_keeps_its_settings_and_takes_the_engine_from_the_recipe():
    generated = {
        "distributed_type": "MULTI_GPU",
        "mixed_precision": "bf16",
        "num_processes": 4,
        "main_process_port": 1234,
        "use_cpu": False,
    }
    brought = {
        "num_processes": 64,
        "mixed_precision": "bf16",
        "dynamo_config": {"dynamo_backend": "INDUCTOR"},
        "gpu_ids": "0,1,2,3",
    }
    merged = merge_accelerate_config(brought, generated, source="mine.yaml")
    assert merged["num_processes"] == 4 and merged["main_process_port"] == 1234
    assert merged["dynamo_config"] == {"dynamo_backend": "INDUCTOR"}
    assert merged["gpu_ids"] == "0,1,2,3"
    with pytest.raises(LaunchError, match=r"mine\.yaml: mixed_precision is 'fp16'"):
        merge_accelerate_config({"mixed_precision": "fp16"}, generated, source="mine.yaml")
    with pytest.raises(LaunchError, match="fsdp_config is set"):
        merge_accelerate_config({"fsdp_config": {}}, generated, source="mine.yaml")


@pytest.mark.slow
def test_launch_with_an_accelerate_config_of_ones_own(tmp_path):
    pytest.importorskip("trl")
    pytest.importorskip("accelerate")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(config_dir(tmp_path / "model"), tmp_path / "run", max_steps=2))
    mine = tmp_path / "accelerate.yaml"
    mine.write_text(yaml.safe_dump({"compute_environment": "LOCAL_MACHINE", "debug": True}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", "from sftkit.cli import main; main()", "launch", str(recipe)]
    done = subprocess.run(
        [*command, "--nproc", "1", "--accelerate-config", str(mine)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    written = yaml.safe_load(
        (tmp_path / "run" / "distributed" / "accelerate_config.yaml").read_text()
    )
    assert written["debug"] is True and written["num_processes"] == 1
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "completed"


# --------------------------------------------------------------------------- recipes cp


def test_recipes_cp_copies_a_bundled_recipe_to_start_from(tmp_path, capsys):
    source = bundled_recipes_dir() / "quickstart.yaml"
    assert run_cli(["recipes", "cp", "quickstart", str(tmp_path)]) == 0
    copied = tmp_path / "quickstart.yaml"
    assert copied.read_bytes() == source.read_bytes()  # comments and all
    assert f"sftkit run {copied}" in capsys.readouterr().out
    assert run_cli(["recipes", "cp", "quickstart.yaml", str(copied)]) == 2
    assert "does not overwrite" in capsys.readouterr().err
    copied.write_text("x")
    assert run_cli(["recipes", "cp", "quickstart", str(copied), "--force"]) == 0
    assert copied.read_bytes() == source.read_bytes()
    assert run_cli(["recipes", "cp", "quickstrat", str(tmp_path / "q.yaml")]) == 2
    assert "did you mean 'quickstart'" in capsys.readouterr().err
    assert run_cli(["recipes"]) == 0 and "quickstart" in capsys.readouterr().out
