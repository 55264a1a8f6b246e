"""Fault injection: `sftkit run` killed, signalled, cut short mid-save, run twice at once, on a
full disk, with damaged checkpoints or a diverging loss. Every case ends with nothing lost:
an exact resume (the same value at every logged step, bit-identical final weights and the
same whole-run train_loss as the uninterrupted seeded run) or exit 2 with what to do.

The faults come from tests/fault_injection.py, which runs the CLI in a subprocess with the
trainer patched in that process only (kill -9 during a step or a save, a signal during a
step, a pause). Resumes run in this process. Torch uses one thread in both, so the figures
compare bit for bit. The run: 8 steps of a tiny Llama over 23 rows (an epoch is 6 steps),
cosine schedule with warmup, a checkpoint every 2 steps.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from tiny_models import config_dir, recipe_text  # noqa: E402

from sftkit.cli import run_cli  # noqa: E402

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
OVERRIDES = (
    "training.lr_scheduler=cosine",
    "training.warmup_ratio=0.2",
    "training.report_to=[none]",
)
STEPS = 8
PER_STEP = ("loss", "learning_rate", "grad_norm", "num_tokens", "mean_token_accuracy", "entropy")


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    path = root / "recipe.yaml"
    text = recipe_text(
        config_dir(root / "model"),
        root / "unused",
        max_steps=STEPS,
        save_steps=2,
        micro_batch_size=4,
        train_rows=24,
    )
    path.write_text(text)
    return path


def cli(recipe: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["run", str(recipe), *OVERRIDES, "--output-dir", str(run_dir), *extra]


@pytest.fixture(scope="module")
def reference(recipe: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run every case is compared with."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    assert run_cli(cli(recipe, run_dir)) == 0
    return run_dir


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


def faulty(
    fault: str, recipe: Path, run_dir: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    """`sftkit run` in a subprocess with `fault` injected (tests/fault_injection.py)."""
    return subprocess.run(
        [sys.executable, str(TESTS / "fault_injection.py"), *cli(recipe, run_dir, *extra)],
        env=env(SFTKIT_TEST_FAULT=fault),
        capture_output=True,
        text=True,
        timeout=300,
    )


def resume(recipe: Path, run_dir: Path, capsys: Any, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = run_cli(cli(recipe, run_dir, "--resume", *extra))
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split())  # rich wraps long lines


def events(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def per_step(run_dir: Path) -> dict[int, dict[str, Any]]:
    return {e["step"]: {k: e.get(k) for k in PER_STEP} for e in events(run_dir) if "loss" in e}


def weights(run_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "final" / "model.safetensors"))


def run_json(run_dir: Path) -> dict[str, Any]:
    def no_nan(text: str) -> Any:
        raise AssertionError(f"run.json holds {text}: not valid JSON")

    return json.loads((run_dir / "run.json").read_text(), parse_constant=no_nan)


def assert_exact(run_dir: Path, reference: Path) -> None:
    """Nothing lost: as if the run had never been stopped."""
    logged = [e["step"] for e in events(run_dir) if "loss" in e]
    assert logged == list(range(1, STEPS + 1))  # every step once, in order
    assert per_step(run_dir) == per_step(reference)  # bit for bit, every logged value
    ours, theirs = weights(run_dir), weights(reference)
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        assert torch.equal(ours[name], tensor), name
    record, expected = run_json(run_dir), run_json(reference)
    assert record["status"] == "completed" and record["steps"] == STEPS
    assert record["train_loss"] == expected["train_loss"]  # over the whole run
    assert record["final_loss"] == expected["final_loss"]
    assert not (run_dir / ".partial").exists() and not (run_dir / "run.lock").exists()


def snapshot(run_dir: Path) -> dict[str, tuple[int, int, str]]:
    return {
        str(p.relative_to(run_dir)): (
            p.stat().st_size,
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


def test_sigint_stops_at_the_step_boundary_and_resumes_exactly(recipe, reference, tmp_path, capsys):
    run_dir = tmp_path / "run"
    done = faulty("sigint:5", recipe, run_dir)  # Ctrl-C during step 5
    assert done.returncode == 130, done.stderr
    assert "interrupted by SIGINT at step 5 of 8; checkpoint-5 is saved" in done.stderr
    command = f"--output-dir {run_dir} --resume"
    assert "Resume with: sftkit run " in done.stderr and command in done.stderr
    record = run_json(run_dir)
    assert record["status"] == "interrupted" and record["stopped_at_step"] == 5
    assert record["checkpoint"] == "checkpoint-5" and record["signal"] == "SIGINT"
    started = record["started"]

    code, out = resume(recipe, run_dir, capsys)
    assert code == 0, out
    assert "resuming from checkpoint-5 (step 5)" in out
    assert_exact(run_dir, reference)
    record = run_json(run_dir)
    assert record["started"] == started and record["resumes"][0]["from_step"] == 5
    # "completed in ..." counts both parts (issue 21, case 17), not only the resumed one.
    (first,) = record["earlier_parts_s"]
    assert first > 0 and re.search(r"completed: \S+ in [\d.ms]+ over 2 parts \(this one", out)

    # A completed run resumed again: nothing to do, no file touched.
    before = snapshot(run_dir)
    code, out = resume(recipe, run_dir, capsys)
    assert code == 0 and "Nothing to do" in out
    assert snapshot(run_dir) == before


def test_sigterm_stops_at_the_step_boundary_and_resumes_exactly(
    recipe, reference, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    done = faulty("sigterm:3", recipe, run_dir)
    assert done.returncode == 143, done.stderr
    assert "interrupted by SIGTERM at step 3 of 8; checkpoint-3 is saved" in done.stderr
    assert run_json(run_dir)["signal"] == "SIGTERM"
    code, out = resume(recipe, run_dir, capsys)
    assert code == 0, out
    assert_exact(run_dir, reference)


def test_a_second_signal_stops_at_once(recipe, reference, tmp_path, capsys):
    run_dir = tmp_path / "run"
    done = faulty("sigint2:5", recipe, run_dir)  # two Ctrl-C during step 5
    assert done.returncode == 130, done.stderr
    # Step 5 was not finished: the run continues from the last regular checkpoint.
    assert "at step 4 of 8; checkpoint-4 is saved" in done.stderr
    assert not (run_dir / "checkpoints" / "checkpoint-5").exists()
    code, out = resume(recipe, run_dir, capsys)
    assert code == 0, out
    assert_exact(run_dir, reference)


@pytest.fixture(scope="module")
def killed(recipe: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run killed with SIGKILL during step 5: checkpoints 2 and 4, a stale lock."""
    run_dir = tmp_path_factory.mktemp("killed") / "run"
    done = faulty("kill:5", recipe, run_dir)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert run_json(run_dir)["status"] == "running"  # it could not say otherwise
    assert (run_dir / "run.lock").is_file()
    return run_dir


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(run_dir, target, symlinks=True)
    return target


def test_kill_mid_step_resumes_exactly_even_moved_elsewhere(
    recipe, reference, killed, tmp_path, capsys
):
    moved = copy_of(killed, tmp_path)  # the run directory moved: another path, same run
    code, out = resume(recipe, moved, capsys)
    assert code == 0, out
    assert "took over the lock" in out and "no longer running" in out
    assert "resuming from checkpoint-4 (step 4)" in out
    assert_exact(moved, reference)


def test_stopped_before_its_first_checkpoint_it_starts_over(
    recipe, reference, killed, tmp_path, capsys
):
    run_dir = copy_of(killed, tmp_path)
    shutil.rmtree(run_dir / "checkpoints")  # as if killed before checkpoint-2
    code, out = resume(recipe, run_dir, capsys)
    assert code == 0, out
    assert "no complete checkpoint" in out and "starts over from step 0" in out
    assert_exact(run_dir, reference)  # metrics.jsonl holds the new attempt's steps, once
    assert run_json(run_dir)["resumes"][0]["how"] == "restart"


def test_a_damaged_newest_checkpoint_is_skipped_with_the_reason(
    recipe, reference, killed, tmp_path, capsys
):
    run_dir = copy_of(killed, tmp_path)
    with (run_dir / "checkpoints" / "checkpoint-4" / "model.safetensors").open("r+b") as handle:
        handle.truncate(1000)
    code, out = resume(recipe, run_dir, capsys)
    assert code == 0, out
    assert "skipped checkpoint-4: model.safetensors is 1000 bytes" in out
    assert "resuming from checkpoint-2" in out
    assert_exact(run_dir, reference)


def test_an_unreadable_trainer_state_is_skipped(recipe, reference, killed, tmp_path, capsys):
    run_dir = copy_of(killed, tmp_path)
    state = run_dir / "checkpoints" / "checkpoint-4" / "trainer_state.json"
    state.write_bytes(b"\0" * state.stat().st_size)  # same size: only its content is wrong
    code, out = resume(recipe, run_dir, capsys)
    assert code == 0, out
    assert "skipped checkpoint-4: trainer_state.json is unreadable" in out
    assert_exact(run_dir, reference)


def test_no_optimizer_state_is_refused_unless_weights_only(
    recipe, reference, killed, tmp_path, capsys
):
    run_dir = copy_of(killed, tmp_path)
    for step in (2, 4):
        (run_dir / "checkpoints" / f"checkpoint-{step}" / "optimizer.pt").unlink()
    code, out = resume(recipe, run_dir, capsys)
    assert code == 2
    assert "optimizer.pt is missing" in out and "--weights-only" in out
    assert run_json(run_dir)["status"] == "running"  # refused before anything changed

    code, out = resume(recipe, run_dir, capsys, "--weights-only")
    assert code == 0, out
    assert "from its weights alone" in out and "not an exact resume" in out
    ours, theirs = per_step(run_dir), per_step(reference)
    assert sorted(ours) == list(range(1, STEPS + 1))
    # The schedule continues where it was; step 5's loss is the checkpoint's weights'.
    assert [ours[s]["learning_rate"] for s in ours] == [theirs[s]["learning_rate"] for s in ours]
    assert ours[5]["loss"] == theirs[5]["loss"]
    assert not torch.equal(weights(run_dir)["lm_head.weight"], weights(reference)["lm_head.weight"])


def test_kill_during_a_checkpoint_save(recipe, reference, tmp_path, capsys):
    run_dir = tmp_path / "run"
    done = faulty("kill-save:4", recipe, run_dir)
    assert done.returncode == -signal.SIGKILL
    # The half-written checkpoint never became checkpoint-4.
    assert (run_dir / ".partial" / "checkpoint-4").is_dir()
    assert not (run_dir / "checkpoints" / "checkpoint-4").exists()
    code, out = resume(recipe, run_dir, capsys)
    assert code == 0, out
    assert "discarded what an interrupted save left unfinished: checkpoint-4" in out
    assert "resuming from checkpoint-2" in out
    assert_exact(run_dir, reference)


def test_kill_while_final_is_saved_finishes_without_another_step(
    recipe, reference, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    done = faulty("kill-final", recipe, run_dir)
    assert done.returncode == -signal.SIGKILL
    assert not (run_dir / "final").exists()
    code, out = resume(recipe, run_dir, capsys)
    assert code == 0, out
    assert "checkpoint-8 is at the last step (8 of 8): saving final/ from it" in out
    assert not (run_dir / "checkpoints" / "checkpoint-9").exists()  # no step 9 of 8
    assert_exact(run_dir, reference)


def test_one_writer_per_run(recipe, reference, tmp_path, capsys):
    run_dir = tmp_path / "run"
    go = tmp_path / "go"
    holder = subprocess.Popen(
        [sys.executable, str(TESTS / "fault_injection.py"), *cli(recipe, run_dir)],
        env=env(SFTKIT_TEST_FAULT="pause:3", SFTKIT_TEST_GO=str(go)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and holder.poll() is None:
            metrics = run_dir / "metrics.jsonl"
            if metrics.is_file() and '"step": 2' in metrics.read_text():
                break
            time.sleep(0.1)
        assert holder.poll() is None, holder.communicate()
        recipe_before = (run_dir / "recipe.yaml").read_bytes()
        alias = tmp_path / "alias"  # the same directory, spelled another way
        alias.symlink_to(run_dir)
        who = f"is in use by pid {holder.pid} on "
        for args in (
            cli(recipe, run_dir),  # a second run
            cli(recipe, run_dir, "--resume"),  # a resume of the running run
            cli(recipe, alias, "--resume"),
            ["eval", str(run_dir)],  # an evaluation that would write into it
            ["prepare-data", str(recipe), f"output_dir={run_dir}", "--force"],  # its data
        ):
            capsys.readouterr()
            assert run_cli(args) == 2
            err = " ".join(capsys.readouterr().err.split())
            assert who in err and "kill -INT" in err, err
        assert (run_dir / "recipe.yaml").read_bytes() == recipe_before
    finally:
        go.touch()
        _, err = holder.communicate(timeout=240)
    assert holder.returncode == 0, err
    assert_exact(run_dir, reference)


def test_a_full_disk_loses_nothing(recipe, reference, tmp_path, capsys, monkeypatch):
    """ENOSPC while checkpoint-4 is written (simulated): exit 2 with what to do, run.json
    says failed, nothing half-written is left; after that the run resumes exactly."""
    import errno

    import transformers

    original = transformers.Trainer._save_optimizer_and_scheduler

    def full(self: Any, output_dir: str) -> None:
        if self.state.global_step == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(self, output_dir)

    run_dir = tmp_path / "run"
    monkeypatch.setattr(transformers.Trainer, "_save_optimizer_and_scheduler", full)
    assert run_cli(cli(recipe, run_dir)) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "is full" in err and "saving checkpoint-4 failed" in err
    assert f"--output-dir {run_dir} --resume" in err
    record = run_json(run_dir)
    assert record["status"] == "failed" and record["checkpoint"] == "checkpoint-2"
    assert not (run_dir / ".partial").exists()
    monkeypatch.undo()
    code, out = resume(recipe, run_dir, capsys)
    assert code == 0, out
    assert_exact(run_dir, reference)


def _can_mount_tmpfs(where: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    where.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {where}"],
        capture_output=True,
    )
    return probe.returncode == 0


def test_a_tiny_filesystem(recipe, reference, tmp_path, capsys):
    """A real full disk: a 2.2 MB tmpfs (in a user namespace) holds the data and the first
    checkpoint, not the second. The run exits 2, run.json is valid and says failed; the run,
    copied to a roomier disk, resumes exactly there."""
    mount = tmp_path / "tiny"
    if not _can_mount_tmpfs(mount):
        pytest.skip("cannot mount a tmpfs here (unshare -rm)")
    inner, copied = mount / "run", tmp_path / "moved"
    run = " ".join(
        [sys.executable, str(TESTS / "fault_injection.py"), *(f"'{a}'" for a in cli(recipe, inner))]
    )
    script = (
        f"mount -t tmpfs -o size=2200k tmpfs {mount} && {run}; code=$?; "
        f"cp -a {inner} {copied}; exit $code"
    )
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "is full" in done.stderr and "--resume" in done.stderr
    record = run_json(copied)
    assert record["status"] == "failed" and record["checkpoint"] == "checkpoint-2"
    assert not (copied / ".partial").exists()
    code, out = resume(recipe, copied, capsys)
    assert code == 0, out
    assert_exact(copied, reference)


def test_a_nan_loss_is_a_failure_with_its_step(recipe, tmp_path, capsys, monkeypatch):
    from trl import SFTTrainer

    original = SFTTrainer.compute_loss

    def nan_at_3(self: Any, *args: Any, **kwargs: Any) -> Any:
        loss = original(self, *args, **kwargs)
        if self.state.global_step + 1 == 3:
            return loss * float("nan") if not isinstance(loss, tuple) else loss
        return loss

    monkeypatch.setattr(SFTTrainer, "compute_loss", nan_at_3)
    run_dir = tmp_path / "run"
    assert run_cli(cli(recipe, run_dir)) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "the training loss is nan at step 3: training diverged" in err
    assert "optimizer.options.lr" in err  # what to do
    record = run_json(run_dir)  # valid JSON: no bare NaN
    assert record["status"] == "failed" and record["failed_step"] == 3
    assert not (run_dir / "final").exists()
    assert not (run_dir / "checkpoints" / "checkpoint-4").exists()


EVALUATED = ("evaluation.evaluators=[{name: eval-loss}]", "evaluation.after_training=true")


def assert_summary_kept(run_dir: Path, reference: Path) -> None:
    """Issue 21 case 1: a resume that only finishes the run keeps every event and the
    training summary, and the report shows the final loss."""
    assert_exact(run_dir, reference)
    assert [e for e in events(run_dir) if "train_runtime" in e]  # the trainer's summary
    expected = run_json(reference)
    assert run_json(run_dir)["max_steps"] == STEPS
    final = f"{expected['final_loss']:.4g}"
    assert f"final loss | {final}" in (run_dir / "report.md").read_text()


def test_killed_just_after_final_is_saved_loses_nothing(recipe, reference, tmp_path, capsys):
    run_dir = tmp_path / "run"
    done = faulty("kill-after-final", recipe, run_dir)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert (run_dir / "final" / "sftkit_complete.json").is_file()
    assert "steps" not in run_json(run_dir)  # killed before the summary was recorded
    logged = len(events(run_dir))
    code, out = resume(recipe, run_dir, capsys)
    assert code == 0, out
    assert "final/ is saved (step 8): finishing the run's evaluation and report" in out
    assert len(events(run_dir)) == logged  # not one line trimmed
    assert_summary_kept(run_dir, reference)
    assert run_json(run_dir)["resumes"][0] == {
        **run_json(run_dir)["resumes"][0],
        "from_step": STEPS,
        "how": "evaluate",
    }


@pytest.mark.parametrize("fault", ["sigint-eval", "kill-eval"])
def test_stopped_during_the_evaluation_after_training(fault, recipe, reference, tmp_path, capsys):
    run_dir = tmp_path / "run"
    done = faulty(fault, recipe, run_dir, *EVALUATED)
    assert done.returncode == (130 if fault == "sigint-eval" else -signal.SIGKILL), done.stderr
    logged = len(events(run_dir))
    code, out = resume(recipe, run_dir, capsys, *EVALUATED)
    assert code == 0, out
    assert len(events(run_dir)) == logged
    assert (run_dir / "eval" / "after-eval-loss" / "metrics.json").is_file()
    assert_summary_kept(run_dir, reference)


def test_a_checkpoint_corrupted_in_place_is_skipped_not_blamed_on_the_lr(
    recipe, reference, killed, tmp_path, capsys
):
    """Issue 21 cases 3 and 8: checkpoint-4's weights overwritten with NaN bytes, its size
    and safetensors header kept. The checksum catches it: skipped with the reason, resumed
    exactly from checkpoint-2 (it used to resume silently and 'diverge', blaming the lr)."""
    run_dir = copy_of(killed, tmp_path)
    model = run_dir / "checkpoints" / "checkpoint-4" / "model.safetensors"
    data = bytearray(model.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    data[start:] = b"\xff" * (len(data) - start)
    model.write_bytes(bytes(data))
    code, out = resume(recipe, run_dir, capsys)
    assert code == 0, out
    assert "skipped checkpoint-4: model.safetensors has changed since it was saved" in out
    assert "resuming from checkpoint-2" in out and "optimizer.options.lr" not in out
    assert_exact(run_dir, reference)


class RunsCode:
    """Unpickling this runs a shell command (the test checks it never ran)."""

    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.flag}",))


def code_pickle(path: Path, flag: Path, *, bare: bool = False) -> None:
    import pickle

    if bare:
        path.write_bytes(pickle.dumps({"state": RunsCode(flag)}))
    else:
        torch.save({"state": RunsCode(flag)}, path)


@pytest.mark.parametrize("name", ["optimizer.pt", "rng_state.pth"])
def test_a_checkpoint_pickle_that_runs_code_is_skipped_with_its_name(
    name, recipe, reference, killed, tmp_path, capsys
):
    """Issue 21 case 9: a pickle that would run code in checkpoint-4 (its marker rewritten
    to match, so the checksums pass): skipped naming the file, resumed exactly from
    checkpoint-2; it used to be torch's refusal as an "internal error", exit 1."""
    from sftkit.training.checkpoints import write_marker

    run_dir = copy_of(killed, tmp_path)
    flag = tmp_path / "ran"
    latest = run_dir / "checkpoints" / "checkpoint-4"
    code_pickle(latest / name, flag, bare=name.endswith(".pth"))
    write_marker(latest, kind="checkpoint", step=4, max_steps=STEPS)
    code, out = resume(recipe, run_dir, capsys)
    assert code == 0, out
    assert f"skipped checkpoint-4: {name} holds a pickle that would run code when loaded" in out
    assert "resuming from checkpoint-2" in out
    assert_exact(run_dir, reference)
    assert not flag.exists()


def test_a_model_pickle_that_runs_code_is_exit_2_naming_the_file(tmp_path, capsys):
    from tiny_models import config_dir

    model = config_dir(tmp_path / "model")
    flag = tmp_path / "ran"
    code_pickle(model / "pytorch_model.bin", flag)
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe_text(model, tmp_path / "run", random_init=False))
    capsys.readouterr()
    assert run_cli(["run", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "torch refused to load a pickle that would run code: " in err
    assert f"{model / 'pytorch_model.bin'} would import posix.system" in err
    assert "internal error" not in err and not flag.exists()
    assert run_json(tmp_path / "run")["status"] == "failed"


def test_divergence_right_after_a_resume_names_the_checkpoint(
    recipe, reference, killed, tmp_path, capsys
):
    """Issue 21 case 8, where the checksums cannot help (a marker from before sftkit
    recorded them): the loss is NaN at the first step after resuming from the damaged
    checkpoint-4; the message names it and the intact checkpoint-2, not the lr. Doing what
    it says resumes exactly."""
    run_dir = copy_of(killed, tmp_path)
    latest = run_dir / "checkpoints" / "checkpoint-4"
    model = latest / "model.safetensors"
    data = bytearray(model.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    data[start:] = b"\xff" * (len(data) - start)
    model.write_bytes(bytes(data))
    marker = json.loads((latest / "sftkit_complete.json").read_text())
    marker.pop("checksums", None)  # as an older sftkit wrote it
    (latest / "sftkit_complete.json").write_text(json.dumps(marker))
    code, out = resume(recipe, run_dir, capsys)
    assert code == 2, out
    assert "the training loss is nan at step 5: training diverged" in out
    assert "the first step trained after resuming from checkpoint-4" in out
    assert "checkpoint-4 is likely damaged" in out and "not the learning rate" in out
    assert "checkpoint-2 checks out" in out and "optimizer.options.lr" not in out
    aside = run_dir / "checkpoint-4.suspect"
    assert f"mv {latest} {aside}" in out
    latest.rename(aside)
    code, out = resume(recipe, run_dir, capsys)
    assert code == 0, out
    assert "resuming from checkpoint-2" in out
    assert_exact(run_dir, reference)
