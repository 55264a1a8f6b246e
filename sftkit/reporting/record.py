"""Reading a run directory back (no torch): recipe, status, memory, metrics, evaluations.

Everything is read as plain data, never re-resolved through the registry, so a report can
be built for a run whose plugins are no longer installed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sftkit.errors import RunDirectoryError
from sftkit.evaluation.base import StoredEval, read_run_evals
from sftkit.runpaths import RECIPE_FILE, RunPaths


@dataclass
class RunRecord:
    path: Path
    recipe: dict[str, Any]
    run: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] | None = None
    environment: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    evals: list[StoredEval] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def train_events(self) -> list[dict[str, Any]]:
        """Log events of training steps (they carry a loss and no eval/ keys)."""
        return [
            e
            for e in self.events
            if "loss" in e and "step" in e and not any(k.startswith("eval/") for k in e)
        ]

    def section(self, *keys: str) -> Any:
        node: Any = self.recipe
        for key in keys:
            if not isinstance(node, dict):
                return None
            node = node.get(key)
        return node


def load_run(path: Path) -> RunRecord:
    """Read the run directory at `path`; a missing recipe.yaml means it is not one."""
    paths = RunPaths(path)
    recipe_path = paths.recipe
    if not recipe_path.is_file():
        raise RunDirectoryError(
            f"{path} is not a run directory: it has no {RECIPE_FILE}.",
            hint="Pass the output_dir of a `sftkit run` (e.g. runs/quickstart).",
        )
    warnings: list[str] = []
    try:
        recipe = yaml.safe_load(recipe_path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RunDirectoryError(f"cannot read {recipe_path}: {exc}") from exc
    if not isinstance(recipe, dict):
        raise RunDirectoryError(f"{recipe_path} does not hold a recipe mapping.")
    record = RunRecord(path=path, recipe=recipe)
    record.run = _json(paths.run, warnings) or {}
    record.memory = _json(paths.memory, warnings)
    record.environment = _json(paths.environment, warnings)
    record.events = read_events(paths.metrics, warnings)
    record.evals = read_run_evals(path)
    record.warnings = warnings
    return record


def read_events(path: Path, warnings: list[str]) -> list[dict[str, Any]]:
    """metrics.jsonl, skipping (and noting) lines a crashed run may have left half-written."""
    if not path.is_file():
        return []
    events: list[dict[str, Any]] = []
    bad = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(event, dict):
            events.append(event)
    if bad:
        warnings.append(f"{path.name}: skipped {bad} unreadable line(s).")
    return events


def _json(path: Path, warnings: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        warnings.append(f"{path.name}: unreadable ({exc}).")
        return None
    return data if isinstance(data, dict) else None
