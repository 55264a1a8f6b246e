"""The pieces behind runs that survive faults, without training: the run lock (live, stale,
without flock), checkpoint completeness and choice, atomic publishing and rotation, run.json
writes that stay valid JSON, and what a resume may change. Torch-free."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sftkit.errors import RunDirectoryError, RunLockedError
from sftkit.recipe.load import load_recipe_text
from sftkit.runpaths import RunPaths
from sftkit.training import lock as lock_module
from sftkit.training.checkpoints import (
    choose_checkpoint,
    discard_partial,
    inspect,
    publish,
    rotate,
)
from sftkit.training.lock import RunLock, check_unlocked
from sftkit.training.resume import trim_metrics
from sftkit.training.runfiles import check_run_dir, update_run_json, write_json, write_recipe


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_one_holder_at_a_time_and_who_it_is(tmp_path):
    paths = RunPaths(tmp_path / "run")
    with RunLock.acquire(paths, command="sftkit run r.yaml"):
        holder = json.loads(paths.lock.read_text().splitlines()[0])
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(
            RunLockedError, match=rf"in use by pid {os.getpid()} on .*sftkit run r.yaml"
        ):
            RunLock.acquire(paths, command="another")
        with pytest.raises(RunLockedError, match="kill -INT"):
            check_unlocked(paths)
    assert not paths.lock.exists()
    assert not paths.root.exists()  # created for the lock, nothing else written: gone
    check_unlocked(paths)


def test_a_lock_held_by_another_process(tmp_path):
    paths = RunPaths(tmp_path / "run")
    code = (
        "import sys; from pathlib import Path; from sftkit.runpaths import RunPaths; "
        "from sftkit.training.lock import RunLock; "
        f"lock = RunLock.acquire(RunPaths(Path({str(paths.root)!r})), command='holder'); "
        "print('held', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid} .*holder"):
            RunLock.acquire(paths, command="second")
    finally:
        holder.communicate("")
    RunLock.acquire(paths, command="after").release()  # released with its holder


def test_a_stale_lock_is_taken_over_with_a_message(tmp_path):
    paths = RunPaths(tmp_path / "run")
    paths.root.mkdir()
    paths.lock.write_text(
        json.dumps(
            {"pid": dead_pid(), "host": socket.gethostname(), "started": "then", "command": "x"}
        )
        + "\n"
    )
    notes: list[str] = []
    lock = RunLock.acquire(paths, command="new", echo=notes.append)
    assert notes and "which is no longer running" in notes[0]
    lock.release()
    assert paths.root.is_dir()  # not created by the lock: kept


def test_without_flock_the_pid_decides(tmp_path, monkeypatch):
    def no_flock(fd: int) -> bool:
        raise OSError(errno.ENOLCK, "no locks here")

    monkeypatch.setattr(lock_module, "_flock", no_flock)
    paths = RunPaths(tmp_path / "run")
    lock = RunLock.acquire(paths, command="first")
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        RunLock.acquire(paths, command="second")  # alive: this very process
    lock.release()
    paths.root.mkdir(exist_ok=True)
    for host, taken in ((socket.gethostname(), True), ("elsewhere", False)):
        info = {"pid": dead_pid(), "host": host, "started": "then", "command": "x"}
        paths.lock.write_text(json.dumps(info) + "\n")
        if taken:
            RunLock.acquire(paths, command="new").release()
        else:  # cannot tell whether a process on another host is alive
            with pytest.raises(RunLockedError, match=f"delete {paths.lock}"):
                RunLock.acquire(paths, command="new")


def test_the_reserve_is_given_back(tmp_path):
    paths = RunPaths(tmp_path / "run")
    with RunLock.acquire(paths, command="x") as lock:
        assert paths.lock.stat().st_size > lock_module.RESERVE_BYTES
        lock.release_reserve()
        assert paths.lock.stat().st_size < 1000
        assert json.loads(paths.lock.read_text())["command"] == "x"


def safetensors_bytes(values: int = 4) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [values], "data_offsets": [0, 4 * values]}})
    return struct.pack("<Q", len(header)) + header.encode() + b"\0" * (4 * values)


def checkpoint(
    paths: RunPaths, step: int, *, complete: bool = True, skip: tuple[str, ...] = ()
) -> Path:
    folder = paths.partial_checkpoint(step) if complete else paths.checkpoint(step)
    folder.mkdir(parents=True)
    files = {
        "model.safetensors": safetensors_bytes(),
        "optimizer.pt": b"optimizer",
        "scheduler.pt": b"scheduler",
        "trainer_state.json": json.dumps({"global_step": step}).encode(),
    }
    for name, data in files.items():
        if name not in skip:
            (folder / name).write_bytes(data)
    if complete:
        publish(folder, paths.checkpoint(step), kind="checkpoint", step=step)
    return paths.checkpoint(step)


def test_only_complete_checkpoints_are_resumed_from(tmp_path):
    paths = RunPaths(tmp_path / "run")
    checkpoint(paths, 2)
    checkpoint(paths, 4)
    checkpoint(paths, 6, complete=False)  # written in place and cut short: no marker
    assert not paths.partial.exists()  # published ones leave nothing in .partial/
    point = choose_checkpoint(paths)
    assert point.checkpoint is not None and point.checkpoint.step == 4
    assert [s.name for s in point.skipped] == ["checkpoint-6"]
    assert "no completeness marker" in (point.skipped[0].problem or "")

    with (paths.checkpoint(4) / "model.safetensors").open("r+b") as handle:
        handle.truncate(20)
    status = inspect(paths.checkpoint(4), 4)
    assert status.problem and "model.safetensors is 20 bytes" in status.problem
    assert choose_checkpoint(paths).checkpoint.step == 2  # type: ignore[union-attr]

    # Same size, wrong content: the safetensors header no longer adds up.
    model = paths.checkpoint(2) / "model.safetensors"
    model.write_bytes(b"\xff" * model.stat().st_size)
    assert "damaged" in (inspect(paths.checkpoint(2), 2).problem or "")
    # Left: checkpoint-6, whose files look whole but were never marked complete.
    with pytest.raises(RunDirectoryError, match="checkpoint-6, is not: it has no completeness"):
        choose_checkpoint(paths)
    (paths.checkpoint(6) / "optimizer.pt").unlink()
    (paths.checkpoint(6) / "model.safetensors").unlink()
    assert choose_checkpoint(paths).checkpoint is None  # nothing usable: start over


def test_weights_without_optimizer_state_need_weights_only(tmp_path):
    paths = RunPaths(tmp_path / "run")
    checkpoint(paths, 2, skip=("optimizer.pt",))
    with pytest.raises(RunDirectoryError, match="--resume --weights-only"):
        choose_checkpoint(paths)
    point = choose_checkpoint(paths, weights_only=True)
    assert point.weights_only and point.checkpoint is not None and point.checkpoint.step == 2


def test_publish_replaces_only_once_complete_and_rotation_counts_complete_ones(tmp_path):
    paths = RunPaths(tmp_path / "run")
    for step in (2, 4, 6):
        checkpoint(paths, step)
    checkpoint(paths, 8, complete=False)
    assert rotate(paths, 2) == [paths.checkpoint(2)]
    assert [p.name for _, p in paths.checkpoint_dirs()] == [
        "checkpoint-4",
        "checkpoint-6",
        "checkpoint-8",
    ]
    # A new final/ replaces the old one only when it is whole.
    paths.final.mkdir()
    (paths.final / "old").write_text("old")
    paths.partial_final.mkdir(parents=True)
    (paths.partial_final / "new").write_text("new")
    publish(paths.partial_final, paths.final, kind="final", step=6)
    assert sorted(p.name for p in paths.final.iterdir()) == ["new", "sftkit_complete.json"]
    paths.partial_checkpoint(10).mkdir(parents=True)
    assert discard_partial(paths) == ["checkpoint-10"] and not paths.partial.exists()
    # Stopped between publish's renames (a second save of step 6): the old checkpoint-6
    # moved aside, the new one complete but not yet in place. It is put in place.
    paths.partial.mkdir()
    shutil.copytree(paths.checkpoint(6), paths.partial_checkpoint(6))
    os.replace(paths.checkpoint(6), paths.partial / "checkpoint-6.replaced")
    assert discard_partial(paths) == [] and not paths.partial.exists()
    assert inspect(paths.checkpoint(6), 6).problem is None


def test_run_json_stays_valid_json(tmp_path, monkeypatch):
    paths = RunPaths(tmp_path)
    update_run_json(paths, status="running", loss=float("nan"), peak=float("inf"))
    data = json.loads(paths.run.read_text(), parse_constant=lambda c: pytest.fail(c))
    assert data["loss"] == "nan" and data["peak"] == "inf"

    def full(*args: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError):
        write_json(paths.run, {"status": "failed"})
    assert json.loads(paths.run.read_text())["status"] == "running"  # the old one, whole
    assert not list(tmp_path.glob("*.tmp"))


def tiny(tmp_path: Path, registry: Any, *overrides: str) -> Any:
    text = f"""
model: {{name_or_path: "builtin:tiny-llama", random_init: true}}
strategy: {{name: full-sft}}
optimizer: {{name: adamw}}
training: {{max_steps: 20, lr_scheduler: cosine}}
hardware: {{gpu: cpu}}
output_dir: {tmp_path / "run"}
"""
    return load_recipe_text(text, list(overrides), registry=registry)


def test_what_a_resume_may_change(tmp_path, registry):
    paths = RunPaths(tmp_path / "run")
    paths.root.mkdir()
    write_recipe(paths, tiny(tmp_path, registry))
    paths.metrics.write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n")  # it has trained
    assert check_run_dir(paths, tiny(tmp_path, registry), resume=True) == []
    # The same run moved elsewhere (or spelled another way) is still the same run.
    moved = tiny(tmp_path, registry, f"output_dir={tmp_path / 'elsewhere'}")
    assert check_run_dir(paths, moved, resume=True) == []
    # A longer run would re-stretch the cosine schedule: refused, explained.
    with pytest.raises(RunDirectoryError, match=r"max_steps 20 -> 30: the cosine .* jump"):
        check_run_dir(paths, tiny(tmp_path, registry, "training.max_steps=30"), resume=True)
    constant = tiny(tmp_path, registry, "training.lr_scheduler=constant")
    write_recipe(paths, constant)
    longer = tiny(tmp_path, registry, "training.lr_scheduler=constant", "training.max_steps=30")
    notes = check_run_dir(paths, longer, resume=True)
    assert notes and "the constant learning rate is unchanged" in notes[0]


def test_metrics_are_cut_back_to_the_checkpoint(tmp_path):
    paths = RunPaths(tmp_path)
    lines = [json.dumps({"step": s, "loss": 1.0}) for s in range(1, 7)]
    lines += [json.dumps({"step": 6, "train_runtime": 3.0}), '{"step": 7, "lo']  # cut short
    paths.metrics.write_text("\n".join(lines) + "\n")
    assert trim_metrics(paths, 4) == 4
    steps = [json.loads(line)["step"] for line in paths.metrics.read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_a_file_changed_in_place_is_caught_by_its_checksum(tmp_path):
    """Issue 21 case 3: the marker records checksums; same size, other bytes: skipped."""
    paths = RunPaths(tmp_path / "run")
    checkpoint(paths, 2)
    checkpoint(paths, 4)
    marker = json.loads((paths.checkpoint(4) / "sftkit_complete.json").read_text())
    assert set(marker["checksums"]["files"]) == set(marker["files"])
    optimizer = paths.checkpoint(4) / "optimizer.pt"
    optimizer.write_bytes(b"Optimizer")  # one byte flipped, the size kept
    point = choose_checkpoint(paths)
    assert point.checkpoint is not None and point.checkpoint.step == 2
    assert point.skipped[0].problem == (
        "optimizer.pt has changed since it was saved (its checksum differs; same size)"
    )
    # The weights are intact: a weights-only restart may still use checkpoint-4.
    assert choose_checkpoint(paths, weights_only=True).checkpoint.step == 4  # type: ignore[union-attr]
    # A marker from before checksums were recorded: sizes only, as then.
    del marker["checksums"]
    (paths.checkpoint(4) / "sftkit_complete.json").write_text(json.dumps(marker))
    assert inspect(paths.checkpoint(4), 4).problem is None


def test_a_run_that_stopped_before_its_first_step_frees_its_directory(tmp_path, registry):
    """Issue 21 case 15: no checkpoint, no final/, no step logged: reused, said in one line,
    with or without --resume and whatever the recipe now is."""
    from sftkit.training.resume import plan_run, resumed_fields

    paths = RunPaths(tmp_path / "run")
    paths.root.mkdir()
    write_recipe(paths, tiny(tmp_path, registry))
    update_run_json(paths, status="failed", error="DataError: no such file: train.jsonl")
    changed = tiny(tmp_path, registry, "training.max_steps=30")
    for resume in (False, True):
        assert check_run_dir(paths, changed, resume=resume) == []
        plan = plan_run(paths, changed, resume=resume)
        assert plan.kind == "new"
        assert plan.notes == [
            f"reusing {paths.root}: the run there (failed: DataError: no such file: "
            "train.jsonl) stopped before its first step, so nothing in it is lost."
        ]
    assert resumed_fields(paths, plan, {}) == {} and not paths.run.exists()
    # One logged step, or a checkpoint, and the directory holds a run again.
    write_recipe(paths, tiny(tmp_path, registry))
    paths.metrics.write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n")
    with pytest.raises(RunDirectoryError, match="already holds a run"):
        check_run_dir(paths, changed, resume=False)
    paths.metrics.unlink()
    paths.checkpoint(2).mkdir(parents=True)
    with pytest.raises(RunDirectoryError, match="already holds a run"):
        check_run_dir(paths, changed, resume=False)


def test_prepare_data_into_a_live_runs_data_is_refused_however_named(tmp_path, capsys):
    """Issue 21 case 6: --force into RUN/data named by data.prepared_dir (the recipe's
    output_dir elsewhere) is refused like output_dir=RUN, naming the holder."""
    from sftkit.cli import run_cli
    from sftkit.testing import quickstart_recipe

    paths = RunPaths(tmp_path / "run")
    code = (
        "import sys; from pathlib import Path; from sftkit.runpaths import RunPaths; "
        "from sftkit.training.lock import RunLock; "
        f"lock = RunLock.acquire(RunPaths(Path({str(paths.root)!r})), command='sftkit run'); "
        "print('held', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        alias = tmp_path / "alias"
        alias.symlink_to(paths.root)
        for named in (f"output_dir={paths.root}", f"data.prepared_dir={alias / 'data'}"):
            args = ["prepare-data", str(quickstart_recipe()), named, "--force"]
            capsys.readouterr()
            assert run_cli(args) == 2
            err = " ".join(capsys.readouterr().err.split())
            assert f"is in use by pid {holder.pid} on " in err and "kill -INT" in err, err
        assert not paths.data.exists()
    finally:
        holder.communicate("")


def test_a_lock_shared_with_workers_outlives_their_launcher(tmp_path):
    """Issue 21 case 2: `sftkit launch` shares its lock with its workers; killed with -9, its
    orphaned worker still holds the run, so a resume is refused naming the worker, and the
    lock is free only once the worker is gone."""
    import signal
    import time

    paths = RunPaths(tmp_path / "run")
    worker = (
        "import sys, time; from pathlib import Path; from sftkit.runpaths import RunPaths; "
        "from sftkit.training.lock import hold_shared; "
        f"assert hold_shared(RunPaths(Path({str(paths.root)!r}))); "
        "print('joined', flush=True); time.sleep(120)"
    )
    launcher = (
        "import subprocess, sys, time; from pathlib import Path; "
        "from sftkit.runpaths import RunPaths; from sftkit.training.lock import RunLock; "
        f"lock = RunLock.acquire(RunPaths(Path({str(paths.root)!r})), command='sftkit launch'); "
        "lock.share(); "
        f"w = subprocess.Popen([sys.executable, '-c', {worker!r}], stdout=subprocess.PIPE, "
        "text=True, start_new_session=True); "
        "print(w.pid, w.stdout.readline().strip(), flush=True); time.sleep(120)"
    )
    parent = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pid, said = parent.stdout.readline().split()
    child = int(pid)
    try:
        assert said == "joined"
        with pytest.raises(RunLockedError, match=f"in use by pid {parent.pid}"):
            RunLock.acquire(paths, command="resume")  # both alive: the launcher is named
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        with pytest.raises(RunLockedError) as refused:
            RunLock.acquire(paths, command="resume")
        message = " ".join(str(refused.value).split())
        assert f"in use by pid {child}, which pid {parent.pid}" in message
        assert "no longer running, but they are" in message and f"kill {child}" in message
        with pytest.raises(RunLockedError):
            check_unlocked(paths)
    finally:
        os.kill(child, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the worker is reaped by init, not by us
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    notes: list[str] = []
    RunLock.acquire(paths, command="resume", echo=notes.append).release()
    assert "no longer running" in notes[0]
