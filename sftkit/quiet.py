"""Keeping the libraries' own output off the terminal: it goes to a log file instead.

transformers, datasets, huggingface_hub, accelerate, bitsandbytes, peft and TRL talk through
`logging` (bitsandbytes logs a warning the moment `import peft` loads it), through
`warnings` (transformers' FutureWarnings), and through tqdm bars ("Loading weights",
"Writing model shards", dataset maps). In a sftkit command all of that goes to the log file
of the directory the command writes into (`runpaths.log_file`: ``<run>/sftkit.log``), unless
``--verbose``; sftkit says what matters in its own words. `quiet_libraries` sets this up
once, first thing in the CLI, before any of those libraries is imported:

- environment defaults that switch their tqdm bars off (``HF_HUB_DISABLE_PROGRESS_BARS``
  also switches off transformers' bars; ``HF_DATASETS_DISABLE_PROGRESS_BARS``);
- one handler on the root logger that holds records until `log_to` names the file, then
  writes them there (held ones first);
- ``logging.captureWarnings``, so `warnings.warn` goes through that handler too;
- after-import hooks that take out the stderr handlers transformers, datasets and
  huggingface_hub put on their own loggers (so their records reach the root handler), and
  that show transformers' bars as stages of sftkit's progress display (`sftkit.progress`).

With ``verbose`` the records are also printed on stderr and the libraries keep their bars.
Imports nothing from sftkit but `progress`, and no torch.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from sftkit import progress

# Records kept before a log file is named (the oldest are dropped beyond this).
HELD_RECORDS = 5000
FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"
VERBOSE_FORMAT = "[%(name)s] %(levelname)s: %(message)s"
# Set only where the user has not set them.
QUIET_ENVIRONMENT = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
}
# transformers' bar descriptions -> the stage names sftkit shows.
BAR_NAMES = {"Loading weights": "load weights", "Writing model shards": "write shards"}


class LibraryLog(logging.Handler):
    """The root logger's handler: records go to the log file once there is one, and are held
    until then; with `verbose` they are printed on stderr as well."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.held: deque[logging.LogRecord] = deque(maxlen=HELD_RECORDS)
        self.file: logging.FileHandler | None = None
        self.echo: logging.Handler | None = None

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


_handler: LibraryLog | None = None


def quiet_libraries(*, verbose: bool | None = None) -> LibraryLog:
    """Route the libraries' logging, warnings and bars as the module docstring says. Safe to
    call again: a later call changes `verbose` if given, else keeps it (default off)."""
    global _handler
    root = logging.getLogger()
    if verbose is None:
        verbose = _verbose()
    if _handler is None:
        _handler = LibraryLog()
        root.addHandler(_handler)
        logging.getLogger("sftkit").setLevel(logging.INFO)  # stage markers reach the file
        logging.captureWarnings(True)
        _AFTER_IMPORT.install()
    if verbose and _handler.echo is None:
        echo = logging.StreamHandler(sys.stderr)
        echo.setFormatter(logging.Formatter(VERBOSE_FORMAT))
        # sftkit's own records (stage markers) are for the file: the terminal shows the stages.
        echo.addFilter(lambda record: not record.name.startswith("sftkit"))
        _handler.echo = echo
    elif not verbose:
        _handler.echo = None
        for name, value in QUIET_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
    for module, callback in CONFIGURE.items():
        _AFTER_IMPORT.when_imported(module, callback)
    return _handler


def log_to(path: Path | None) -> None:
    """Write library records to `path` from now on (appending; the ones held so far first);
    None closes the file and holds records again. A no-op before `quiet_libraries`."""
    if _handler is not None:
        _handler.attach(Path(path) if path is not None else None)


def log_path() -> Path | None:
    """The log file records go to now, if any."""
    return _handler.path if _handler is not None else None


def hidden_messages() -> int:
    """How many library warnings were kept off the terminal without reaching a log file."""
    return _handler.hidden() if _handler is not None else 0


# --------------------------------------------------------------------------- libraries


def _own_stream_handlers_off(logger_name: str) -> None:
    """A library's logger keeps its records and passes them to the root handler, instead of
    printing them with its own stderr handler."""
    logger = logging.getLogger(logger_name)
    for handler in list(logger.handlers):
        if type(handler) is logging.StreamHandler:
            logger.removeHandler(handler)
    logger.propagate = True


def _verbose() -> bool:
    return _handler is not None and _handler.echo is not None


def _configure_transformers(module: ModuleType) -> None:
    module.disable_default_handler()  # creates it first if need be, then removes it
    module.enable_propagation()
    if not _verbose():
        module.disable_progress_bar()
        if hasattr(module, "set_tqdm_hook"):  # transformers >= 5
            module.set_tqdm_hook(_bar_as_stage)


def _bars_off(tqdm_module: str) -> None:
    # Imported before quiet_libraries ran, the library read the environment already; loaded
    # later, the environment defaults above do it (its package may be half imported here).
    module = sys.modules.get(tqdm_module)
    if module is not None and not _verbose():
        module.disable_progress_bars()


def _configure_datasets(module: ModuleType) -> None:
    _own_stream_handlers_off("datasets")
    _bars_off("datasets.utils.tqdm")


def _configure_hub(module: ModuleType) -> None:
    _own_stream_handlers_off("huggingface_hub")
    _bars_off("huggingface_hub.utils.tqdm")


CONFIGURE: dict[str, Callable[[ModuleType], None]] = {
    "transformers.utils.logging": _configure_transformers,
    "datasets.utils.logging": _configure_datasets,
    "huggingface_hub.utils.logging": _configure_hub,
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


# --------------------------------------------------------------------------- after import


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs a callback once a module has been imported (at once if it already is): the
    libraries install their stderr handlers as they load, so they are taken out right
    after, whoever imports them and whenever."""

    def __init__(self) -> None:
        self.pending: dict[str, list[Callable[[ModuleType], None]]] = {}
        self.installed = False

    def install(self) -> None:
        if not self.installed:
            sys.meta_path.insert(0, self)
            self.installed = True

    def when_imported(self, name: str, callback: Callable[[ModuleType], None]) -> None:
        module = sys.modules.get(name)
        if module is not None:
            callback(module)
        elif callback not in self.pending.setdefault(name, []):
            self.pending[name].append(callback)

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        callbacks = self.pending.get(fullname)
        if not callbacks:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None:
            del self.pending[fullname]
            spec.loader = _ThenCall(spec.loader, callbacks)
        return spec


class _ThenCall(importlib.abc.Loader):
    def __init__(self, loader: Any, callbacks: list[Callable[[ModuleType], None]]) -> None:
        self.loader = loader
        self.callbacks = callbacks

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        created: ModuleType | None = self.loader.create_module(spec)
        return created

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        for callback in self.callbacks:
            callback(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)  # get_source, get_resource_reader, ...


_AFTER_IMPORT = _AfterImport()
