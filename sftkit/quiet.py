"""Keeping the libraries' own output off a sftkit command's terminal: it goes to a log file.

transformers, datasets, huggingface_hub, accelerate, bitsandbytes, peft and TRL talk through
`logging` (bitsandbytes logs a warning the moment `import peft` loads it), through
`warnings` (transformers' FutureWarnings), and through tqdm bars. In a sftkit command all of
that goes to the log file of the directory the command writes into (`runpaths.log_file`:
``<run>/sftkit.log``), unless ``--verbose``; sftkit says what matters in its own words.

Only the CLI sets this up (`quiet_libraries`, around each command; undone when it ends): a
program that calls `run_recipe` keeps its logging as it set it. It uses the libraries' own
switches:

- their environment switches, set where the user has not: progress bars off
  (``HF_HUB_DISABLE_PROGRESS_BARS`` also switches off transformers' bars,
  ``HF_DATASETS_DISABLE_PROGRESS_BARS``), and until a library is adopted (below) only its
  errors printed (``TRANSFORMERS_VERBOSITY``, ``DATASETS_VERBOSITY``, ``HF_HUB_VERBOSITY``);
- one handler on the root logger that holds records until `log_to` names the file, then
  writes them there (held ones first), and ``logging.captureWarnings`` for `warnings.warn`;
- `adopt_loaded`, for each of transformers, datasets and huggingface_hub loaded by then: its
  stderr handler off and its records propagated to the root handler, its warnings back on,
  and transformers' bars shown as stages of sftkit's display (`transformers.logging`'s
  `disable_default_handler`, `enable_propagation`, `set_tqdm_hook`). The CLI calls it as the
  command starts and whenever its display opens a stage or prints a line, the moments that
  follow the libraries' loading.

With ``verbose`` the records are also printed on stderr and the libraries keep their bars.
Imports nothing from sftkit but `progress`, and no torch.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from sftkit import progress

# Records kept before a log file is named (the oldest are dropped beyond this).
HELD_RECORDS = 5000
FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"
VERBOSE_FORMAT = "[%(name)s] %(levelname)s: %(message)s"
BARS_OFF = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
# library logging module -> the variable its default level is read from, at its import
VERBOSITY = {
    "transformers.utils.logging": "TRANSFORMERS_VERBOSITY",
    "datasets.utils.logging": "DATASETS_VERBOSITY",
    "huggingface_hub.utils.logging": "HF_HUB_VERBOSITY",
}
# transformers' bar descriptions -> the stage names sftkit shows.
BAR_NAMES = {"Loading weights": "load weights", "Writing model shards": "write shards"}


class LibraryLog(logging.Handler):
    """The root logger's handler: records go to the log file once there is one, and are held
    until then; with `verbose` they are printed on stderr as well."""

    def __init__(self, verbose: bool) -> None:
        super().__init__(logging.NOTSET)
        self.held: deque[logging.LogRecord] = deque(maxlen=HELD_RECORDS)
        self.file: logging.FileHandler | None = None
        self.echo: logging.Handler | None = None
        if verbose:
            self.echo = logging.StreamHandler(sys.stderr)
            self.echo.setFormatter(logging.Formatter(VERBOSE_FORMAT))
            # sftkit's own records (stage markers) are for the file: the terminal shows stages
            self.echo.addFilter(lambda record: not record.name.startswith("sftkit"))

    def emit(self, record: logging.LogRecord) -> None:
        if self.echo is not None:
            self.echo.handle(record)
        if self.file is not None:
            self.file.handle(record)
        else:
            self.held.append(record)

    def attach(self, path: Path | None) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(path, mode="a", encoding="utf-8")
        except OSError:
            return  # a directory we may not write to: keep holding; the command says why
        handler.setFormatter(logging.Formatter(FORMAT))
        while self.held:
            handler.handle(self.held.popleft())
        self.file = handler

    @property
    def path(self) -> Path | None:
        return Path(self.file.baseFilename) if self.file is not None else None

    def hidden(self) -> int:
        """Held warnings and errors that no log file received (nor, unless verbose, stderr)."""
        return 0 if self.echo else sum(r.levelno >= logging.WARNING for r in self.held)


class _Quiet:
    """What one `quiet_libraries` block set up, and how to undo it."""

    def __init__(self, verbose: bool, undo: ExitStack) -> None:
        self.handler = LibraryLog(verbose)
        self.verbose = verbose
        self.undo = undo
        self.adopted: set[str] = set()
        self.quieted: set[str] = set()  # verbosity variables this block set


_active: _Quiet | None = None


@contextmanager
def quiet_libraries(*, verbose: bool = False) -> Iterator[LibraryLog]:
    """For the block (a CLI command): route the libraries' logging, warnings and bars as the
    module docstring says; everything is put back as it was when it ends."""
    global _active
    with ExitStack() as undo:
        quiet = _Quiet(verbose, undo)
        root = logging.getLogger()
        root.addHandler(quiet.handler)
        undo.callback(root.removeHandler, quiet.handler)
        undo.callback(quiet.handler.attach, None)
        own = logging.getLogger("sftkit")
        undo.callback(own.setLevel, own.level)
        own.setLevel(logging.INFO)  # stage markers reach the file
        logging.captureWarnings(True)
        undo.callback(logging.captureWarnings, False)
        if not verbose:
            for name, value in BARS_OFF.items():
                _set_default(undo, name, value)
            for variable in VERBOSITY.values():
                if _set_default(undo, variable, "error"):
                    quiet.quieted.add(variable)
        previous, _active = _active, quiet
        undo.callback(_restore_active, previous)
        adopt_loaded()
        yield quiet.handler


def adopt_loaded() -> None:
    """Route the records of each library loaded since the last call through the root handler
    (see the module docstring); nothing outside a `quiet_libraries` block."""
    quiet = _active
    if quiet is None:
        return
    for module_name, adopt in ADOPT.items():
        module = sys.modules.get(module_name)
        if module is not None and module_name not in quiet.adopted:
            quiet.adopted.add(module_name)
            adopt(module, quiet)
            if VERBOSITY[module_name] in quiet.quieted:  # warnings reach the log file again
                module.set_verbosity(logging.WARNING)


def log_to(path: Path | None) -> None:
    """Write library records to `path` from now on (appending; the ones held so far first);
    None closes the file and holds records again. A no-op outside the CLI's block."""
    if _active is not None:
        _active.handler.attach(Path(path) if path is not None else None)


def log_path() -> Path | None:
    """The log file records go to now, if any."""
    return _active.handler.path if _active is not None else None


def hidden_messages() -> int:
    """How many library warnings were kept off the terminal without reaching a log file."""
    return _active.handler.hidden() if _active is not None else 0


# --------------------------------------------------------------------------- libraries


def _set_default(undo: ExitStack, name: str, value: str) -> bool:
    if name in os.environ:
        return False
    os.environ[name] = value
    undo.callback(os.environ.pop, name, None)
    return True


def _restore_active(previous: _Quiet | None) -> None:
    global _active
    _active = previous


def _adopt_transformers(module: Any, quiet: _Quiet) -> None:
    module.disable_default_handler()  # creates it first if need be, then removes it
    module.enable_propagation()
    quiet.undo.callback(module.enable_default_handler)
    quiet.undo.callback(module.disable_propagation)
    if not quiet.verbose:
        was = module.is_progress_bar_enabled()
        module.disable_progress_bar()
        # a public hook of later 5.x releases (5.3 lacks it): there its bars are just off
        if hasattr(module, "set_tqdm_hook"):
            module.set_tqdm_hook(_bar_as_stage)
            quiet.undo.callback(module.set_tqdm_hook, None)
        if was:
            quiet.undo.callback(module.enable_progress_bar)


def _stream_handlers_off(logger_name: str, quiet: _Quiet) -> None:
    """datasets and huggingface_hub print through a stderr handler on their own logger (and
    propagate too): that handler goes while the block lasts."""
    logger = logging.getLogger(logger_name)
    for handler in list(logger.handlers):
        if type(handler) is logging.StreamHandler:
            logger.removeHandler(handler)
            quiet.undo.callback(logger.addHandler, handler)


def _adopt_with_bars(package: str) -> Callable[[Any, _Quiet], None]:
    def adopt(module: Any, quiet: _Quiet) -> None:
        _stream_handlers_off(package, quiet)
        bars = sys.modules.get(f"{package}.utils.tqdm")
        if bars is not None and not quiet.verbose and not bars.are_progress_bars_disabled():
            bars.disable_progress_bars()  # imported before the block read the environment
            quiet.undo.callback(bars.enable_progress_bars)

    return adopt


ADOPT: dict[str, Callable[[Any, _Quiet], None]] = {
    "transformers.utils.logging": _adopt_transformers,
    "datasets.utils.logging": _adopt_with_bars("datasets"),
    "huggingface_hub.utils.logging": _adopt_with_bars("huggingface_hub"),
}


class _StageBar:
    """What transformers' tqdm call gets back: enough of tqdm's interface, driving a stage
    of sftkit's progress display."""

    def __init__(self, iterable: Any, kwargs: dict[str, Any]) -> None:
        self.iterable = iterable
        desc = str(kwargs.get("desc") or "working")
        total = kwargs.get("total")
        if total is None and iterable is not None:
            try:
                total = len(iterable)
            except TypeError:
                total = None
        self.stage = progress.current().open(
            BAR_NAMES.get(desc, desc.lower()), int(total) if total is not None else None
        )

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.iterable:
                yield item
                self.stage.advance()
        finally:
            self.stage.close()

    def __len__(self) -> int:
        return self.stage.total or 0

    def update(self, n: float = 1) -> None:
        self.stage.advance(int(n))

    def close(self) -> None:
        self.stage.close()

    def __enter__(self) -> _StageBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        # set_description, set_postfix, refresh, ...: nothing to show
        return lambda *args, **kwargs: None


def _bar_as_stage(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    iterable = args[0] if args else kwargs.get("iterable")
    return _StageBar(iterable, kwargs)
