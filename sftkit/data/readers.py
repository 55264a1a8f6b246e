"""Reading raw rows from JSONL, JSON, CSV, Parquet or the hub, each with a location for error
messages.

A row that cannot be turned into an `Example` is reported as ``file:line: what is wrong``.
With `skip_bad_rows` the bad rows are counted and skipped instead; otherwise every problem in
the file is reported at once (the first few spelled out) as a `DataError`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftkit.data.example import Example
from sftkit.errors import DataError

MAX_SHOWN = 10


class RowError(ValueError):
    """A row is malformed; the message says what is wrong (the caller adds where)."""


@dataclass
class RawRow:
    location: str  # "train.jsonl:17" or "openai/gsm8k[train]:row 17"
    index: int  # 0-based position among the source's rows
    data: Any
    split: str = ""  # "train" or "test" when read through `sftkit.data.sources.read_splits`


@dataclass
class SourceInfo:
    """Where a split came from, for the manifest."""

    split: str
    source: str
    rows: int = 0
    sha256: str | None = None


@dataclass
class ReadReport:
    """Rows kept and rows skipped while reading one or more sources."""

    sources: list[SourceInfo] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "file:line: what is wrong"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def iter_jsonl(path: Path) -> Iterator[RawRow | tuple[str, str]]:
    """Rows of a JSONL file; a line that is not a JSON value yields (location, problem)."""
    try:
        handle = path.open("r", encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}.") from exc
    with handle:
        index = 0
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            location = f"{path}:{line_no}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                yield location, f"not valid JSON ({exc.msg} at column {exc.colno})"
                continue
            yield RawRow(location, index, data)
            index += 1


def iter_parquet(path: Path) -> Iterator[RawRow | tuple[str, str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow comes with `datasets`
        raise DataError(
            f"reading {path} needs pyarrow.", hint="pip install 'sftkit[train]'"
        ) from exc
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:
        raise DataError(f"cannot read Parquet file {path}: {exc}.") from exc
    for index, data in enumerate(rows):
        yield RawRow(f"{path}:row {index + 1}", index, data)


def iter_json(path: Path) -> Iterator[RawRow | tuple[str, str]]:
    """Rows of a ``.json`` file: a JSON array of rows (each located at the line it starts
    on), or JSON Lines under a ``.json`` name (as many datasets ship them)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}.") from exc
    start = len(text) - len(text.lstrip())
    if not text.startswith("[", start):
        yield from iter_jsonl(path)
        return
    decoder = json.JSONDecoder()
    at, index = start + 1, 0
    while True:
        while at < len(text) and text[at] in " \t\r\n,":
            at += 1
        if at >= len(text) or text[at] == "]":
            return
        location = f"{path}:{text.count(chr(10), 0, at) + 1}"
        try:
            data, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError as exc:
            # the rest of the array cannot be located reliably: one problem, then stop
            yield location, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
            return
        yield RawRow(location, index, data)
        index += 1


def iter_csv(path: Path) -> Iterator[RawRow | tuple[str, str]]:
    """Rows of a CSV file with a header line: each row a {column: text} mapping, located at
    the line it starts on."""
    import csv

    try:
        handle = path.open("r", encoding="utf-8", newline="")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}.") from exc
    with handle:
        reader = csv.DictReader(handle)
        reader.fieldnames  # noqa: B018 - reads the header, so line_num counts from it
        line = reader.line_num + 1
        try:
            for index, data in enumerate(reader):
                if None in data:
                    yield (
                        f"{path}:{line}",
                        f"more cells than the {len(reader.fieldnames or [])} columns of the header",
                    )
                else:
                    yield RawRow(f"{path}:{line}", index, dict(data))
                line = reader.line_num + 1
        except csv.Error as exc:
            yield f"{path}:{reader.line_num}", f"not valid CSV ({exc})"


SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


def iter_file(path: Path) -> Iterator[RawRow | tuple[str, str]]:
    """Rows of a local file, by its suffix: ``.parquet``, ``.json``, ``.csv``, else JSONL."""
    if path.suffix == ".parquet":
        return iter_parquet(path)
    if path.suffix == ".json":
        return iter_json(path)
    if path.suffix == ".csv":
        return iter_csv(path)
    return iter_jsonl(path)


def iter_rows(rows: list[Any], name: str) -> Iterator[RawRow | tuple[str, str]]:
    for index, data in enumerate(rows):
        yield RawRow(f"{name}:row {index + 1}", index, data)


def convert_rows(
    rows: Iterator[RawRow | tuple[str, str]],
    convert: Callable[[RawRow], Example],
    *,
    source: str,
    skip_bad_rows: bool,
    report: ReadReport,
) -> list[Example]:
    """Apply `convert` to each row; collect problems; raise or skip per `skip_bad_rows`."""
    examples: list[Example] = []
    problems: list[str] = []
    for row in rows:
        if isinstance(row, tuple):
            problems.append(f"{row[0]}: {row[1]}")
            continue
        try:
            examples.append(convert(row))
        except RowError as exc:
            problems.append(f"{row.location}: {exc}")
    if problems and not skip_bad_rows:
        raise malformed(source, problems)
    report.skipped.extend(problems)
    return examples


def malformed(source: str, problems: list[str]) -> DataError:
    """The error for `problems` (``FILE:LINE: what``) found in `source`, the first few spelled out."""
    shown = "\n".join(f"  {p}" for p in problems[:MAX_SHOWN])
    more = f"\n  ... and {len(problems) - MAX_SHOWN} more" if len(problems) > MAX_SHOWN else ""
    return DataError(
        f"{source}: {len(problems)} malformed row{'s' if len(problems) != 1 else ''}:\n"
        f"{shown}{more}",
        hint="Fix the rows, or skip and count them with --skip-bad-rows "
        "(data.format.options.skip_bad_rows=true).",
    )


def require_text(data: Any, key: str) -> str:
    """`data[key]` as a non-empty string, or a RowError naming the key."""
    if not isinstance(data, dict):
        raise RowError(f"expected a JSON object, found {type(data).__name__}")
    if key not in data:
        raise RowError(f"missing key {key!r} (keys: {', '.join(map(str, data)) or 'none'})")
    value = data[key]
    if not isinstance(value, str):
        raise RowError(f"{key!r} must be a string, found {type(value).__name__}")
    if not value.strip():
        raise RowError(f"{key!r} is empty")
    return value
