"""Claiming a run directory (never silently overwriting another run), and writing the files
that describe a run besides its checkpoints: recipe.yaml, memory.json, environment.json,
run.json. Where each file lives is `sftkit.runpaths`'s business."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sftkit._version import __version__
from sftkit.errors import RunDirectoryError
from sftkit.runpaths import DATA_DIR, RunPaths, last_checkpoint

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe

# Entries a directory may already hold without being another run: prepared data
# (`sftkit prepare-data` writes <output_dir>/data by default).
REUSABLE = frozenset({DATA_DIR})
# Keys that may change when a run is resumed (training longer is what resuming is for).
RESUME_MAY_CHANGE = (("training", "max_steps"), ("training", "epochs"))
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


def check_run_dir(paths: RunPaths, resolved: ResolvedRecipe, *, resume: bool) -> None:
    """Raise `RunDirectoryError` unless this run may use `paths.root`.

    A fresh run needs a missing or empty directory (prepared data excepted); a resumed one
    needs this run's own directory, with a checkpoint and the same recipe.
    """
    root = paths.root
    occupied = (
        sorted(p.name for p in root.iterdir() if p.name not in REUSABLE) if root.is_dir() else []
    )
    if root.exists() and not root.is_dir():
        raise RunDirectoryError(f"output directory {root} exists and is not a directory.")
    if not resume:
        if occupied:
            raise RunDirectoryError(
                f"output directory {root} already holds a run ({', '.join(occupied[:5])}"
                f"{', ...' if len(occupied) > 5 else ''}); sftkit never overwrites a run.",
                hint="Continue it with --resume, choose another directory with --output-dir, "
                "or delete it yourself.",
            )
        return
    if not paths.recipe.is_file():
        raise RunDirectoryError(
            f"cannot resume: {root} holds no run (no recipe.yaml).",
            hint="Start the run without --resume.",
        )
    if last_checkpoint(paths) is None:
        raise RunDirectoryError(
            f"cannot resume: {paths.checkpoints} has no checkpoint-<step> directory.",
            hint="Set training.save_steps so runs save checkpoints, or start a new run.",
        )
    saved = yaml.safe_load(paths.recipe.read_text(encoding="utf-8"))
    changed = _differences(
        _without_resumable(saved), _without_resumable(resolved_recipe_data(resolved))
    )
    if changed:
        raise RunDirectoryError(
            f"cannot resume {root}: the recipe differs from the one it was started with "
            f"({', '.join(changed[:5])}).",
            hint="Resume with the same recipe and overrides (only training.max_steps and "
            "training.epochs may change), or start a new run in another directory.",
        )


def _without_resumable(data: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(json.dumps(data))
    for section, key in RESUME_MAY_CHANGE:
        data.get(section, {}).pop(key, None)
    data.pop("description", None)
    return data


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out.extend(_differences(a.get(key), b.get(key), f"{prefix}{key}."))
        return out
    return [prefix.rstrip(".")] if a != b else []


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


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
    paths.recipe.write_text(header + body, encoding="utf-8")


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


def update_run_json(paths: RunPaths, **fields: Any) -> dict[str, Any]:
    data = read_json(paths.run)
    data.update(fields)
    write_json(paths.run, data)
    return data
