"""The quickstart's documented losses (docs/quickstart.md, "What you should see") are what
the tested environment logs: its first 40 steps, on the 400-step schedule, give the step-20
and step-40 losses printed there. The figures hold for the exact versions of
constraints.txt (`nox` installs them); elsewhere the test is skipped and says which package
differs, since other library versions legitimately change the losses from step 40 on."""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sftkit.recipe.load import load_recipe  # noqa: E402
from sftkit.testing import fresh_registry, quickstart_recipe  # noqa: E402
from sftkit.training.runner import run_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART_DOC = ROOT / "docs" / "quickstart.md"
CONSTRAINTS = ROOT / "constraints.txt"
# What decides the losses: the numerics and the data order.
DECIDING = ("torch", "transformers", "trl", "accelerate", "datasets", "tokenizers", "numpy")


def documented_losses() -> dict[int, float]:
    text = QUICKSTART_DOC.read_text(encoding="utf-8")
    found = re.findall(r"^step (\d+)/400  loss (\d+\.\d{4})", text, flags=re.M)
    return {int(step): float(loss) for step, loss in found}


def pinned() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        name, sep, version = line.partition("==")
        if sep and not line.startswith("#"):
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def differing() -> list[str]:
    pins = pinned()
    out = []
    for package in DECIDING:
        want = "2.13.0" if package == "torch" else pins[package]
        have = metadata.version(package).split("+")[0]
        if have != want:
            out.append(f"{package} {have} (tested: {want})")
    return out


class StopAt(transformers.TrainerCallback):
    """The quickstart as recipes/quickstart.yaml has it (400 steps: the same schedule),
    stopped after `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step >= self.step:
            control.should_training_stop = True


def test_the_documented_steps_are_there():
    assert set(documented_losses()) >= {20, 40}


@pytest.mark.slow
def test_the_quickstart_logs_the_documented_losses(tmp_path):
    mismatch = differing()
    if mismatch:
        pytest.skip("not the tested environment (constraints.txt): " + ", ".join(mismatch))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # as documented: a 2-core machine
    try:
        resolved = load_recipe(
            str(quickstart_recipe()),
            [
                "evaluation.before_training=false",
                "evaluation.after_training=false",
                f"output_dir={tmp_path / 'run'}",
            ],
            registry=fresh_registry(),
        )
        run_recipe(resolved, callbacks=[StopAt(40)])
    finally:
        torch.set_num_threads(threads)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    logged = {e["step"]: e["loss"] for e in map(json.loads, lines) if "loss" in e}
    documented = documented_losses()
    assert {step: round(logged[step], 4) for step in (20, 40)} == {
        step: documented[step] for step in (20, 40)
    }


class RecordingSession:
    """What a nox session asked for, without running it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.posargs: list[str] = []

    def install(self, *args: str) -> None:
        self.calls.append(("install", args))

    def run(self, *args: str, **kwargs: Any) -> None:
        self.calls.append(("run", args))


def test_nox_installs_the_tested_versions_and_runs_the_quickstart(noxfile, monkeypatch, tmp_path):
    """`nox -s quickstart` and `nox` (issue 21, case 14): each session that installs sftkit
    installs it through constraints.txt; the quickstart session then runs the embedded
    default; neither is a copy of the other's install line."""
    import nox

    monkeypatch.chdir(tmp_path)  # no runs/quickstart here: a first run, not a resume
    quickstart = RecordingSession()
    noxfile.quickstart.func(quickstart)
    installs = [args for kind, args in quickstart.calls if kind == "install"]
    assert any(args[:2] == ("-c", "constraints.txt") and ".[train]" in args for args in installs)
    assert quickstart.calls[-1] == ("run", ("sftkit", "run", "recipes/quickstart.yaml"))
    tests = RecordingSession()
    noxfile.tests.func(tests)
    assert any(
        args[:2] == ("-c", "constraints.txt") for kind, args in tests.calls if kind == "install"
    )
    assert "quickstart" not in nox.options.sessions  # `nox` alone: the tests, not the run
    assert (ROOT / "constraints.txt").is_file() and "-c constraints.txt" in (
        ROOT / "README.md"
    ).read_text()
