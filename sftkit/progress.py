"""What sftkit shows while it works: one progress display for every long stage.

Preparing data, loading a model, training, each evaluation and an export open a `Stage` on
the current `Display`. On a terminal a stage is a line of one rich live display, laid out to
stay readable at 80 columns (the bar takes what the fixed columns leave)::

    train            ━━━━━━━━━━━━━━━━    120/400  loss 1.2345     0:00:41  eta 0:01:36
    before gsm8k     ━━━━━━━━━━━━━━━━    100/200  acc 45.0%       0:00:05  eta 0:00:05

Elsewhere (a pipe, a CI log) a stage prints a plain line every `Display.plain_interval`
seconds while it runs, so a long stage is never silent and a short one adds nothing; the
caller's own result line follows. Messages (`Display.say`) print above the live lines.

The CLI installs the display that prints on its console (`use`); library code asks for
`current()`, which is a stderr display when nothing was installed. Each stage's start and
end also go to the `sftkit.progress` logger, so the run's log file (`sftkit.quiet`) shows
which stage a library message came from. Imports nothing from sftkit and no torch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn
from rich.table import Column
from rich.text import Text

log = logging.getLogger("sftkit.progress")

# Widths of the fixed columns; at 80 columns the bar keeps 80 - 63 = 17 cells.
NAME_WIDTH = 16
COUNT_WIDTH = 11  # "10000/10000"
NOTE_WIDTH = 13  # "loss 12.3456", "acc 100.0%"
TIME_WIDTH = 7  # "1:23:45"
ETA_WIDTH = 11  # "eta 1:23:45"
PLAIN_INTERVAL = 30.0  # seconds between plain progress lines of one stage


def clock(seconds: float | None) -> str:
    """``0:01:36``; empty for an unknown time."""
    if seconds is None or seconds != seconds or seconds < 0:
        return ""
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


class Stage:
    """One long piece of work: a name, how much of it is done (of `total`, if known), and a
    short note such as the running loss or accuracy. Update it as the work goes; close it
    when done (`Display.stage` does both for a ``with`` block)."""

    def __init__(
        self, display: Display, name: str, total: int | None, done: int, note: str, keep: bool
    ) -> None:
        self.display = display
        self.name = name
        self.total = total
        self.done = done
        self.note = note
        self.keep = keep  # leave the finished line on the terminal (training)
        self.started = self.last_plain = time.monotonic()
        self.closed = False
        self.task_id: Any = None

    def update(
        self,
        done: int | None = None,
        *,
        total: int | None = None,
        note: str | None = None,
        advance: int = 0,
    ) -> None:
        if done is not None:
            self.done = done
        self.done += advance
        if total is not None:
            self.total = total
        if note is not None:
            self.note = note
        self.display._updated(self)

    def advance(self, steps: int = 1) -> None:
        self.update(advance=steps)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def eta(self) -> float | None:
        """Seconds left at the pace so far; None when unknown."""
        if not self.total or self.done <= 0 or self.done >= self.total:
            return None
        return self.elapsed * (self.total - self.done) / self.done

    def plain_line(self) -> str:
        """``before gsm8k: 100/200  acc 45.0%  0:00:05  eta 0:00:05``."""
        count = f"{self.done}/{self.total}" if self.total else (str(self.done) if self.done else "")
        eta = clock(self.eta)
        parts = [count, self.note, clock(self.elapsed), f"eta {eta}" if eta else ""]
        return f"{self.name}: " + "  ".join(p for p in parts if p)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.display._closed(self)

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Count(ProgressColumn):
    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text(str(int(task.completed)) if task.completed else "")
        return Text(f"{int(task.completed)}/{int(task.total)}")


class _Eta(ProgressColumn):
    max_refresh = 0.5  # rich's speed estimate jitters; redraw the eta twice a second

    def render(self, task: Task) -> Text:
        if task.total is None or task.finished:
            return Text("")
        left = clock(task.time_remaining)
        return Text(f"eta {left}" if left else "")


class _Elapsed(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(clock(task.finished_time if task.finished else task.elapsed))


def columns() -> tuple[ProgressColumn, ...]:
    """The live display's columns: fixed widths, and a bar that takes the rest."""

    def fixed(width: int, justify: str = "left") -> Column:
        return Column(width=width, min_width=width, no_wrap=True, justify=justify)  # type: ignore[arg-type]

    return (
        TextColumn("{task.description}", table_column=fixed(NAME_WIDTH)),
        BarColumn(bar_width=None, table_column=Column(ratio=1, min_width=4, no_wrap=True)),
        _Count(table_column=fixed(COUNT_WIDTH, "right")),
        TextColumn("{task.fields[note]}", table_column=fixed(NOTE_WIDTH)),
        _Elapsed(table_column=fixed(TIME_WIDTH, "right")),
        _Eta(table_column=fixed(ETA_WIDTH)),
    )


class Display:
    """Stages and messages on one console: live on a terminal, plain lines elsewhere."""

    def __init__(
        self,
        console: Console | None = None,
        *,
        plain_interval: float = PLAIN_INTERVAL,
        on_activity: Callable[[], None] | None = None,
    ):
        self.console = console or Console(stderr=True)
        self.plain_interval = plain_interval
        # called before each stage opens and each line is said (the CLI adopts the libraries
        # loaded by then: `sftkit.quiet.adopt_loaded`)
        self.on_activity = on_activity
        self.progress: Progress | None = None
        self.stages: list[Stage] = []

    @property
    def live(self) -> bool:
        return bool(self.console.is_terminal)

    def say(self, text: str, *, markup: bool = True) -> None:
        """One message line, above the live stages. rich does not wrap it (a log line stays
        one line, a long path is not broken at its slashes); a terminal wraps it itself."""
        if self.on_activity is not None:
            self.on_activity()
        self.console.print(text, markup=markup, highlight=False, soft_wrap=True)
        now = time.monotonic()
        for stage in self.stages:  # a line was just printed: no stage is silent
            stage.last_plain = now

    def open(
        self,
        name: str,
        total: int | None = None,
        *,
        done: int = 0,
        note: str = "",
        keep: bool = False,
    ) -> Stage:
        """Start a stage; close it when the work ends. `keep` leaves its finished line on the
        terminal (otherwise it disappears and the caller prints the result)."""
        if self.on_activity is not None:
            self.on_activity()
        stage = Stage(self, name, total, done, note, keep)
        self.stages.append(stage)
        log.info("%s: started", name)
        if self.live:
            if self.progress is None:
                self.progress = Progress(
                    *columns(), console=self.console, expand=True, transient=False
                )
                self.progress.start()
            stage.task_id = self.progress.add_task(
                _fit(name, NAME_WIDTH), total=total, completed=done, note=_fit(note, NOTE_WIDTH)
            )
        return stage

    @contextmanager
    def stage(self, name: str, total: int | None = None, **kwargs: Any) -> Iterator[Stage]:
        stage = self.open(name, total, **kwargs)
        try:
            yield stage
        finally:
            stage.close()

    def _updated(self, stage: Stage) -> None:
        if self.progress is not None and stage.task_id is not None:
            self.progress.update(
                stage.task_id,
                completed=stage.done,
                total=stage.total,
                note=_fit(stage.note, NOTE_WIDTH),
            )
        elif not self.live:
            now = time.monotonic()
            if now - stage.last_plain >= self.plain_interval:
                stage.last_plain = now
                self.say(stage.plain_line(), markup=False)

    def _closed(self, stage: Stage) -> None:
        log.info("%s: done in %.1fs", stage.name, stage.elapsed)
        if stage in self.stages:
            self.stages.remove(stage)
        if self.progress is not None and stage.task_id is not None:
            if stage.keep:
                if stage.total is None:
                    self.progress.update(stage.task_id, total=max(stage.done, 1))
                self.progress.update(stage.task_id, completed=stage.total or stage.done)
                self.progress.stop_task(stage.task_id)
            else:
                self.progress.remove_task(stage.task_id)
            if not self.stages:
                self.progress.stop()
                self.progress = None

    def close(self) -> None:
        """Close every open stage (an error unwinding past them)."""
        for stage in list(self.stages):
            stage.close()


_current: Display | None = None


def current() -> Display:
    """The display library code reports to: the one installed by `use`, else one on stderr."""
    global _current
    if _current is None:
        _current = Display()
    return _current


@contextmanager
def use(display: Display) -> Iterator[Display]:
    """Make `display` the current one for the block (the CLI wraps each command in this)."""
    global _current
    previous, _current = _current, display
    try:
        yield display
    finally:
        display.close()
        _current = previous


def console_display(console: Console) -> Display:
    """The current display if it prints on `console`, else a new one on it (calling what
    the current one calls on activity)."""
    display = current()
    if display.console is console:
        return display
    return Display(console, on_activity=display.on_activity)
