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

from typing import Any

from transformers import TrainerCallback

from sftkit.signals import SIGNALS, Interrupts, StopNow

__all__ = ["SIGNALS", "Interrupts", "StopNow", "StopOnSignal"]


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
