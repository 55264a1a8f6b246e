"""Reading raw rows from JSONL, Parquet or the hub, each with a location for error messages.

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
    """Rows of a JSONL file; a line that is not UTF-8 text or not a JSON value yields
    (location, problem)."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}.") from exc
    with handle:
        index = 0
        offset = 0  # of the line's first byte in the file
        for line_no, raw in enumerate(handle, start=1):
            start, offset = offset, offset + len(raw)
            location = f"{path}:{line_no}"
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield (
                    location,
                    (
                        f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}, "
                        f"byte {start + exc.start} of the file); save the file as UTF-8"
                    ),
                )
                continue
            if not line.strip():
                continue
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


def iter_file(path: Path) -> Iterator[RawRow | tuple[str, str]]:
    if path.suffix == ".parquet":
        return iter_parquet(path)
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
        shown = "\n".join(f"  {p}" for p in problems[:MAX_SHOWN])
        more = f"\n  ... and {len(problems) - MAX_SHOWN} more" if len(problems) > MAX_SHOWN else ""
        raise DataError(
            f"{source}: {len(problems)} malformed row{'s' if len(problems) != 1 else ''}:\n"
            f"{shown}{more}",
            hint="Fix the rows, or skip and count them with --skip-bad-rows "
            "(data.format.options.skip_bad_rows=true).",
        )
    report.skipped.extend(problems)
    return examples


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
