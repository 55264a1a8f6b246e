"""SIGINT and SIGTERM, owned by the command that is running (torch-free).

A command that writes must stop when told, whatever signal disposition it inherited: a
process started in the background by a non-interactive shell (``sftkit export ... &`` in a
script) inherits SIGINT *ignored*, and Python then never raises KeyboardInterrupt, so
without a handler of its own the command would run to the end (exit 0) through every
Ctrl-C. `Interrupts` installs one for the duration of a ``with`` block; `stop_on_signals`
is the form the short commands use (export, prepare-data): the signal stops them at once as
`RunInterrupted` (exit 130 for SIGINT, 143 for SIGTERM), after their own cleanup ran.
`sftkit run` adds deferral to a step boundary on top (`sftkit.training.interrupts`).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from sftkit.errors import RunInterrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopNow(KeyboardInterrupt):
    """Raised by the handler when the command must stop at once."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Interrupts:
    """Owns SIGINT and SIGTERM for the duration of a ``with`` block (main thread only; a
    no-op elsewhere or when not `enabled`). While `deferring`, the first signal only sets
    `signum` (the training loop stops at its next step); otherwise, and on a second signal,
    `StopNow` is raised."""

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


@contextlib.contextmanager
def stop_on_signals(what: str, *, kept: str = "nothing was written") -> Iterator[None]:
    """SIGINT/SIGTERM inside the block stop `what` at once as `RunInterrupted`; `kept` says
    what the interrupted command leaves behind."""
    with Interrupts():
        try:
            yield
        except StopNow as exc:
            raise RunInterrupted(
                f"{what} interrupted by {signal.Signals(exc.signum).name}; {kept}.",
                signum=exc.signum,
            ) from None
