"""Measuring a `transformers.Trainer` run: memory per phase, out-of-memory, tokens per second.

`MeasureCallback` moves a `PhaseMeter` through the phases the estimator predicts: the first
step's forward/backward (gradient clipping included, since the trainer clips before it calls
``on_pre_optimizer_step``), the first ``optimizer.step()`` (where lazily allocated optimizer
state appears), and every later step as one ``later_steps`` phase (the optimizer state is
resident while the next forward/backward runs). The caller measures ``load`` itself.

Throughput is wall-clock over the steps after warm-up, data loading and logging between steps
included, over the tokens the trainer counted (``include_num_input_tokens_seen="non_padding"``:
padding does not count, so padded and padding-free runs compare on real tokens).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.phases import PhaseMeter


@dataclass
class StepLog:
    step: int
    seconds: float
    tokens: int


@dataclass
class Outcome:
    """What a measured run produced; `oom_phase` names where it ran out of memory."""

    completed: bool = False
    oom: bool = False
    oom_phase: str | None = None
    error: str | None = None
    steps: list[StepLog] = field(default_factory=list)
    warmup_steps: int = 0
    tokens_per_second: float | None = None
    measured_tokens: int = 0
    measured_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "completed": self.completed,
            "oom": self.oom,
            "oom_phase": self.oom_phase,
            "error": self.error,
            "warmup_steps": self.warmup_steps,
            "steps": [vars(s) for s in self.steps],
            "measured_tokens": self.measured_tokens,
            "measured_seconds": round(self.measured_seconds, 4),
            "tokens_per_second": self.tokens_per_second,
        }


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError, or the RuntimeError a CUDA library raises for the same."""
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover - torch is always there when a run is measured
        pass
    text = str(exc).lower()
    return isinstance(exc, RuntimeError | MemoryError) and (
        "out of memory" in text or "cudaerrormemoryallocation" in text
    )


def make_callback(meter: PhaseMeter, outcome: Outcome) -> Any:
    """A TrainerCallback bound to `meter` and `outcome` (built lazily: transformers is heavy)."""
    from transformers import TrainerCallback

    class MeasureCallback(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self._step_started = 0.0
            self._tokens_at_start = 0
            self._window_started: float | None = None
            self._window_tokens = 0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            meter.start("forward_backward" if state.global_step == 0 else "later_steps")
            self._step_started = time.perf_counter()
            self._tokens_at_start = int(state.num_input_tokens_seen)
            if state.global_step == outcome.warmup_steps:
                self._window_started = self._step_started
                self._window_tokens = self._tokens_at_start

        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 0:
                meter.start("optimizer_step")

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            meter.end()  # synchronizes the device, so the time below is the step's
            now = time.perf_counter()
            tokens = int(state.num_input_tokens_seen)
            outcome.steps.append(
                StepLog(
                    state.global_step,
                    round(now - self._step_started, 4),
                    tokens - self._tokens_at_start,
                )
            )
            if self._window_started is not None:
                outcome.measured_seconds = now - self._window_started
                outcome.measured_tokens = tokens - self._window_tokens

    return MeasureCallback()


def prepare_args(args: Any) -> None:
    """Make a trainer's arguments count real tokens (see the module docstring)."""
    args.include_num_input_tokens_seen = "non_padding"


def train_measured(train: Callable[[], Any], meter: PhaseMeter, outcome: Outcome) -> Outcome:
    """Run `train()` (``trainer.train``), turning an out-of-memory error into a result."""
    try:
        train()
        outcome.completed = True
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        outcome.oom = True
        outcome.oom_phase = meter.current or "unknown"
        outcome.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:400]}"
        if meter.current is not None:
            meter.end()
    finish(outcome)
    return outcome


def finish(outcome: Outcome) -> None:
    if outcome.measured_seconds > 0 and outcome.measured_tokens > 0:
        outcome.tokens_per_second = round(outcome.measured_tokens / outcome.measured_seconds, 2)
