"""Checkpoints that are either complete or absent, and the one a resume continues from.

A checkpoint (and final/) is assembled under ``<run>/.partial/`` by the trainer, then
`publish` writes its completeness marker (every file with its size and checksum, written last
and synced) and renames the folder into place. A save cut short by a kill, a signal or a full disk leaves
only a folder under .partial/, which the next run discards (`discard_partial`).

`choose_checkpoint` picks the newest checkpoint that checks out (`inspect`): its marker, every
file it lists at its recorded size and checksum (a file changed in place, its size kept, is
caught), readable trainer state and safetensors headers, no pickle that would run code
(`sftkit.training.pickles`), and the optimizer and scheduler state an exact resume needs. Every newer one skipped is returned with
the reason. One with weights but no optimizer or scheduler state is used only for an explicit
weights-only restart. Torch-free (the pickle check imports torch only for a checkpoint that
holds a pickle).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftkit import atomic
from sftkit._version import __version__
from sftkit.errors import RunDirectoryError
from sftkit.oserrors import open_to_umask
from sftkit.runpaths import COMPLETE_MARKER, RunPaths, complete_marker
from sftkit.training import pickles
from sftkit.training.runfiles import now

# transformers' names (trainer.py: OPTIMIZER_NAME, SCHEDULER_NAME, TRAINER_STATE_NAME).
TRAINER_STATE = "trainer_state.json"
SCHEDULER = "scheduler.pt"
OPTIMIZER_FILES = ("optimizer.pt", "optimizer.bin")
OPTIMIZER_DIR_PREFIX = "optimizer"  # FSDP's sharded optimizer state: optimizer_0/
# Model weights as transformers, PEFT, FSDP (sharded folders) and DeepSpeed save them.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "adapter_model.safetensors",
    "pytorch_model.bin",
    "adapter_model.bin",
)
WEIGHT_DIR_PREFIXES = ("pytorch_model_fsdp_", "global_step")
CHUNK = 8 * 2**20  # checksums stream the file in pieces of this size


def _hasher(algorithm: str | None = None) -> tuple[str, Any] | None:
    """A fresh hasher: `algorithm` (a marker's; None if this environment lacks it), or by
    default xxHash's XXH3-128 where installed (many GB/s: a checkpoint's checksums cost
    about what reading it back costs), else BLAKE2b from the standard library."""
    if algorithm == "blake2b":
        return "blake2b", hashlib.blake2b(digest_size=16)
    try:
        import xxhash
    except ImportError:
        return None if algorithm is not None else ("blake2b", hashlib.blake2b(digest_size=16))
    if algorithm not in (None, "xxh3_128"):
        return None
    return "xxh3_128", xxhash.xxh3_128()


def _digest(path: Path, hasher: Any) -> str:
    """`hasher`'s digest of `path`, read in chunks."""
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
    return str(hasher.hexdigest())


# Checksums verified in this process, by (file, digest, size, mtime): `plan_run` runs twice.
_VERIFIED: set[tuple[str, str, int, int]] = set()


def _changed(path: Path, algorithm: str, expected: str) -> bool:
    """Does `path` no longer have the checksum its marker recorded?"""
    stat = path.stat()
    key = (str(path), expected, stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return False
    hasher = _hasher(algorithm)
    if hasher is None:  # made with a hash this environment lacks: sizes only
        return False
    if _digest(path, hasher[1]) != expected:
        return True
    _VERIFIED.add(key)
    return False


@dataclass(frozen=True)
class CheckpointStatus:
    """What `inspect` found: `problem` is None for a checkpoint an exact resume can use;
    `has_weights` says whether its weights and trainer state alone are intact."""

    path: Path
    step: int
    problem: str | None
    has_weights: bool
    marker: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint to continue from (None: start over), the newer ones passed over, and
    whether it is a weights-only restart (fresh optimizer, the schedule fast-forwarded)."""

    checkpoint: CheckpointStatus | None
    skipped: tuple[CheckpointStatus, ...] = ()
    weights_only: bool = False


def read_marker(directory: Path) -> dict[str, Any] | None:
    """The completeness marker of `directory`: None if absent; ValueError if unreadable."""
    path = complete_marker(directory)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"its completeness marker is unreadable ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise ValueError("its completeness marker is not one sftkit wrote")
    return data


def _files(directory: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.name != COMPLETE_MARKER:
            yield path.relative_to(directory).as_posix(), path


def write_marker(directory: Path, *, kind: str, step: int, **extra: Any) -> dict[str, Any]:
    """Sync every file of `directory` to disk, then write its marker (synced too): each
    file's size, and its checksum."""
    files: dict[str, int] = {}
    sums: dict[str, str] = {}
    algorithm = "blake2b"
    for rel, path in _files(directory):
        atomic.fsync(path)
        files[rel] = path.stat().st_size
        algorithm, hasher = _hasher() or ("blake2b", hashlib.blake2b(digest_size=16))
        sums[rel] = _digest(path, hasher)
    marker = {
        "kind": kind,
        "step": step,
        "saved": now(),
        "sftkit_version": __version__,
        **extra,
        "files": files,
        "checksums": {"algorithm": algorithm, "files": sums},
    }
    text = json.dumps(marker, indent=2, allow_nan=False) + "\n"
    atomic.write_text(complete_marker(directory), text, sync=True)
    atomic.fsync(directory, directory=True)
    return marker


def publish(partial: Path, target: Path, *, kind: str, step: int, **extra: Any) -> None:
    """Mark `partial` complete and rename it to `target`, replacing a previous `target`
    only once the new one is complete."""
    open_to_umask(partial)  # safetensors writes 0600
    write_marker(partial, kind=kind, step=step, **extra)
    target.parent.mkdir(parents=True, exist_ok=True)
    # `discard_partial` finishes a swap a stop cut between its renames
    atomic.replace_dir(partial, target, aside=partial.with_name(f"{partial.name}.replaced"))
    with contextlib.suppress(OSError):  # .partial/ itself, once nothing is in the making
        partial.parent.rmdir()


def discard_partial(paths: RunPaths) -> list[str]:
    """Clear .partial/ for a new attempt; the names of the unfinished saves removed.

    A stop between `publish`'s two renames leaves the target missing, the new folder
    complete under .partial/ and the old one beside it as ``<name>.replaced``: the complete
    one is put in place (the new, else the old) instead of being discarded."""
    if not paths.partial.is_dir():
        return []
    for entry in sorted(paths.partial.iterdir()):
        name = entry.name.removesuffix(".replaced")
        target = paths.final if name == "final" else paths.checkpoints / name
        if target.exists() or not complete_marker(entry).is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(entry, target)
    names = sorted(p.name for p in paths.partial.iterdir() if not p.name.endswith(".replaced"))
    shutil.rmtree(paths.partial, ignore_errors=True)
    return names


def _safetensors_problem(path: Path, size: int) -> str | None:
    """A truncated or overwritten safetensors file, from its header alone."""
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else -1
            if length < 2 or length > size - 8:
                return "its header is cut short"
            header = json.loads(handle.read(length))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "its header is unreadable"
    ends = [
        v["data_offsets"][1]
        for k, v in header.items()
        if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v
    ]
    expected = 8 + length + max(ends, default=0)
    if expected != size:
        return f"it holds {size} bytes where its header promises {expected}"
    return None


def _state_problem(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "is unreadable"
    if not isinstance(data, dict) or "global_step" not in data:
        return "is not a trainer state"
    return None


def _is_weights(rel: str) -> bool:
    return rel in WEIGHT_FILES or rel.split("/", 1)[0].startswith(WEIGHT_DIR_PREFIXES)


def inspect(directory: Path, step: int, *, verify: bool = True) -> CheckpointStatus:
    """Check one checkpoint folder; see the module docstring. `verify`: the checksums too
    (a marker from before sftkit recorded them has sizes only)."""
    problems: dict[str, str] = {}  # a file, or "optimizer"/"scheduler"/..., -> what is wrong
    try:
        marker = read_marker(directory)
        if marker is None:
            problems["marker"] = "it has no completeness marker (its save was cut short)"
    except ValueError as exc:
        marker, problems["marker"] = None, str(exc)
    present = dict(_files(directory))
    listed: dict[str, int] = (marker or {}).get("files", {})
    for rel, size in listed.items():
        if rel not in present:
            problems[rel] = f"{rel} is missing"
        elif present[rel].stat().st_size != size:
            actual = present[rel].stat().st_size
            problems[rel] = f"{rel} is {actual} bytes, {size} when saved (truncated or changed)"
    for rel, path in present.items():
        problem = (
            _safetensors_problem(path, path.stat().st_size)
            if rel not in problems and rel.endswith(".safetensors")
            else None
        )
        if problem:
            problems[rel] = f"{rel} is damaged: {problem}"
    if TRAINER_STATE not in present:
        problems.setdefault(TRAINER_STATE, f"{TRAINER_STATE} is missing")
    elif TRAINER_STATE not in problems and (problem := _state_problem(present[TRAINER_STATE])):
        problems[TRAINER_STATE] = f"{TRAINER_STATE} {problem}"
    # Last: a file that reads as damaged already says more than a differing checksum.
    sums = (marker or {}).get("checksums") or {}
    for rel, expected in (sums.get("files") or {}).items() if verify else ():
        if (
            rel in present
            and rel not in problems
            and _changed(present[rel], sums["algorithm"], expected)
        ):
            problems[rel] = (
                f"{rel} has changed since it was saved (its checksum differs; same size)"
            )
    for rel, path in present.items() if verify else ():  # after the checksums: cheap to read
        found = pickles.problem(path, rel) if pickles.is_loaded_pickle(rel) else None
        if found and rel not in problems:
            problems[rel] = found
    top = {rel.split("/", 1)[0] for rel in present}
    if not top & set(OPTIMIZER_FILES) and not any(
        "/" in rel and rel.startswith(OPTIMIZER_DIR_PREFIX) for rel in present
    ):
        problems["optimizer"] = "it has no optimizer state (optimizer.pt)"
    if SCHEDULER not in top:
        problems["scheduler"] = f"it has no learning-rate scheduler state ({SCHEDULER})"
    weights = {rel for rel in (*present, *listed) if _is_weights(rel)}
    if not weights:
        problems["weights"] = "it holds no model weights"
    has_weights = bool(weights) and not (weights | {TRAINER_STATE}) & problems.keys()
    # A save cut short is the whole story; otherwise the first damaged file says most.
    first = problems.get("marker") or next(iter(problems.values()), None)
    return CheckpointStatus(directory, step, first, has_weights, marker or {})


def choose_checkpoint(
    paths: RunPaths, *, weights_only: bool = False, verify: bool = True
) -> ResumePoint:
    """The newest checkpoint an exact resume can use, with the newer ones skipped.

    With `weights_only`, the newest with intact weights and trainer state is taken even
    without optimizer or scheduler state. Without it, when no checkpoint is complete but one
    has weights, `RunDirectoryError` says so (resuming it would silently restart the
    optimizer and the schedule). Checkpoints are inspected newest first, and only until
    one is chosen (checksums read the files). `verify=False` skips the checksums and the
    pickle check."""
    skipped: list[CheckpointStatus] = []
    for step, path in reversed(paths.checkpoint_dirs()):
        status = inspect(path, step, verify=verify)
        if status.problem is None:
            return ResumePoint(status, tuple(skipped))
        if weights_only and status.has_weights:
            return ResumePoint(status, tuple(skipped), weights_only=True)
        skipped.append(status)
    usable = next((s for s in skipped if s.has_weights), None)
    if usable is not None:
        raise RunDirectoryError(
            f"cannot resume {paths.root} exactly: no checkpoint is complete (an exact resume "
            f"needs the optimizer and scheduler state too); the newest with intact weights, "
            f"{usable.name}, is not: {usable.problem}.",
            hint=f"Restart from {usable.name}'s weights with a fresh optimizer (the schedule "
            "continues at its step) with `--resume --weights-only`, or start a new run.",
        )
    return ResumePoint(None, tuple(skipped))


def rotate(paths: RunPaths, keep: int | None, *, protect: str | None = None) -> list[Path]:
    """Delete complete checkpoints beyond the newest `keep` (training.save_total_limit);
    never one that is not complete, never the newest complete one, and never `protect` (the
    best checkpoint early stopping will load)."""
    if keep is None:
        return []
    complete = [path for _, path in paths.checkpoint_dirs() if complete_marker(path).is_file()]
    doomed = complete[: max(len(complete) - max(keep, 1), 0)]
    if protect is not None:
        doomed = [path for path in doomed if str(path) != str(protect)]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def final_marker(paths: RunPaths) -> dict[str, Any] | None:
    """final/'s marker if final/ is complete (every listed file at its size), else None."""
    try:
        marker = read_marker(paths.final)
    except ValueError:
        return None
    if marker is None:
        return None
    for rel, size in marker["files"].items():
        path = paths.final / rel
        if not path.is_file() or path.stat().st_size != size:
            return None
    return marker
