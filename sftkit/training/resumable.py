"""The trainer's side of runs that resume exactly: atomic checkpoints, and the loss window.

`resumable_trainer(cls, ctx)` subclasses the (engine's) trainer class so that

- every checkpoint is assembled under ``<run>/.partial/`` and published complete
  (`sftkit.training.checkpoints.publish`), then the complete ones beyond
  training.save_total_limit are rotated out (the trainer's own rotation, which counts
  half-written folders, is off);
- each process also stores, beside the checkpoint, the part of the trainer's loss
  bookkeeping a checkpoint does not hold: the loss summed since the last log, the step of
  that log, the sum behind the whole run's train_loss, TRL's per-step metrics and token
  count, and the training time so far (`carry`). `CarryCallback` puts it back before the
  first resumed step, so a run stopped at any step logs the same losses as one that was
  never stopped, and its train_loss and runtime cover the whole run;
- a weights-only restart (`sftkit run --resume --weights-only`) starts a fresh optimizer and
  fast-forwards the learning-rate schedule to the checkpoint's step.

The bookkeeping lives in attributes of transformers' `Trainer` (``_tr_loss``,
``_globalstep_last_logged``, ``_total_loss_scalar``, set just before ``on_train_begin``) and
TRL's `SFTTrainer` (``_metrics``, ``_total_train_tokens``); they are private, so each is
read and written only if present, and tests/test_faults.py checks exactness end to end.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from sftkit.errors import TrainingDivergedError
from sftkit.runpaths import carry_file
from sftkit.training.checkpoints import publish, rotate
from sftkit.training.context import RunContext
from sftkit.training.runfiles import disk_full


class AlreadyTrained(Exception):
    """Raised at the start of training when the resumed checkpoint is at the last step."""


def resumable_trainer(base: type, ctx: RunContext) -> type:
    """`base` with atomic checkpoints, the loss window carried and weights-only restarts."""
    paths = ctx.paths
    keep = ctx.recipe.training.save_total_limit

    class ResumableTrainer(base):
        def _get_output_dir(self, trial: Any) -> str:
            # transformers saves into <this>/checkpoint-<step>: assemble it under .partial/.
            return str(paths.partial)

        def _save_checkpoint(self, model: Any, trial: Any) -> None:
            step = self.state.global_step
            window = carry(self, ctx)
            if not math.isfinite(window["tr_loss"]):
                raise TrainingDivergedError(step, window["tr_loss"])
            partial = paths.partial_checkpoint(step)
            writer = bool(self.args.should_save)
            if writer:
                shutil.rmtree(partial, ignore_errors=True)
            try:
                super()._save_checkpoint(model, trial)
                if writer:
                    self._point_best_at_published(partial, paths.checkpoint(step))
                target = carry_file(partial, self.args.process_index)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(window), encoding="utf-8")
                self.accelerator.wait_for_everyone()
                if writer:
                    publish(
                        partial,
                        paths.checkpoint(step),
                        kind="checkpoint",
                        step=step,
                        max_steps=self.state.max_steps,
                    )
                    rotate(paths, keep, protect=self.state.best_model_checkpoint)
            except BaseException as exc:
                full = disk_full(exc, paths.root, f"saving checkpoint-{step}")  # before freeing
                if writer:
                    shutil.rmtree(partial, ignore_errors=True)
                    with contextlib.suppress(OSError):
                        partial.parent.rmdir()
                if full is not None:
                    raise full from exc
                raise
            self.accelerator.wait_for_everyone()

        def _point_best_at_published(self, partial: Path, published: Path) -> None:
            """transformers records the best checkpoint (training.early_stopping) by the
            folder it saved into, here under .partial/: name the folder it is renamed to,
            in the state and in the checkpoint's trainer_state.json, before it is sealed."""
            if self.state.best_model_checkpoint != str(partial):
                return
            self.state.best_model_checkpoint = str(published)
            state_file = partial / "trainer_state.json"
            if state_file.is_file():
                self.state.save_to_json(str(state_file))

        def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
            if checkpoint is not None and ctx.weights_only:
                fast_forward(self.lr_scheduler, self.state.global_step)
                return
            super()._load_optimizer_and_scheduler(checkpoint)

    ResumableTrainer.__name__ = ResumableTrainer.__qualname__ = f"Resumable{base.__name__}"
    return ResumableTrainer


def carry(trainer: Any, ctx: RunContext) -> dict[str, Any]:
    """What this process must carry across a checkpoint (see the module docstring)."""
    tr_loss = getattr(trainer, "_tr_loss", None)
    metrics = getattr(trainer, "_metrics", {}).get("train", {})
    return {
        "step": trainer.state.global_step,
        "tr_loss": float(tr_loss.item()) if tr_loss is not None else 0.0,
        "last_logged": getattr(trainer, "_globalstep_last_logged", trainer.state.global_step),
        "total_loss": getattr(trainer, "_total_loss_scalar", 0.0),
        "trl_metrics": {key: list(values) for key, values in metrics.items()},
        "train_tokens": getattr(trainer, "_total_train_tokens", None),
        "train_runtime_s": ctx.runtime_s(),
    }


def load_carry(checkpoint: Path, process: int) -> dict[str, Any]:
    """The carried state a checkpoint holds for `process` ({} for one without)."""
    path = carry_file(checkpoint, process)
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data


def fast_forward(scheduler: Any, step: int) -> None:
    """Step a fresh learning-rate scheduler to `step`, as the interrupted run had."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()"
        for _ in range(step):
            scheduler.step()


class CarryCallback(TrainerCallback):
    """Restores the carried state before the first resumed step; raises `AlreadyTrained`
    when the checkpoint is at the last step (the trainer would train one more); makes the
    end-of-training summary cover the whole run. First in the callback list."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        ctx, trainer = self.ctx, self.ctx.trainer
        ctx.train_started = time.perf_counter()
        saved = ctx.carried
        if saved and trainer is not None:
            import torch

            trainer._tr_loss = torch.tensor(saved["tr_loss"], device=args.device)
            trainer._globalstep_last_logged = saved["last_logged"]
            trainer._total_loss_scalar = saved["total_loss"]
            metrics = getattr(trainer, "_metrics", {}).get("train")
            if metrics is not None:
                metrics.clear()
                metrics.update({k: list(v) for k, v in saved.get("trl_metrics", {}).items()})
            if saved.get("train_tokens") is not None and hasattr(trainer, "_total_train_tokens"):
                trainer._total_train_tokens = saved["train_tokens"]
        if ctx.resumed_from is not None and state.global_step >= state.max_steps:
            raise AlreadyTrained

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if not logs or "train_runtime" not in logs or not self.ctx.carried:
            return
        # The trainer's summary covers this process's part of the run; make it the whole.
        trainer = self.ctx.trainer
        steps = max(state.global_step, 1)
        total = getattr(trainer, "_total_loss_scalar", None)
        if total is not None:
            logs["train_loss"] = total / steps
        this_part = float(logs["train_runtime"])
        runtime = this_part + float(self.ctx.carried.get("train_runtime_s", 0.0))
        logs["train_runtime"] = round(runtime, 4)
        if runtime > 0:
            done = state.global_step - int(self.ctx.carried.get("step", 0))
            samples = logs.get("train_samples_per_second", 0.0) * this_part
            per_step = samples / done if done > 0 else 0.0
            logs["train_steps_per_second"] = round(steps / runtime, 3)
            logs["train_samples_per_second"] = round(per_step * steps / runtime, 3)
