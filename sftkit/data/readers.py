"""Reading raw rows from JSONL, JSON, CSV, Parquet or the hub, each with a location for error
messages.

A row that cannot be turned into an `Example` is reported as ``file:line: what is wrong``.
With `skip_bad_rows` the bad rows are counted and skipped instead; otherwise every problem in
the file is reported at once (the first few spelled out) as a `DataError`.

Sources are read only from regular files (a device such as /dev/zero would be read until
memory runs out, a FIFO would block), within the limits `read_limits` sets for the duration
of a read (data.max_file_bytes, data.max_row_bytes: `sftkit.data.prepare` sets the recipe's);
a JSONL line is never read past the row limit, so one enormous row cannot exhaust memory.
"""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
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


@dataclass(frozen=True)
class ReadLimits:
    """Largest source file and row, in bytes (None: no limit)."""

    max_row_bytes: int | None = None
    max_file_bytes: int | None = None


_LIMITS: ContextVar[ReadLimits] = ContextVar("sftkit_read_limits", default=ReadLimits())  # noqa: B039 - frozen
LIMIT_HINT = "Raise data.{key} (null: no limit) if this is meant, or fix the source."


@contextmanager
def read_limits(limits: ReadLimits) -> Iterator[None]:
    """Apply `limits` to every source read inside the block (this thread/task only)."""
    token = _LIMITS.set(limits)
    try:
        yield
    finally:
        _LIMITS.reset(token)


FILE_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def check_source_file(path: Path, *, limited: bool = True) -> int:
    """The size of `path`, a regular file (through symlinks); `DataError` for anything else
    or, when `limited`, for a file over data.max_file_bytes."""
    try:
        info = path.stat()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}.") from exc
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in FILE_KINDS if test(info.st_mode)), "not a file")
        raise DataError(
            f"{path} is {kind}, not a regular file: sftkit reads data only from files.",
            hint="Point the recipe at the data file itself (save a stream to a file first).",
        )
    limit = _LIMITS.get().max_file_bytes
    if limited and limit is not None and info.st_size > limit:
        raise DataError(
            f"{path} is {info.st_size:,} bytes, over data.max_file_bytes ({limit:,}).",
            hint=LIMIT_HINT.format(key="max_file_bytes"),
        )
    return info.st_size


def check_row_size(location: str, data: Any) -> None:
    """`DataError` for a row (already in memory: Parquet, the hub) over data.max_row_bytes."""
    limit = _LIMITS.get().max_row_bytes
    if limit is None:
        return
    size = len(json.dumps(data, ensure_ascii=False, default=str).encode())
    if size > limit:
        raise DataError(
            f"{location}: the row is {size:,} bytes, over data.max_row_bytes ({limit:,}).",
            hint=LIMIT_HINT.format(key="max_row_bytes"),
        )


def sha256_file(path: Path) -> str:
    check_source_file(path, limited=False)  # never hash /dev/zero forever
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def iter_jsonl(path: Path) -> Iterator[RawRow | tuple[str, str]]:
    """Rows of a JSONL file; a line that is not UTF-8 text or not a JSON value yields
    (location, problem)."""
    check_source_file(path)
    limit = _LIMITS.get().max_row_bytes
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}.") from exc
    with handle:
        index = 0
        line_no = 0
        offset = 0  # of the line's first byte in the file
        while True:
            # read at most one byte over the limit: a 50 MB line never lands in memory whole
            raw = handle.readline(limit + 1) if limit is not None else handle.readline()
            if not raw:
                break
            line_no += 1
            start, offset = offset, offset + len(raw)
            location = f"{path}:{line_no}"
            if limit is not None and len(raw.rstrip(b"\r\n")) > limit:
                raise DataError(
                    f"{location}: a row of more than {limit:,} bytes (data.max_row_bytes).",
                    hint=LIMIT_HINT.format(key="max_row_bytes"),
                )
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
    check_source_file(path)
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:
        raise DataError(f"cannot read Parquet file {path}: {exc}.") from exc
    for index, data in enumerate(rows):
        location = f"{path}:row {index + 1}"
        check_row_size(location, data)
        yield RawRow(location, index, data)


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
        location = f"{name}:row {index + 1}"
        check_row_size(location, data)
        yield RawRow(location, index, data)


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
