"""Trainer callbacks: metrics.jsonl with throughput, the plugin lifecycle hooks, and the
training stage of sftkit's progress display. They run in that order, so the hooks and TensorBoard see tokens_per_second."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from rich.console import Console
from transformers import TrainerCallback

from sftkit.errors import TrainingDivergedError
from sftkit.progress import Display, Stage, console_display, current
from sftkit.training.context import RunContext
from sftkit.training.runfiles import finite


class MetricsCallback(TrainerCallback):
    """Adds ``tokens_per_second`` and ``elapsed_s`` (training time of the whole run, earlier
    attempts included) to each log event and appends it to metrics.jsonl (one JSON object
    per event). A NaN or infinite loss is logged, then stops the run
    (`TrainingDivergedError`)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.last_time = time.perf_counter()
        self.last_tokens = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.last_time = time.perf_counter()
        self.last_tokens = float(self.ctx.carried.get("train_tokens") or 0)  # a resumed run's

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if logs is None or not state.is_world_process_zero:
            return
        now = time.perf_counter()
        tokens = logs.get("num_tokens")  # TRL: non-padding tokens seen in this process
        if tokens is not None and "loss" in logs and now > self.last_time:
            logs["tokens_per_second"] = (float(tokens) - self.last_tokens) / (now - self.last_time)
            self.last_tokens, self.last_time = float(tokens), now
        # an evaluation's eval_loss, eval_gsm8k/accuracy, ... are eval/loss, ... as in TensorBoard
        shown = {(f"eval/{k[5:]}" if k.startswith("eval_") else k): v for k, v in logs.items()}
        event = {"step": state.global_step, "epoch": state.epoch, **shown}
        event["elapsed_s"] = round(self.ctx.clock.seconds(), 3)
        self.ctx.metrics.update(logs)
        with self.ctx.paths.metrics.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(finite(event)) + "\n")
        loss = logs.get("loss")
        if isinstance(loss, float) and not math.isfinite(loss):
            raise TrainingDivergedError(state.global_step, loss)


def lifecycle_hooks(manager: Any, *, main: bool) -> Any:
    """The plugins' lifecycle hooks this process calls: all of them on the main process,
    on the others only those marked `sftkit.every_process` (None when there are none)."""
    if main:
        return manager.hook
    from sftkit.hookspecs import EVERY_PROCESS

    names = ("on_train_start", "on_log", "on_train_end")
    impls = [i for name in names for i in getattr(manager.pm.hook, name).get_hookimpls()]
    marked = {i.plugin for i in impls if getattr(i.function, EVERY_PROCESS, False)}
    if not marked:
        return None
    others = [plugin for plugin in manager.pm.get_plugins() if plugin not in marked]
    return _Subset(manager.pm, others)


class _Subset:
    """``hook.on_log(...)`` for the lifecycle hooks of every plugin not in `removed`."""

    def __init__(self, pm: Any, removed: list[Any]) -> None:
        self.pm, self.removed = pm, removed

    def __getattr__(self, name: str) -> Any:
        return self.pm.subset_hook_caller(name, self.removed)


class HooksCallback(TrainerCallback):
    """Calls the plugins' on_train_start / on_log / on_train_end hooks. `on_log` gets the
    trainer's values plus ``step`` (global step) and ``elapsed_s``, as metrics.jsonl has."""

    def __init__(self, ctx: RunContext, hook: Any) -> None:
        self.ctx, self.hook = ctx, hook

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.hook.on_train_start(run=self.ctx.view())

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if logs is not None:  # elapsed_s: earlier attempts' training time included
            elapsed = round(self.ctx.clock.seconds(), 3)
            event = {**logs, "step": state.global_step, "elapsed_s": elapsed}
            self.hook.on_log(run=self.ctx.view(), logs=event)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.hook.on_train_end(run=self.ctx.view(), metrics=dict(self.ctx.metrics))


class RichProgressCallback(TrainerCallback):
    """Training as a stage of sftkit's progress display: optimizer steps done of the total,
    with the last loss; each log event is also printed as one line (the only output where
    there is no terminal, as in CI logs)."""

    def __init__(self, display: Display | Console | None = None) -> None:
        if isinstance(display, Console):
            display = console_display(display)
        self.display = display or current()
        self.stage: Stage | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.stage = self.display.open(
            "train", state.max_steps or None, done=state.global_step, keep=True
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.stage is not None:
            self.stage.update(state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if not logs or "loss" not in logs:
            return
        if self.stage is not None:
            self.stage.update(note=f"loss {logs['loss']:.4f}")
        self.display.say(f"step {state.global_step}/{state.max_steps}  {_status(logs)}")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.stage is not None:
            self.stage.update(state.global_step)
            self.stage.close()
            self.stage = None


def _status(logs: dict[str, Any]) -> str:
    parts = [f"loss {logs['loss']:.4f}"]
    if "reward" in logs:  # a reinforcement objective's mean reward (TRL's key)
        parts.append(f"reward {logs['reward']:.3f}")
    if "learning_rate" in logs:
        parts.append(f"lr {logs['learning_rate']:.2e}")
    if "grad_norm" in logs and logs["grad_norm"] is not None:
        parts.append(f"grad {float(logs['grad_norm']):.3f}")
    if "tokens_per_second" in logs:
        parts.append(f"{logs['tokens_per_second']:,.0f} tok/s")
    return "  ".join(parts)
