"""Signals outside `sftkit run` (issue 21, case 7): Ctrl-C during `export --merge` and late in
`prepare-data` stops them with exit 130 even when SIGINT was inherited *ignored* (a command
started in the background by a script, as the audit started them), and a partial export left
by kill -9 is removed by the next export. Each command runs in a subprocess with a stall
injected (tests/fault_injection.py), so the signal lands at a known point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")

from sftkit.export import export_run, remove_abandoned_partials
from sftkit.testing import quickstart_recipe

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")])
    return {
        **os.environ,
        "PYTHONPATH": path,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "SFTKIT_DISABLE_PLUGIN_AUTOLOAD": "1",
        **extra,
    }


def ignore_sigint() -> None:
    """What a non-interactive shell does to a command it starts with `&`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stalled(kind: str, args: list[str], ready: Path) -> subprocess.Popen[str]:
    """The CLI with `kind` injected, once it has reached the stall."""
    process = subprocess.Popen(
        [sys.executable, str(TESTS / "fault_injection.py"), *args],
        env=env(SFTKIT_TEST_FAULT=kind, SFTKIT_TEST_READY=str(ready)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ignore_sigint,
    )
    deadline = time.monotonic() + 240
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            out, err = process.communicate()
            pytest.fail(f"{kind} never reached its stall:\n{out}\n{err}")
        time.sleep(0.1)
    return process


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_export import make_run

    return make_run(tmp_path_factory.mktemp("runs"), "lora")


def partials(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "export").glob(".merged.partial-*"))


def test_ctrl_c_stops_a_merged_export(lora_run, tmp_path):
    process = stalled("stall-export", ["export", str(lora_run), "--merge"], tmp_path / "ready")
    assert partials(lora_run)  # the export is under way
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "export interrupted by SIGINT" in err and "Traceback" not in err
    assert partials(lora_run) == [] and not (lora_run / "export" / "merged").exists()


def test_a_partial_export_left_by_kill_9_goes_with_the_next_export(lora_run, tmp_path):
    process = stalled("stall-export", ["export", str(lora_run), "--merge"], tmp_path / "ready")
    process.kill()
    process.communicate(timeout=60)
    left = partials(lora_run)
    assert left == [f".merged.partial-{process.pid}"]
    live = lora_run / "export" / f".merged.partial-{os.getppid()}"  # a live process's: kept
    live.mkdir()
    result = export_run(lora_run, merge=True)
    weights = result.output_dir / "model.safetensors"
    # Not the 0600 safetensors writes: what the umask gives any new file (case 17).
    umask = os.umask(0o022)
    os.umask(umask)
    assert weights.stat().st_mode & 0o777 == 0o666 & ~umask
    assert partials(lora_run) == [live.name]
    live.rmdir()
    assert remove_abandoned_partials(result.output_dir) == []


def test_ctrl_c_late_in_prepare_data(tmp_path):
    out = tmp_path / "data"
    args = ["prepare-data", str(quickstart_recipe()), "--output", str(out)]
    process = stalled("stall-prepare", args, tmp_path / "ready")
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "preparing the data interrupted by SIGINT" in err and "Traceback" not in err
    assert not (out / "manifest.json").exists()  # incomplete, so prepared again next time
    from sftkit.cli import run_cli

    assert run_cli(["prepare-data", str(quickstart_recipe()), "--output", str(out)]) == 0
    assert (out / "manifest.json").is_file()


def test_commands_own_the_signals_only_while_they_run():
    from sftkit.errors import RunInterrupted
    from sftkit.signals import stop_on_signals

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(RunInterrupted) as info, stop_on_signals("the work"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        assert info.value.exit_code == 143
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # given back
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_an_evaluation_and_keeps_the_earlier_result(tmp_path):
    """`sftkit eval` owns SIGINT too (issue 21's leftover): stopped while scoring, exit 130,
    and the result an earlier evaluation wrote in the same folder is whole."""
    from sftkit.evaluation.base import read_result

    out = tmp_path / "eval"
    args = ["eval", str(quickstart_recipe()), "--limit", "4", "--output-dir", str(out)]
    first = subprocess.run(
        [sys.executable, str(TESTS / "fault_injection.py"), *args],
        env=env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    [folder] = [p for p in out.glob("*/") if (p / "metrics.json").is_file()]
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    process = stalled("stall-eval", args, tmp_path / "ready")
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "the evaluation interrupted by SIGINT" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert read_result(folder) is not None


def test_a_result_is_replaced_only_once_it_is_written_whole(tmp_path, monkeypatch):
    from sftkit.evaluation import base
    from sftkit.evaluation.base import EvalResult, read_result, write_result

    def result(n: int) -> EvalResult:
        rows = [{"correct": True}] * n
        return EvalResult("gsm8k", "test", n, {"accuracy": 1.0}, "accuracy", predictions=rows)

    folder = tmp_path / "after-gsm8k"
    write_result(result(2), folder, stage="after", model="m")
    real = base.json.dumps

    def fail_on_metrics(document, *args, **kwargs):
        if isinstance(document, dict) and "stage" in document:
            raise KeyboardInterrupt  # stopped between the predictions and the metrics
        return real(document, *args, **kwargs)

    monkeypatch.setattr(base.json, "dumps", fail_on_metrics)
    with pytest.raises(KeyboardInterrupt):
        write_result(result(5), folder, stage="after", model="m")
    monkeypatch.undo()
    kept = read_result(folder)
    assert kept is not None and kept.n == 2
    assert len((folder / "predictions.jsonl").read_text().splitlines()) == 2
    write_result(result(3), folder, stage="after", model="m")  # the next one goes in whole
    assert read_result(folder).n == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["after-gsm8k"]
