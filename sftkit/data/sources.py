"""Where a dataset format's rows come from: a hub dataset id, a `datasets` directory, a
directory of split files, or local files and globs.

`read_splits(options, convert, skip_bad_rows=...)` is what every built-in format (and any
plugin's format whose options subclass `SourceOptions`) calls: it finds the train and test
rows of the options' source and converts each with `convert`, so a bad row is reported as
``FILE:LINE: problem`` for local files and ``org/name[train]:row N: problem`` for the hub.

Local files (JSONL, JSON, Parquet, CSV, and globs of them) are read by sftkit's own readers,
which know line numbers; a hub id or a `datasets` ``save_to_disk`` directory goes through
`datasets.load_dataset` / `datasets.load_from_disk` (imported only then).
"""

from __future__ import annotations

import glob
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sftkit import compat
from sftkit.data.example import Example
from sftkit.data.readers import (
    SUFFIXES,
    RawRow,
    ReadReport,
    SourceInfo,
    check_source_file,
    convert_rows,
    iter_file,
    malformed,
    sha256_file,
)
from sftkit.errors import DataError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
GLOB = re.compile(r"[*?\[]")

Convert = Callable[[RawRow], Example]


@dataclass
class _Part:
    """One readable piece of a split: a local file, or a loaded `datasets.Dataset`."""

    name: str  # used in FILE:LINE / name:row N locations
    source: str  # for the manifest
    rows: Iterator[RawRow | tuple[str, str]]
    sha256: str | None = None


def read_splits(options: Any, convert: Convert, *, skip_bad_rows: bool) -> Any:
    """Train and test `Example`s of a format whose options are `SourceOptions` (``source``
    or ``train_file``, ``test_file``, ``config``, ``train_split``, ``test_split``,
    ``revision``), as `RawSplits`. Each row reaches `convert` with ``row.split`` set."""
    from sftkit.data.formats import RawSplits

    report = ReadReport()
    hub = _HubCache(getattr(options, "config", None), getattr(options, "revision", None))
    train_ref = options.train_file or options.source
    train_split = getattr(options, "train_split", "train")
    parts = _parts(train_ref, train_split, hub, files_hold_it=True, required=True)
    if parts is None:
        raise DataError(
            f"{train_ref!r} has no {train_split!r} split.",
            hint="Set data.format.options.train_split to one of its splits.",
        )
    train = _convert(parts, "train", convert, skip_bad_rows, report)
    test: list[Example] | None = None
    test_split = getattr(options, "test_split", "test")
    if options.test_file:
        found = _parts(options.test_file, test_split or "test", hub, files_hold_it=True)
        test = _convert(found or [], "test", convert, skip_bad_rows, report)
    elif options.source and test_split and not options.train_file:
        # a file or glob given as `source` is the train split only
        found = _parts(options.source, test_split, hub, files_hold_it=False)
        if found is not None:
            test = _convert(found, "test", convert, skip_bad_rows, report)
    return RawSplits(train, test, report)


def _convert(
    parts: list[_Part], split: str, convert: Convert, skip_bad_rows: bool, report: ReadReport
) -> list[Example]:
    """Every part's rows converted; the problems of all parts reported together."""
    examples: list[Example] = []
    problems = ReadReport()
    for part in parts:
        rows = _tagged(part.rows, split, offset=len(examples))
        got = convert_rows(rows, convert, source=part.name, skip_bad_rows=True, report=problems)
        report.sources.append(SourceInfo(split, part.source, len(got), part.sha256))
        examples.extend(got)
    if problems.skipped and not skip_bad_rows:
        raise malformed(parts[0].name if len(parts) == 1 else f"{split} split", problems.skipped)
    report.skipped.extend(problems.skipped)
    return examples


def _tagged(
    rows: Iterator[RawRow | tuple[str, str]], split: str, offset: int
) -> Iterator[RawRow | tuple[str, str]]:
    """Each row with its split and a position among the split's rows (ids stay unique
    across the files of one split)."""
    for row in rows:
        if isinstance(row, RawRow):
            row.split = split
            row.index += offset
        yield row


# --------------------------------------------------------------------------- resolving


def _parts(
    ref: str, split: str, hub: _HubCache, *, files_hold_it: bool, required: bool = False
) -> list[_Part] | None:
    """The pieces of `split` in `ref`, or None when `ref` has no such split. A file or glob
    holds one split (`files_hold_it`: is it this one?); a directory or hub dataset has
    named splits."""
    if GLOB.search(ref):
        return _file_parts(_glob(ref)) if files_hold_it else None
    path = Path(ref).expanduser()
    if path.is_file():
        return _file_parts([path]) if files_hold_it else None
    if path.is_dir():
        return _directory_parts(path, split, hub, required=required)
    if path.exists():  # a device, FIFO or socket: say what it is, never read it
        check_source_file(path)
    if ref.startswith((".", "/", "~")) or ref.endswith(SUFFIXES) or not HUB_ID.match(ref):
        raise DataError(
            f"data source {ref!r} does not exist (looked at {path.resolve()}).",
            hint="Give a hub dataset id (org/name), a local file or glob (JSONL, JSON, "
            "Parquet, CSV), or a directory (data.format.options.source / train_file).",
        )
    return hub.parts(ref, split)


def _glob(pattern: str) -> list[Path]:
    files = sorted(Path(p) for p in glob.glob(str(Path(pattern).expanduser()), recursive=True))
    files = [p for p in files if p.is_file()]
    if not files:
        raise DataError(
            f"no file matches {pattern!r}.",
            hint="Check the pattern; '**' matches directories recursively.",
        )
    return files


def _file_parts(files: list[Path]) -> list[_Part]:
    parts = []
    for path in files:
        if path.suffix not in SUFFIXES:
            raise DataError(
                f"{path}: not a dataset file sftkit reads (expected one of {', '.join(SUFFIXES)}).",
            )
        parts.append(_Part(str(path), str(path), iter_file(path), sha256_file(path)))
    return parts


def _split_files(directory: Path, split: str, config: str | None) -> list[Path]:
    """``<split>.jsonl|json|parquet|csv``, Parquet shards ``<split>-*.parquet``, and a hub
    snapshot's ``<config or any>/<split>-*.parquet``."""
    patterns = [f"{split}{suffix}" for suffix in SUFFIXES] + [f"{split}-*.parquet"]
    patterns.append(f"{config}/{split}-*.parquet" if config else f"*/{split}-*.parquet")
    found: list[Path] = []
    for pattern in patterns:
        found.extend(p for p in sorted(directory.glob(pattern)) if p not in found)
    return found


def _directory_parts(
    directory: Path, split: str, hub: _HubCache, *, required: bool
) -> list[_Part] | None:
    if (directory / "dataset_dict.json").is_file() or (directory / "state.json").is_file():
        return hub.disk_parts(directory, split)
    files = _split_files(directory, split, hub.config)
    if files:
        return _file_parts(files)
    if (directory / "README.md").is_file():
        # a dataset repository checked out locally: `datasets` reads it as the hub would
        return hub.parts(str(directory), split)
    if not required:
        return None
    raise DataError(
        f"no {split} file in {directory}: expected {split}.jsonl (or .json, .csv, .parquet), "
        f"{split}-*.parquet shards, or a `datasets` save_to_disk directory.",
    )


class _HubCache:
    """`datasets` loads, once per source (train and test come from one load)."""

    def __init__(self, config: str | None, revision: str | None) -> None:
        self.config = config
        self.revision = revision
        self.loaded: dict[str, Any] = {}

    def _datasets(self) -> Any:
        try:
            import datasets
        except ImportError as exc:  # pragma: no cover - datasets comes with sftkit[train]
            raise DataError(
                "reading a hub dataset or a `datasets` directory needs the `datasets` package.",
                hint="pip install 'sftkit[train]'",
            ) from exc
        return datasets

    def parts(self, ref: str, split: str) -> list[_Part] | None:
        if ref not in self.loaded:
            datasets = self._datasets()
            try:
                self.loaded[ref] = datasets.load_dataset(ref, self.config, revision=self.revision)
            except Exception as exc:
                raise DataError(
                    f"cannot load {ref!r} (config {self.config!r}) with datasets.load_dataset: "
                    f"{type(exc).__name__}: {exc}",
                    hint="Offline? Point data.format.options.source at local files or a "
                    "`datasets` save_to_disk directory (HF_DATASETS_OFFLINE uses the cache only).",
                ) from exc
        return self._split(self.loaded[ref], ref, split, prefix="hub:")

    def disk_parts(self, directory: Path, split: str) -> list[_Part] | None:
        key = str(directory)
        if key not in self.loaded:
            try:
                self.loaded[key] = self._datasets().load_from_disk(key)
            except Exception as exc:
                raise DataError(
                    f"cannot read the `datasets` directory {directory}: {type(exc).__name__}: {exc}"
                ) from exc
        return self._split(self.loaded[key], key, split, prefix="disk:")

    @staticmethod
    def _split(loaded: Any, ref: str, split: str, *, prefix: str) -> list[_Part] | None:
        if hasattr(loaded, "keys"):  # a DatasetDict
            if split not in loaded:
                return None
            dataset = loaded[split]
        elif split == "train":  # a single Dataset is the train split
            dataset = loaded
        else:
            return None
        name = f"{ref}[{split}]"
        rows = (RawRow(f"{name}:row {i + 1}", i, row) for i, row in enumerate(dataset))
        fingerprint = compat.dataset_fingerprint(dataset)
        return [_Part(name, f"{prefix}{name}", rows, fingerprint)]
