"""Trainer callbacks: metrics.jsonl with throughput, the plugin lifecycle hooks, and a rich
progress bar. They run in that order, so the hooks and TensorBoard see tokens_per_second."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from transformers import TrainerCallback

from sftkit.training.context import RunContext

# Key names in metrics.jsonl (the trainer's own names, plus ours).
SUMMARY_KEYS = ("train_runtime", "train_loss", "train_samples_per_second", "train_steps_per_second")


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them visible as text
    return value


class MetricsCallback(TrainerCallback):
    """Adds ``tokens_per_second`` and ``elapsed_s`` to each log event and appends it to
    metrics.jsonl (one JSON object per event)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.started = time.perf_counter()
        self.last_time = self.started
        self.last_tokens = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = self.last_time = time.perf_counter()
        self.last_tokens = 0.0

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
        event["elapsed_s"] = round(now - self.started, 3)
        self.ctx.metrics.update(logs)
        with self.ctx.paths.metrics.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({k: _plain(v) for k, v in event.items()}) + "\n")


class HooksCallback(TrainerCallback):
    """Calls the plugins' on_train_start / on_log / on_train_end hooks. `on_log` gets the
    trainer's values plus ``step`` (global step) and ``elapsed_s``, as metrics.jsonl has."""

    def __init__(self, ctx: RunContext, hook: Any) -> None:
        self.ctx = ctx
        self.hook = hook
        self.started = time.perf_counter()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = time.perf_counter()
        self.hook.on_train_start(run=self.ctx)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if logs is not None:
            elapsed = round(time.perf_counter() - self.started, 3)
            event = {**logs, "step": state.global_step, "elapsed_s": elapsed}
            self.hook.on_log(run=self.ctx, logs=event)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.hook.on_train_end(run=self.ctx, metrics=dict(self.ctx.metrics))


class RichProgressCallback(TrainerCallback):
    """A progress bar over optimizer steps, with the last loss, lr and throughput; each log
    event is also printed as one line (visible in CI logs where the bar is not)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress: Progress | None = None
        self.task: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self.console.is_terminal:
            return  # logs, CI: the per-log lines alone
        self.progress = Progress(
            TextColumn("[bold]train[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=state.max_steps, completed=state.global_step, status=""
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if not logs or "loss" not in logs:
            return
        status = _status(logs)
        line = f"step {state.global_step}/{state.max_steps}  {status}"
        if self.progress is not None:
            self.progress.update(self.task, status=status)
            self.progress.console.print(line, highlight=False)
        else:
            self.console.print(line, highlight=False)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)
            self.progress.stop()
            self.progress = None


def _status(logs: dict[str, Any]) -> str:
    parts = [f"loss {logs['loss']:.4f}"]
    if "learning_rate" in logs:
        parts.append(f"lr {logs['learning_rate']:.2e}")
    if "grad_norm" in logs and logs["grad_norm"] is not None:
        parts.append(f"grad {float(logs['grad_norm']):.3f}")
    if "tokens_per_second" in logs:
        parts.append(f"{logs['tokens_per_second']:,.0f} tok/s")
    return "  ".join(parts)
