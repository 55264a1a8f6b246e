"""Inputs that used to be accepted, hang, or fail late (issue 21, cases 10, 11, 12, 16):
a YAML alias bomb, values out of range, the data size a batch exceeds, a plugin turned off by
the environment, a damaged install, a prepared_dir that is a file, and the problems a run can
name before importing torch, all at once. Each is exit 2 naming the key or file and the fix."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sftkit.cli import run_cli
from sftkit.errors import RecipeError
from sftkit.recipe.load import load_recipe_text
from sftkit.testing import quickstart_recipe

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = str(quickstart_recipe())
TEXT = Path(QUICKSTART).read_text(encoding="utf-8")

# ------------------------------------------------------------------------- case 10

BOMB = """
model: {name_or_path: "builtin:tiny-llama"}
strategy: {name: full-sft}
optimizer:
  name: adamw
  options:
    betas: [*i, *i]
data: {format: {name: synthetic-arithmetic}}
"""


def alias_bomb(levels: int) -> str:
    """`levels` anchors, each nine aliases of the one before: 9**levels values."""
    lines = ["x-anchors:", "  - &a0 [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels):
        items = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"  - &a{level} [{items}]")
    return "\n".join(lines) + BOMB.replace("*i", f"*a{levels - 1}")


def test_a_yaml_alias_bomb_is_refused_at_once(registry):
    started = time.monotonic()
    with pytest.raises(RecipeError) as info:
        load_recipe_text(alias_bomb(9), registry=registry)  # 387,420,489 values
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "aliases (*name) expand it to more than 1,000,000 values" in message
    assert "line " in message


def test_a_large_value_is_cut_short_before_it_is_shown(registry):
    # 9**5 values: under the bound, so the schema sees it and shows it, briefly.
    with pytest.raises(RecipeError) as info:
        load_recipe_text(alias_bomb(5).replace("x-anchors", "description"), registry=registry)
    shown = [p for p in info.value.problems if p.path.startswith("optimizer.options.betas")]
    assert shown and all(len(p.message) < 200 for p in shown)


# ------------------------------------------------------------------------- case 11


@pytest.mark.parametrize(
    ("override", "key"),
    [
        (
            "optimizer.options.betas=[2,3]",
            {"optimizer.options.betas.0", "optimizer.options.betas.1"},
        ),
        ("optimizer.options.betas=[0.9,1.0]", {"optimizer.options.betas.1"}),
        ("optimizer.options.betas=[-0.1,0.9]", {"optimizer.options.betas.0"}),
        ("training.max_steps=1e23", {"training.max_steps"}),
        ("training.max_steps=100000000000", {"training.max_steps"}),
    ],
)
def test_values_out_of_range_fail_validation(registry, override, key):
    with pytest.raises(RecipeError) as info:
        load_recipe_text(TEXT, [override], registry=registry)
    assert {p.path for p in info.value.problems} == key
    load_recipe_text(TEXT, ["optimizer.options.betas=[0.0,0.999]"], registry=registry)


def test_a_micro_batch_larger_than_the_train_set_is_exit_2(tmp_path, capsys):
    code = run_cli(
        [
            "run",
            QUICKSTART,
            "training.micro_batch_size=1000000",
            "data.format.options.train_size=40",
            "data.format.options.dev_size=4",
            "evaluation.before_training=false",
            "--output-dir",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert "training.micro_batch_size: 1000000 is larger than the train set" in err
    assert "36 rows" in err and "at most 36" in err


# ------------------------------------------------------------------------- case 12


def test_unknown_optimizer_names_the_variable_that_disabled_it(monkeypatch, capsys):
    monkeypatch.setenv("SFTKIT_DISABLE_PLUGINS", "builtin.optimizers")
    assert run_cli(["validate", QUICKSTART]) == 2
    err = capsys.readouterr().err
    assert "unknown optimizer 'adamw'" in err
    assert "SFTKIT_DISABLE_PLUGINS=builtin.optimizers" in err


def test_a_malformed_record_names_the_package(tmp_path):
    dist = tmp_path / "site" / "brokenpkg-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenpkg\nVersion: 1.0\n")
    (dist / "RECORD").write_text("brokenpkg/__init__.py,sha256=abc,12,a fourth field\n")
    # What TRL does at import: read every installed package's RECORD.
    probe = (
        "import sys\n"
        "from sftkit.cli import run_cli\n"
        "import sftkit.cli.core as core\n"
        "def validate(*a, **k):\n"
        "    import importlib.metadata; importlib.metadata.packages_distributions()\n"
        "core.validate.callback = validate\n"
        "sys.exit(run_cli(sys.argv[1:]))\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path / "site")]),
        "SFTKIT_DISABLE_PLUGIN_AUTOLOAD": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", probe, "validate", QUICKSTART],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "brokenpkg has a malformed RECORD" in result.stderr
    assert "pip install --force-reinstall --no-deps brokenpkg" in result.stderr


def test_a_plugin_failing_on_a_malformed_record_names_the_package(tmp_path):
    site = tmp_path / "site"
    for name, record in (("brokenpkg", "x.py,sha256=abc,12,a fourth field\n"), ("myplug", "")):
        dist = site / f"{name}-1.0.dist-info"
        dist.mkdir(parents=True)
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (dist / "RECORD").write_text(record)
    (site / "myplug-1.0.dist-info" / "entry_points.txt").write_text("[sftkit]\nmyplug = myplug\n")
    (site / "myplug.py").write_text(  # what importing TRL does
        "import importlib.metadata\nimportlib.metadata.packages_distributions()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(site)])}
    env.pop("SFTKIT_DISABLE_PLUGIN_AUTOLOAD", None)
    result = subprocess.run(
        [sys.executable, "-c", "from sftkit.cli import main; main()", "plugins"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    said = " ".join((result.stdout + result.stderr).split())
    assert "'myplug'" in said and "brokenpkg has a malformed RECORD" in said, said


def test_a_prepared_dir_that_is_a_file_says_so(tmp_path, capsys):
    source = tmp_path / "train.jsonl"
    source.write_text('{"question": "q", "answer": "a\\n#### 1"}\n')
    code = run_cli(["prepare-data", QUICKSTART, f"data.prepared_dir={source}"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"data.prepared_dir {source} is a file, not a directory" in err
    assert "File exists" not in err


# ------------------------------------------------------------------------- case 16

PROBE = """
import sys
from sftkit.cli import run_cli
code = run_cli(sys.argv[1:])
print("HEAVY=" + ",".join(m for m in ("torch", "transformers") if m in sys.modules))
sys.exit(code)
"""


def light_cli(*args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SFTKIT_DISABLE_PLUGIN_AUTOLOAD": "1",
        **environ,
    }
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_missing_data_file_is_found_before_torch_is_imported(tmp_path, command):
    missing = tmp_path / "no" / "train.jsonl"
    args = [command, QUICKSTART, "data.format.name=gsm8k", f"data.format.options.source={missing}"]
    if command == "run":
        args += ["--output-dir", str(tmp_path / "run")]
    result = light_cli(*args)
    assert result.returncode == 2, result.stderr
    assert f"data.format.options.source: '{missing}' does not exist" in result.stderr
    assert "HEAVY=\n" in result.stdout
    assert not (tmp_path / "run").exists()


def test_the_mission_recipe_without_a_gpu_says_everything_at_once(tmp_path):
    result = light_cli(
        "run",
        str(ROOT / "recipes" / "r1_gsm8k_qlora.yaml"),
        "--output-dir",
        str(tmp_path / "run"),
        CUDA_VISIBLE_DEVICES="",
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf"),
    )
    assert result.returncode == 2, result.stderr
    err = result.stderr
    assert "4 problems before starting" in err
    assert "no CUDA device" in err and "hardware.gpu=cpu" in err
    assert "training.liger_kernels=false" in err
    assert "deepseek-ai/DeepSeek-R1-Distill-Llama-8B' is a hub model that is not in the" in err
    assert "'openai/gsm8k' is a hub dataset" in err
    assert err.count("fix: ") == 4
    assert "HEAVY=\n" in result.stdout


def test_a_cached_hub_model_passes_offline(tmp_path, registry, monkeypatch):
    from huggingface_hub import constants

    from sftkit.preflight import findings

    hub = tmp_path / "hub"
    resolved = load_recipe_text(TEXT, ["model.name_or_path=org/model"], registry=registry)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert [f.what.split(" ")[0] for f in findings(resolved, machine=True)] == [
        "model.name_or_path"
    ]
    snapshot = hub / "models--org--model" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    assert findings(resolved, machine=True) == []
