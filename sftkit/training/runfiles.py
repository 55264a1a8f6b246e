"""Claiming a run directory (never silently overwriting another run), and writing the files
that describe a run besides its checkpoints: recipe.yaml, memory.json, environment.json,
run.json. Where each file lives is `sftkit.runpaths`'s business."""

from __future__ import annotations

import errno
import json
import math
import os
import platform
import shutil
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sftkit import atomic
from sftkit._version import __version__
from sftkit.errors import DiskFullError, RunDirectoryError
from sftkit.oserrors import check_can_create
from sftkit.runpaths import DATA_DIR, LOCK_FILE, LOG_FILE, RunPaths

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe

# Entries a directory may already hold without being another run: prepared data
# (`sftkit prepare-data` writes <output_dir>/data by default), the lock we hold, and the
# log of a run that stopped before writing recipe.yaml (appended to).
REUSABLE = frozenset({DATA_DIR, LOCK_FILE, LOG_FILE})
# Keys that may change when a run is resumed: its length, only where the learning-rate
# schedule does not depend on it (`_length_change`).
RESUME_MAY_CHANGE = (("training", "max_steps"), ("training", "epochs"))
# Compared as anything but text: where the run lives is wherever it is now (a run moved
# elsewhere, or spelled another way, is still the same run).
NOT_COMPARED = (("output_dir",), ("description",))
# Free-form mappings, compared whole: an entry added at resume is a change too (a run
# started before the mapping existed ran with it empty).
COMPARED_WHOLE = (("training", "trainer_args"),)
# Schedules whose learning rate at a step does not depend on the run's total steps.
LENGTH_FREE_SCHEDULES = frozenset({"constant"})
PACKAGES = (
    "torch",
    "transformers",
    "trl",
    "peft",
    "bitsandbytes",
    "accelerate",
    "datasets",
    "tokenizers",
    "safetensors",
)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def resolved_recipe_data(resolved: ResolvedRecipe) -> dict[str, Any]:
    """The recipe with every default filled in, component options included."""
    data: dict[str, Any] = resolved.recipe.model_dump(mode="json")
    data["strategy"]["options"] = resolved.strategy.options.model_dump(mode="json")
    data["optimizer"]["options"] = resolved.optimizer.options.model_dump(mode="json")
    data["data"]["format"]["options"] = resolved.data_format.options.model_dump(mode="json")
    if resolved.mixture:  # data.format is not read: leave it out, as the recipe did
        del data["data"]["format"]
        for source, part in zip(data["data"]["mixture"]["datasets"], resolved.mixture, strict=True):
            source["format"]["options"] = part.options.model_dump(mode="json")
    data["data"]["template"]["options"] = resolved.template.options.model_dump(mode="json")
    for ref, component in zip(data["evaluation"]["evaluators"], resolved.evaluators, strict=True):
        ref["options"] = component.options.model_dump(mode="json")
    return data


def check_run_dir(paths: RunPaths, resolved: ResolvedRecipe, *, resume: bool) -> list[str]:
    """Raise `RunDirectoryError` unless this run may use `paths.root`; notes to print.

    A fresh run needs a missing or empty directory (prepared data excepted); a resumed one
    needs this run's own directory and the same recipe (a resume with no checkpoint to
    continue from starts over: `sftkit.training.resume`). Read-only.
    """
    root = paths.root
    check_can_create(root, "output directory")  # a file in the way, read-only, permissions
    occupied = (
        sorted(p.name for p in root.iterdir() if p.name not in REUSABLE) if root.is_dir() else []
    )
    if is_unstarted(paths):  # nothing to lose: free to reuse (the plan says so)
        return []
    if not resume:
        shown = f"{', '.join(occupied[:5])}{', ...' if len(occupied) > 5 else ''}"
        if occupied and not paths.recipe.is_file():
            raise RunDirectoryError(
                f"output directory {root} is not empty ({shown}) and is not a run directory; "
                "a run starts in a new or empty directory.",
                hint="Choose a new directory with --output-dir (or output_dir=...).",
            )
        if occupied:
            raise RunDirectoryError(
                f"output directory {root} already holds a run ({shown}); sftkit never "
                "overwrites a run.",
                hint="Continue it with --resume, choose another directory with --output-dir, "
                "or delete it yourself.",
            )
        return []
    if not paths.recipe.is_file():
        raise RunDirectoryError(
            f"cannot resume: {root} holds no run (no recipe.yaml).",
            hint="Start the run without --resume.",
        )
    try:
        saved = yaml.safe_load(paths.recipe.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RunDirectoryError(f"cannot resume: {paths.recipe} is unreadable ({exc}).") from exc
    if not isinstance(saved, dict):
        raise RunDirectoryError(f"cannot resume: {paths.recipe} is not a recipe.")
    current = resolved_recipe_data(resolved)
    changed = _differences(_comparable(saved), _comparable(current))
    if changed:
        raise RunDirectoryError(
            f"cannot resume {root}: the recipe differs from the one it was started with "
            f"({', '.join(changed[:5])}).",
            hint="Resume with the same recipe and overrides (training.max_steps and "
            "training.epochs may change with a constant learning rate), or start a new run "
            "in another directory.",
        )
    return _length_change(saved.get("training") or {}, current["training"])


def is_unstarted(paths: RunPaths) -> bool:
    """Is `paths` a run directory whose run stopped before completing a step? One sftkit
    started (recipe.yaml and run.json) with no checkpoint (not even a partial one), no
    final/ and no step logged: nothing a rerun could lose."""
    if not (paths.recipe.is_file() and paths.run.is_file()):
        return False
    if paths.checkpoint_dirs() or paths.final.exists():
        return False
    if paths.partial.is_dir() and any(paths.partial.iterdir()):
        return False
    return not any(event.get("step", 0) > 0 for event in events(paths))


def unstarted_note(paths: RunPaths, record: dict[str, Any]) -> str:
    how = record.get("status") or "stopped"
    error = f": {record['error']}" if record.get("error") else ""
    return (
        f"reusing {paths.root}: the run there ({how}{error}) stopped before its first step, "
        "so nothing in it is lost."
    )


def events(paths: RunPaths) -> list[dict[str, Any]]:
    """The whole events of metrics.jsonl (a half-written last line is left out)."""
    if not paths.metrics.is_file():
        return []
    events = []
    for line in paths.metrics.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def _length_change(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """A changed max_steps/epochs: fine with a constant schedule (said so), refused with one
    laid out over the run's total steps (the lr would jump at the resumed step)."""
    changes = [
        f"training.{key} {saved.get(key)} -> {current.get(key)}"
        for _, key in RESUME_MAY_CHANGE
        if key in saved and saved.get(key) != current.get(key)
    ]
    if not changes:
        return []
    schedule = current.get("lr_scheduler")
    if schedule in LENGTH_FREE_SCHEDULES:
        return [f"resuming with {', '.join(changes)}: the {schedule} learning rate is unchanged."]
    raise RunDirectoryError(
        f"cannot resume with {', '.join(changes)}: the {schedule} learning-rate schedule is "
        "laid out over the run's total steps, so changing them now would re-stretch it and "
        "the learning rate would jump at the resumed step.",
        hint="Resume with the values the run started with (see its recipe.yaml); to train "
        "further, start a new run from this one, or use training.lr_scheduler=constant.",
    )


def _comparable(data: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(json.dumps(data, default=str))
    for keys in (*RESUME_MAY_CHANGE, *NOT_COMPARED):
        section = data
        for key in keys[:-1]:
            section = section.get(key) or {}
        section.pop(keys[-1], None)
    for keys in COMPARED_WHOLE:
        section = data
        for key in keys[:-1]:
            section = section.setdefault(key, {})
        section[keys[-1]] = json.dumps(section.get(keys[-1]) or {}, sort_keys=True)
    return data


def _differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Key paths where `current` differs from `saved`. A key the saved recipe lacks is a
    setting newer than the run (it ran with that setting's default), not a difference."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out: list[str] = []
        for key in sorted(set(saved) | set(current)):
            if key not in saved:
                continue
            out.extend(_differences(saved.get(key), current.get(key), f"{prefix}{key}."))
        return out
    return [prefix.rstrip(".")] if saved != current else []


def finite(data: Any) -> Any:
    """`data` with NaN and infinities as text ("nan", "inf"): JSON has no such numbers."""
    if isinstance(data, float) and not math.isfinite(data):
        return str(data)
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v) for v in data]
    return data


def write_json(path: Path, data: Any) -> None:
    """Write `data` as JSON atomically: readers see the old file or the new one, whole.
    A write that fails (a full disk) leaves the old file and no temporary behind."""
    text = json.dumps(finite(data), indent=2, default=str, allow_nan=False) + "\n"
    atomic.write_text(path, text, sync=True)


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def write_recipe(paths: RunPaths, resolved: ResolvedRecipe) -> None:
    header = (
        f"# The resolved recipe of this run (every default filled in).\n"
        f"# Source: {resolved.source}"
        + (f"  overrides: {' '.join(resolved.overrides)}" if resolved.overrides else "")
        + "\n"
    )
    body = yaml.safe_dump(resolved_recipe_data(resolved), sort_keys=False, allow_unicode=True)
    atomic.write_text(paths.recipe, header + body)  # it makes a directory a run: whole or absent


def environment(device: str) -> dict[str, Any]:
    versions: dict[str, str | None] = {"python": platform.python_version(), "sftkit": __version__}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    info: dict[str, Any] = {
        **versions,
        "platform": platform.platform(),
        "executable": sys.executable,
        "cpu_count": os.cpu_count(),
        "device": device,
    }
    import torch

    info["torch_threads"] = torch.get_num_threads()
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["cuda"] = {
            "device_name": props.name,
            "device_count": torch.cuda.device_count(),
            "total_memory_bytes": props.total_memory,
            "capability": f"{props.major}.{props.minor}",
            "cuda_version": torch.version.cuda,
        }
    return info


def update_run_json(
    paths: RunPaths, *, drop: tuple[str, ...] = (), **fields: Any
) -> dict[str, Any]:
    """Merge `fields` into run.json (removing the `drop` keys) and write it atomically."""
    data = read_json(paths.run)
    for key in drop:
        data.pop(key, None)
    data.update(fields)
    write_json(paths.run, data)
    return data


# How a full disk shows through the libraries that write checkpoints: an OSError, torch's
# "PytorchStreamWriter failed writing file ...: file write failed", safetensors' StorageFull.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
DISK_FULL_TEXT = ("No space left", "StorageFull", "file write failed", "Disk quota exceeded")
FULL_MARGIN = 16 * 2**20  # a write that failed with less than this free ran out of space


def disk_full(exc: BaseException, where: Path, doing: str) -> DiskFullError | None:
    """A `DiskFullError` if `exc` (or its cause) is a full disk, else None. torch reports a
    short write only as "unexpected pos N vs M", so a failure on a disk with (next to)
    nothing free counts too: call this before freeing what the failed write left."""
    try:
        probe = next(p for p in (where, *where.parents) if p.exists())
        usage = shutil.disk_usage(probe)
    except (OSError, StopIteration):
        usage = None
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DiskFullError):
            return seen
        if (isinstance(seen, OSError) and seen.errno in DISK_FULL_ERRNOS) or any(
            text in str(seen) for text in DISK_FULL_TEXT
        ):
            break
        seen = seen.__cause__ or seen.__context__
    else:
        if usage is None or usage.free >= min(FULL_MARGIN, usage.total // 100):
            return None
        seen = exc
    free = f"; {usage.free / 2**20:.1f} MiB free" if usage is not None else ""
    return DiskFullError(
        f"the disk holding {where} is full{free}: {doing} failed ({type(seen).__name__}: "
        f"{str(seen).strip()[:200]}).",
        hint="Nothing complete was lost. Free some space, then continue with --resume.",
    )
