"""``training.trainer_args``: TRL's SFTConfig options passed through, checked without torch,
names sftkit owns refused, and a resume that changes them refused like any recipe key."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sftkit.errors import RecipeError, RunDirectoryError
from sftkit.recipe import trainer_args
from sftkit.recipe.load import load_recipe_text
from sftkit.runpaths import RunPaths
from sftkit.testing import quickstart_recipe

TINY = """
model: {name_or_path: "builtin:tiny-llama", random_init: true}
strategy: {name: full-sft}
optimizer: {name: adamw}
training: {max_steps: 20, eval_steps: 5, early_stopping: {patience: 2}}
hardware: {gpu: cpu}
output_dir: OUT
"""


def tiny(tmp_path: Path, registry, *overrides: str):
    text = TINY.replace("OUT", str(tmp_path / "run"))
    return load_recipe_text(text, list(overrides), registry=registry, source="t.yaml")


def test_the_field_list_is_the_installed_trls():
    """Equal on the TRL the list names; another TRL (the minimums, a newer release) runs on
    the fallback, and this says to regenerate the list."""
    pytest.importorskip("trl")
    listed = json.loads(trainer_args.FIELDS_FILE.read_text())
    if listed["trl"] != trainer_args.installed_trl():
        pytest.skip(
            f"trl_fields.json lists TRL {listed['trl']}, TRL {trainer_args.installed_trl()} is "
            "installed: `python -m sftkit.recipe.trainer_args` regenerates it"
        )
    assert listed == trainer_args.generate()
    assert set(trainer_args.OWNED) <= set(listed["fields"])  # no stale owned name


PROBE = """
import sys
from sftkit.cli import run_cli
code = run_cli(sys.argv[1:])
print("TORCH=" + str("torch" in sys.modules))
sys.exit(code)
"""


def validate(*overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE, "validate", str(quickstart_recipe()), *overrides],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("override", "code", "says"),
    [
        ("dataloader_num_workers=2", 0, "dataloader_num_workers=2"),
        ("dataloader_num_workerz=2", 2, "Did you mean 'dataloader_num_workers'?"),
        ("learning_rate=1e-4", 2, "set optimizer.options.lr instead"),
        ("max_length=64", 2, "set training.max_seq_length instead"),
    ],
)
def test_validate_checks_names_without_torch(override, code, says):
    done = validate(f"training.trainer_args.{override}")
    assert done.returncode == code, done.stdout + done.stderr
    assert says in done.stdout + done.stderr
    assert "TORCH=False" in done.stdout
    assert "Traceback" not in done.stderr


def test_another_trl_version_passes_unknown_names_on_with_a_note(registry, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_args, "installed_trl", lambda: "99.0")
    resolved = tiny(tmp_path, registry, "training.trainer_args.brand_new_option=1")
    assert any("brand_new_option" in n and "TRL 99.0" in n for n in resolved.notes)
    with pytest.raises(RecipeError, match=r"optimizer\.options\.lr"):  # owned names still refused
        tiny(tmp_path, registry, "training.trainer_args.learning_rate=1")


def test_sftkit_sets_no_trl_option_it_does_not_own(registry, tmp_path):
    """Every name sftkit puts in SFTConfig is in OWNED (so trainer_args cannot change what
    the estimate priced), apart from the defaults trainer_args may replace."""
    pytest.importorskip("trl")
    from sftkit.training.context import RunContext
    from sftkit.training.stages.train import trainer_config_kwargs

    resolved = tiny(tmp_path, registry, "training.trainer_args.dataloader_num_workers=3")
    kwargs = trainer_config_kwargs(RunContext(resolved, RunPaths(tmp_path / "run"), "cpu"))
    replaceable = {"dataloader_num_workers", "dataset_num_proc", "loss_type"}
    assert set(kwargs) - replaceable <= set(trainer_args.OWNED)
    assert kwargs["dataloader_num_workers"] == 3  # the recipe's wins over the default
    from trl import SFTConfig

    names = {f.name for f in dataclasses.fields(SFTConfig)}
    assert set(kwargs) <= names


def test_the_machine_sets_data_workers():
    from sftkit.devices import data_workers

    assert data_workers("cpu", 1) == {"dataloader_num_workers": 0, "dataset_num_proc": None}
    gpu = data_workers("cuda", 1)
    assert 0 <= gpu["dataloader_num_workers"] <= 4
    many = data_workers("cuda", 10_000)  # more processes than cores: all in the main one
    assert many == {"dataloader_num_workers": 0, "dataset_num_proc": None}


def test_a_resume_compares_trainer_args(registry, tmp_path):
    from sftkit.training.runfiles import check_run_dir, write_recipe

    paths = RunPaths(tmp_path / "run")
    paths.root.mkdir()
    write_recipe(paths, tiny(tmp_path, registry))
    paths.metrics.write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n")  # it has trained
    assert check_run_dir(paths, tiny(tmp_path, registry), resume=True) == []
    added = tiny(tmp_path, registry, "training.trainer_args.tf32=true")
    with pytest.raises(RunDirectoryError, match=r"training\.trainer_args"):
        check_run_dir(paths, added, resume=True)
    write_recipe(paths, added)
    assert check_run_dir(paths, added, resume=True) == []
    with pytest.raises(RunDirectoryError, match=r"training\.trainer_args"):
        check_run_dir(paths, tiny(tmp_path, registry), resume=True)


@pytest.mark.slow
def test_a_quickstart_run_trains_with_trls_dft_loss(tmp_path):
    pytest.importorskip("trl")
    from sftkit.testing import quick_run

    run = quick_run(tmp_path, "training.trainer_args.loss_type=dft")
    losses = [
        json.loads(line)["loss"]
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if '"loss"' in line
    ]
    assert len(losses) == 3 and all(v == v for v in losses)  # three finite logged steps
    saved = (run / "recipe.yaml").read_text()
    assert "loss_type: dft" in saved


@pytest.mark.slow
@pytest.mark.parametrize("head", ["auto", "chunked", "full"])
def test_trls_loss_type_applies_under_every_loss_head(tmp_path, head):
    """A sftkit loss head hands TRL per-token log-probabilities (its fused-head interface),
    and TRL's compute_loss applies loss_type to them: DFT weighs each token's NLL by its
    probability, far below the plain NLL of the random model's first step."""
    pytest.importorskip("trl")
    from sftkit.testing import quick_run

    def first_loss(*overrides: str) -> float:
        run = quick_run(tmp_path, f"training.loss={head}", *overrides)
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return next(row["loss"] for row in rows if "loss" in row)

    nll, dft = first_loss(), first_loss("training.trainer_args.loss_type=dft")
    assert dft < 0.1 * nll, (nll, dft)


def test_another_objectives_config_checks_its_own_names(tmp_path):
    from sftkit import ObjectiveSpec, hookimpl
    from sftkit.testing import registered

    class Preference:
        @hookimpl
        def register_objectives(self, register):
            register(ObjectiveSpec("dpo-like", "A preference objective.", "trl:SFTTrainer",
                                   "trl:DPOConfig", "sftkit.training.dataset:sft_dataset"))  # fmt: skip

    with registered(Preference()) as registry:
        resolved = tiny(
            tmp_path, registry, "training.objective=dpo-like", "training.trainer_args.beta=0.1"
        )
        assert any("beta" in n and "trl:DPOConfig" in n for n in resolved.notes)
        with pytest.raises(RecipeError, match=r"optimizer\.options\.lr"):
            tiny(
                tmp_path,
                registry,
                "training.objective=dpo-like",
                "training.trainer_args.learning_rate=1",
            )
    pytest.importorskip("trl")
    from trl import DPOConfig, SFTConfig

    from sftkit.recipe.trainer_args import unknown_names

    assert unknown_names(DPOConfig, {"beta": 0.1}) == []
    (problem,) = unknown_names(SFTConfig, {"beta": 0.1})
    assert problem.path == "training.trainer_args.beta"
