"""SIGINT and SIGTERM during a run: stop at the next step boundary with a checkpoint.

While the trainer is between its first and last step, the first signal only sets a flag:
`StopOnSignal` then has the trainer save a checkpoint at the end of the step under way and
stop (or stop right after a save already under way). Anywhere else (loading, evaluating,
saving final/), and on a second signal, `StopNow` is raised at once; whatever was being
written then is under .partial/ and is discarded by the next run, so stopping at once loses
only the steps since the last checkpoint. The runner turns both into `RunInterrupted`
(exit 130 for SIGINT, 143 for SIGTERM).

Only a single-process run defers: in a launched run every rank would have to agree on the
step, so there the signal stops at once (the launcher forwards it) and the run resumes from
its last checkpoint.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Any

from transformers import TrainerCallback

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopNow(KeyboardInterrupt):
    """Raised by the handler when the run must stop at once."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Interrupts:
    """Owns SIGINT and SIGTERM for the duration of a ``with`` block (main thread only; a
    no-op elsewhere or when not `enabled`)."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.signum: int | None = None  # the first signal received
        self.deferring = False  # inside the training loop: the first signal waits for a step
        self.step = 0  # the step under way, for the message
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        if self.enabled and threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None and self.deferring:
            self.signum = signum
            with contextlib.suppress(OSError, ValueError):  # no terminal left to tell
                sys.stderr.write(
                    f"\n{signal.Signals(signum).name}: stopping after step {self.step + 1} with "
                    "a checkpoint (send it again to stop at once, losing the steps since the "
                    "last checkpoint).\n"
                )
                sys.stderr.flush()
            return
        if self.signum is None:
            self.signum = signum
        raise StopNow(signum)


class StopOnSignal(TrainerCallback):
    """The trainer's side of `Interrupts`: defer while training, save and stop at the step
    boundary once a signal came."""

    def __init__(self, interrupts: Interrupts, *, single_process: bool) -> None:
        self.interrupts = interrupts
        self.single_process = single_process

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.interrupts.step = state.global_step
        self.interrupts.deferring = self.single_process

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.interrupts.step = state.global_step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.interrupts.signum is not None:
            control.should_save = True
            control.should_training_stop = True

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.interrupts.signum is not None:  # came during a save: that one will do
            control.should_training_stop = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.interrupts.deferring = False
