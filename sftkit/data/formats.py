"""Dataset formats: read a source into train (and test) `Example`s, validating every row.

Each class is the factory of one dataset-format plugin (see `sftkit.builtin.formats`). A
format only reads and validates; splitting off dev, the leak check and writing the prepared
files are common to all formats (`sftkit.data.prepare`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sftkit.data.example import Example, Message
from sftkit.data.readers import (
    RawRow,
    ReadReport,
    RowError,
    SourceInfo,
    convert_rows,
    iter_file,
    iter_rows,
    require_text,
    sha256_file,
)
from sftkit.errors import DataError

GSM8K_ANSWER = re.compile(r"^####\s*(-?[\d,]*\.?\d+)\s*$")
CALCULATOR = re.compile(r"<<[^<>]*>>")


@dataclass
class RawSplits:
    """What a dataset format's ``read`` returns: the source's train examples, its test
    examples (None when the source has no test split), and what was read and skipped.
    sftkit splits dev off train, checks test against train, and writes the files."""

    train: list[Example]
    test: list[Example] | None
    report: ReadReport = field(default_factory=ReadReport)


class DatasetFormat(Protocol):
    """What a dataset-format factory returns: ``factory(options) -> DatasetFormat``.

    `read` validates every row (`RowError` -> ``FILE:LINE: problem``, see
    `sftkit.data.readers`); with `skip_bad_rows` it counts bad rows in ``report.skipped``
    instead of raising `DataError`.
    """

    def read(self, *, skip_bad_rows: bool) -> RawSplits: ...


def final_answer(answer: str) -> tuple[str, str]:
    """Split a GSM8K-style answer into (reasoning, number) at its last '#### N' line."""
    lines = answer.rstrip().splitlines()
    match = GSM8K_ANSWER.match(lines[-1].strip()) if lines else None
    if match is None:
        raise RowError("'answer' does not end with a line '#### <number>'")
    return "\n".join(lines[:-1]).rstrip(), match.group(1).replace(",", "")


def _split_files(directory: Path, split: str) -> list[Path]:
    patterns = (f"{split}.jsonl", f"{split}.parquet", f"{split}-*.parquet", f"*/{split}-*.parquet")
    found: list[Path] = []
    for pattern in patterns:
        found.extend(p for p in sorted(directory.glob(pattern)) if p not in found)
    return found


def read_local_splits(
    directory: Path,
    convert: Any,
    *,
    skip_bad_rows: bool,
    report: ReadReport,
) -> dict[str, list[Example]]:
    """train and test from `directory` (train.jsonl / test.jsonl, or Parquet shards)."""
    if not directory.is_dir():
        raise DataError(f"data source {str(directory)!r} is not a directory.")
    out: dict[str, list[Example]] = {}
    for split in ("train", "test"):
        files = _split_files(directory, split)
        if not files:
            if split == "train":
                raise DataError(
                    f"no train file in {directory}: expected train.jsonl or train*.parquet.",
                )
            continue
        examples: list[Example] = []
        for path in files:
            rows = _with_ids(iter_file(path), split, offset=len(examples))
            got = convert_rows(
                rows, convert, source=str(path), skip_bad_rows=skip_bad_rows, report=report
            )
            report.sources.append(SourceInfo(split, str(path), len(got), sha256_file(path)))
            examples.extend(got)
        out[split] = examples
    return out


def _with_ids(
    rows: Iterator[RawRow | tuple[str, str]], split: str, offset: int
) -> Iterator[RawRow | tuple[str, str]]:
    """Tag each row with its split and a stable position-based id."""
    for row in rows:
        if isinstance(row, RawRow):
            row.index += offset
            row.data = {"__split": split, "__data": row.data}
        yield row


def _unwrap(row: RawRow) -> tuple[str, Any]:
    wrapped = row.data
    return wrapped["__split"], wrapped["__data"]


# --------------------------------------------------------------------------- GSM8K


class Gsm8kFormat:
    """GSM8K: {question, answer} rows whose answer ends with '#### N'."""

    def __init__(self, options: Any) -> None:
        self.options = options

    def convert(self, row: RawRow) -> Example:
        split, data = _unwrap(row)
        question = require_text(data, "question")
        answer = require_text(data, "answer")
        reasoning, number = final_answer(answer)
        if not self.options.keep_calculator_annotations:
            reasoning = CALCULATOR.sub("", reasoning)
        completion = f"{reasoning}\n#### {number}" if reasoning else f"#### {number}"
        return Example(f"{split}-{row.index:05d}", question.strip(), completion, number)

    def read(self, *, skip_bad_rows: bool) -> RawSplits:
        report = ReadReport()
        source = self.options.source
        path = Path(source).expanduser()
        if path.exists():
            splits = read_local_splits(
                path, self.convert, skip_bad_rows=skip_bad_rows, report=report
            )
        else:
            splits = self._read_hub(source, skip_bad_rows=skip_bad_rows, report=report)
        return RawSplits(splits["train"], splits.get("test"), report)

    def _read_hub(self, source: str, *, skip_bad_rows: bool, report: ReadReport) -> dict[str, Any]:
        if source.count("/") != 1 or source.startswith((".", "/", "~")):
            raise DataError(
                f"GSM8K source {source!r} is neither an existing directory nor a hub id (org/name).",
                hint="Point data.format.options.source at a directory holding train.jsonl and test.jsonl.",
            )
        try:
            import datasets
        except ImportError as exc:  # pragma: no cover
            raise DataError(
                "loading from the hub needs the `datasets` package.",
                hint="pip install 'sftkit[train]'",
            ) from exc
        try:
            loaded = datasets.load_dataset(source, self.options.config)
        except Exception as exc:
            raise DataError(
                f"cannot load {source!r} (config {self.options.config!r}) from the hub: "
                f"{type(exc).__name__}: {exc}",
                hint="Offline? Set data.format.options.source to a directory with the GSM8K "
                "train.jsonl and test.jsonl files.",
            ) from exc
        out: dict[str, list[Example]] = {}
        for split in ("train", "test"):
            if split not in loaded:
                continue
            name = f"{source}[{split}]"
            rows = _with_ids(iter_rows(list(loaded[split]), name), split, offset=0)
            got = convert_rows(
                rows, self.convert, source=name, skip_bad_rows=skip_bad_rows, report=report
            )
            fingerprint = getattr(loaded[split], "_fingerprint", None)
            report.sources.append(SourceInfo(split, f"hub:{name}", len(got), fingerprint))
            out[split] = got
        if "train" not in out:
            raise DataError(f"hub dataset {source!r} has no train split.")
        return out


# --------------------------------------------------------------------------- generic JSONL


class _FileFormat:
    """Formats with a train file and an optional test file (JSONL or Parquet)."""

    def __init__(self, options: Any) -> None:
        self.options = options

    def convert(self, row: RawRow) -> Example:  # pragma: no cover - abstract
        raise NotImplementedError

    def read(self, *, skip_bad_rows: bool) -> RawSplits:
        report = ReadReport()
        train = self._read_file("train", self.options.train_file, skip_bad_rows, report)
        test = None
        if self.options.test_file:
            test = self._read_file("test", self.options.test_file, skip_bad_rows, report)
        return RawSplits(train, test, report)

    def _read_file(
        self, split: str, name: str, skip_bad_rows: bool, report: ReadReport
    ) -> list[Example]:
        path = Path(name).expanduser()
        key = f"data.format.options.{split}_file"
        if path.is_dir():
            inside = sorted(
                p.name for p in path.iterdir() if p.suffix in (".jsonl", ".json", ".parquet")
            )
            raise DataError(
                f"{key}: {name!r} is a directory; this format reads one JSONL or Parquet file."
                + (f" It holds {', '.join(inside[:5])}." if inside else ""),
                hint=f"Set {key} to the file itself"
                + (f", e.g. {str(path / inside[0])!r}." if inside else "."),
            )
        if not path.exists():  # a device or FIFO exists: the reader says what it is
            raise DataError(
                f"{key}: {split} file {name!r} does not exist (looked at {path.resolve()}).",
                hint=f"Set {key} to a JSONL or Parquet file.",
            )
        rows = _with_ids(iter_file(path), split, offset=0)
        got = convert_rows(
            rows, self.convert, source=str(path), skip_bad_rows=skip_bad_rows, report=report
        )
        report.sources.append(SourceInfo(split, str(path), len(got), sha256_file(path)))
        return got


class PromptCompletionFormat(_FileFormat):
    """One {prompt, completion} object per line (field names configurable)."""

    def convert(self, row: RawRow) -> Example:
        split, data = _unwrap(row)
        prompt = require_text(data, self.options.prompt_field)
        completion = require_text(data, self.options.completion_field)
        reference = data.get("reference_answer")
        if reference is None:
            try:
                reference = final_answer(completion)[1]
            except RowError:
                reference = None
        return Example(f"{split}-{row.index:05d}", prompt, completion, reference)


ROLES = ("system", "user", "assistant")


class ChatFormat(_FileFormat):
    """{messages: [{role, content}, ...]}: the last assistant turn is the completion."""

    def convert(self, row: RawRow) -> Example:
        split, data = _unwrap(row)
        if not isinstance(data, dict):
            raise RowError(f"expected a JSON object, found {type(data).__name__}")
        key = self.options.messages_field
        messages = data.get(key)
        if not isinstance(messages, list) or not messages:
            raise RowError(f"{key!r} must be a non-empty list of {{role, content}} objects")
        parsed: list[Message] = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise RowError(f"{key}[{i}] is not an object")
            role, content = message.get("role"), message.get("content")
            if role not in ROLES:
                raise RowError(f"{key}[{i}].role must be one of {', '.join(ROLES)}, found {role!r}")
            if not isinstance(content, str):
                raise RowError(f"{key}[{i}].content must be a string")
            parsed.append({"role": role, "content": content})
        if parsed[-1]["role"] != "assistant":
            raise RowError(f"the last message of {key!r} must be the assistant's answer")
        if not any(m["role"] == "user" for m in parsed[:-1]):
            raise RowError(f"{key!r} has no user message before the answer")
        completion = parsed[-1]["content"]
        try:
            reference: str | None = final_answer(completion)[1]
        except RowError:
            reference = None
        return Example(f"{split}-{row.index:05d}", parsed[:-1], completion, reference)


# --------------------------------------------------------------------------- synthetic


class SyntheticArithmeticFormat:
    """Generated GSM8K-style word problems (offline quickstart); see `sftkit.data.synthetic`."""

    def __init__(self, options: Any) -> None:
        self.options = options

    def read(self, *, skip_bad_rows: bool) -> RawSplits:
        from sftkit.data.synthetic import generate_splits

        o = self.options
        train_rows, test_rows = generate_splits(
            train_size=o.train_size,
            test_size=o.test_size,
            max_operand=o.max_operand,
            seed=o.seed,
            operations=tuple(o.operations),
        )
        report = ReadReport()
        converter = Gsm8kFormat(_Gsm8kDefaults())
        splits: dict[str, list[Example]] = {}
        for split, rows in (("train", train_rows), ("test", test_rows)):
            name = f"synthetic-arithmetic[{split}]"
            tagged = _with_ids(iter_rows(rows, name), split, offset=0)
            splits[split] = convert_rows(
                tagged, converter.convert, source=name, skip_bad_rows=False, report=report
            )
            report.sources.append(
                SourceInfo(split, f"generated:{name} seed={o.seed}", len(splits[split]))
            )
        return RawSplits(splits["train"], splits["test"], report)


class _Gsm8kDefaults:
    keep_calculator_annotations = True
