"""The run directory's layout: every file and folder in it is named here and nowhere else.

```
<run>/recipe.yaml          the resolved recipe (its presence makes a directory a run)
<run>/memory.json          the memory estimate the run was admitted with
<run>/environment.json     versions, platform, device
<run>/run.json             status, times, the training summary
<run>/metrics.jsonl        one JSON object per log event
<run>/sftkit.log           what the libraries logged and warned (kept off the terminal)
<run>/tensorboard/         TensorBoard event files
<run>/data/                prepared splits (unless data.prepared_dir says elsewhere)
<run>/base/                a random_init run's seeded base weights
<run>/run.lock             held while a process writes into the run (pid, host, since)
<run>/checkpoints/checkpoint-<step>/   each with sftkit_complete.json once complete
<run>/final/               the trained adapter (adapter_config.json) or model, + tokenizer,
                           and sftkit_complete.json
<run>/.partial/            checkpoints and final/ while they are written (renamed into
                           place when complete; what a killed save leaves is discarded)
<run>/eval/<stage>-<evaluator>/metrics.json, predictions.jsonl
<run>/distributed/         what `sftkit launch` generated (accelerate/DeepSpeed configs,
                           launch.sh, worker_recipe.yaml)
<run>/report.md, report.html, loss.png, lr.png, eval.png, and the objective's curves
                           (rewards.png, kl.png, ...: sftkit.reporting.curves)
<run>/export/adapter/, export/merged/   `sftkit export` without / with --merge
```

Code that reads or writes a run directory asks `RunPaths` (and `EvalPaths`, `LaunchPaths`
for the folders whose layout is reused outside a run). This module imports nothing from
sftkit and no torch, so every layer may use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

RECIPE_FILE = "recipe.yaml"
DATA_DIR = "data"  # the one entry a new run may find already there (prepared data)
# transformers names checkpoints `checkpoint-<global step>` (PREFIX_CHECKPOINT_DIR).
CHECKPOINT_PREFIX = "checkpoint-"
# Written last into a checkpoint or final/: the files it holds, their sizes and checksums. A
# folder without it is not complete (its save was cut short).
COMPLETE_MARKER = "sftkit_complete.json"
LOCK_FILE = "run.lock"
PARTIAL_DIR = ".partial"
# PEFT's marker of a saved adapter (PeftModel.save_pretrained writes it).
ADAPTER_CONFIG = "adapter_config.json"
# The launch configs' folder and files (`sftkit launch`).
CONFIG_DIR = "distributed"
ACCELERATE_CONFIG = "accelerate_config.yaml"
DEEPSPEED_CONFIG = "deepspeed_config.json"
# One evaluation's results.
EVAL_METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"
# Library logging, warnings and sftkit's stage markers (`sftkit.quiet`), in any directory a
# command writes into: a run, or `sftkit eval`'s output folder for a recipe.
LOG_FILE = "sftkit.log"


class Under:
    """A path below the owner's `root`, as a read-only attribute: ``memory = Under("memory.json")``."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    def __get__(self, owner: Any, cls: type | None = None) -> Path:
        return Path(owner.root).joinpath(*self.parts)


def log_file(directory: Path) -> Path:
    """The log file of a directory sftkit writes into (a run, or an evaluation's output)."""
    return Path(directory) / LOG_FILE


@dataclass(frozen=True)
class EvalPaths:
    """One evaluation's folder, ``<out_root>/<stage>-<evaluator>[-<variant>]/``: under
    ``<run>/eval/`` for a run, or wherever ``sftkit eval --output-dir`` points. The variant
    (``first100``, ``dev-first50``) keeps evaluations of other splits or limits apart."""

    root: Path

    @classmethod
    def under(cls, out_root: Path, stage: str, evaluator: str, variant: str = "") -> EvalPaths:
        name = f"{stage}-{evaluator}" + (f"-{variant}" if variant else "")
        return cls(Path(out_root) / name)

    metrics = Under(EVAL_METRICS_FILE)
    predictions = Under(PREDICTIONS_FILE)


@dataclass(frozen=True)
class LaunchPaths:
    """What `sftkit launch` writes for the launcher: ``<run>/distributed/`` on node 0, a
    scratch folder on the other nodes."""

    root: Path

    accelerate_config = Under(ACCELERATE_CONFIG)
    deepspeed_config = Under(DEEPSPEED_CONFIG)
    launch_script = Under("launch.sh")
    # The resolved recipe of this launch, which the workers read (recipe.yaml keeps the
    # recipe the run started with; a resumed launch may change max_steps/epochs).
    worker_recipe = Under("worker_recipe.yaml")


@dataclass(frozen=True)
class RunPaths:
    """The paths of the run directory at `root` (nothing is created or checked)."""

    root: Path

    recipe = Under(RECIPE_FILE)
    lock = Under(LOCK_FILE)
    # Where checkpoints and final/ are assembled before they are renamed into place.
    partial = Under(PARTIAL_DIR)

    def partial_checkpoint(self, step: int) -> Path:
        return self.partial / f"{CHECKPOINT_PREFIX}{step}"

    partial_final = Under(PARTIAL_DIR, "final")

    memory = Under("memory.json")
    environment = Under("environment.json")
    metrics = Under("metrics.jsonl")
    run = Under("run.json")

    log = Under(LOG_FILE)

    tensorboard = Under("tensorboard")
    # Where the run's data is prepared unless ``data.prepared_dir`` is set.
    data = Under(DATA_DIR)
    base = Under("base")
    checkpoints = Under("checkpoints")

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"{CHECKPOINT_PREFIX}{step}"

    def checkpoint_dirs(self) -> list[tuple[int, Path]]:
        """Every ``checkpoint-<step>`` folder, oldest first, complete or not (which ones
        are complete is `sftkit.training.checkpoints`' business)."""
        if not self.checkpoints.is_dir():
            return []
        found = [
            (int(p.name[len(CHECKPOINT_PREFIX) :]), p)
            for p in self.checkpoints.iterdir()
            if p.is_dir()
            and p.name.startswith(CHECKPOINT_PREFIX)
            and p.name[len(CHECKPOINT_PREFIX) :].isdigit()
        ]
        return sorted(found)

    final = Under("final")

    @property
    def final_is_adapter(self) -> bool:
        """Does final/ hold a PEFT adapter (to load over the base) rather than a full model?"""
        return (self.final / ADAPTER_CONFIG).is_file()

    eval = Under("eval")

    def evaluation(self, stage: str, evaluator: str, variant: str = "") -> EvalPaths:
        return EvalPaths.under(self.eval, stage, evaluator, variant)

    @property
    def launch(self) -> LaunchPaths:
        return LaunchPaths(self.root / CONFIG_DIR)

    report_markdown = Under("report.md")
    report_html = Under("report.html")
    loss_plot = Under("loss.png")
    lr_plot = Under("lr.png")
    # The during-training evaluators' scores per step.
    eval_plot = Under("eval.png")

    def curve_plot(self, name: str) -> Path:
        """A plot of series an objective logs (``rewards``: grpo's per reward, dpo's per
        answer; ``kl``; ...: the curve sets of `sftkit.reporting.curves`)."""
        return self.root / f"{name}.png"

    def export(self, *, merged: bool) -> Path:
        """`sftkit export`'s default output folder."""
        return self.root / "export" / ("merged" if merged else "adapter")


def carry_file(checkpoint: Path, process: int) -> Path:
    """What one process carries across a checkpoint besides the trainer's files (the loss
    window since the last log, the run's time so far: `sftkit.training.trainer`)."""
    return Path(checkpoint) / f"sftkit_carry-{process}.json"


def complete_marker(directory: Path) -> Path:
    """The completeness marker of a checkpoint or final/ folder."""
    return Path(directory) / COMPLETE_MARKER


def is_run_dir(path: Path) -> bool:
    """A run directory is one with a recipe.yaml (what `sftkit run` writes first)."""
    return Path(path).is_dir() and RunPaths(Path(path)).recipe.is_file()
