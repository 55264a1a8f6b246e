"""Dataset formats: read a source into train (and test) `Example`s, validating every row.

Each class is the factory of one dataset-format plugin (see `sftkit.builtin.formats`). A
format only converts rows: where they come from (a hub id, a `datasets` directory, local
JSONL/JSON/Parquet/CSV files or globs) is `sftkit.data.sources.read_splits`'s job, and
splitting off dev, the leak check and writing the prepared files are common to all formats
(`sftkit.data.prepare`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from sftkit.data.example import Example, Message
from sftkit.data.readers import (
    RawRow,
    ReadReport,
    RowError,
    SourceInfo,
    convert_rows,
    iter_rows,
    require_text,
)
from sftkit.data.sources import read_splits


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


def example_id(row: RawRow) -> str:
    return f"{row.split or 'train'}-{row.index:05d}"


class SourceFormat:
    """A format whose options are `SourceOptions`: rows from anywhere, converted one by one."""

    def __init__(self, options: Any) -> None:
        self.options = options

    def convert(self, row: RawRow) -> Example:  # pragma: no cover - abstract
        raise NotImplementedError

    def read(self, *, skip_bad_rows: bool) -> RawSplits:
        splits: RawSplits = read_splits(self.options, self.convert, skip_bad_rows=skip_bad_rows)
        return splits


# --------------------------------------------------------------------------- GSM8K
# The only format that knows GSM8K's '#### N' answer line: the others take a row's own
# reference_answer, if any (the gsm8k evaluator reads '#### N' off the completion otherwise).

GSM8K_ANSWER = re.compile(r"^####\s*(-?[\d,]*\.?\d+)\s*$")
CALCULATOR = re.compile(r"<<[^<>]*>>")


def final_answer(answer: str) -> tuple[str, str]:
    """Split a GSM8K-style answer into (reasoning, number) at its last '#### N' line."""
    lines = answer.rstrip().splitlines()
    match = GSM8K_ANSWER.match(lines[-1].strip()) if lines else None
    if match is None:
        raise RowError("'answer' does not end with a line '#### <number>'")
    return "\n".join(lines[:-1]).rstrip(), match.group(1).replace(",", "")


class Gsm8kFormat(SourceFormat):
    """GSM8K: {question, answer} rows whose answer ends with '#### N'."""

    def convert(self, row: RawRow) -> Example:
        question = require_text(row.data, "question")
        answer = require_text(row.data, "answer")
        reasoning, number = final_answer(answer)
        if not self.options.keep_calculator_annotations:
            reasoning = CALCULATOR.sub("", reasoning)
        completion = f"{reasoning}\n#### {number}" if reasoning else f"#### {number}"
        return Example(example_id(row), question.strip(), completion, number)


# --------------------------------------------------------------------------- prompt/completion


class PromptCompletionFormat(SourceFormat):
    """One {prompt, completion} object per row (field names configurable)."""

    def convert(self, row: RawRow) -> Example:
        prompt = require_text(row.data, self.options.prompt_field)
        completion = require_text(row.data, self.options.completion_field)
        reference = row.data.get("reference_answer")
        return Example(example_id(row), prompt, completion, reference if reference else None)


class AlpacaFormat(SourceFormat):
    """Alpaca: {instruction, input, output}; a non-empty input follows the instruction in
    the prompt, and an optional system field becomes a system message."""

    def convert(self, row: RawRow) -> Example:
        o = self.options
        instruction = require_text(row.data, o.instruction_field)
        output = require_text(row.data, o.output_field)
        extra = row.data.get(o.input_field)
        if extra is not None and not isinstance(extra, str):
            raise RowError(f"{o.input_field!r} must be a string, found {type(extra).__name__}")
        text = (
            f"{instruction.strip()}{o.separator}{extra.strip()}"
            if extra and extra.strip()
            else instruction.strip()
        )
        system = row.data.get(o.system_field) if o.system_field else None
        prompt: str | list[Message] = text
        if isinstance(system, str) and system.strip():
            prompt = [{"role": "system", "content": system}, {"role": "user", "content": text}]
        return Example(example_id(row), prompt, output)


# --------------------------------------------------------------------------- conversations

ROLES = ("system", "user", "assistant", "tool")
# ShareGPT's speaker names (and those of the datasets built like it) -> chat roles.
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
    "function_call": "assistant",
    "tool": "tool",
    "function": "tool",
    "function_response": "tool",
    "observation": "tool",
    "ipython": "tool",
}


@dataclass(frozen=True)
class Turn:
    role: str
    content: str
    train: bool | None  # the row's own say (`train`, or ShareGPT's `weight`), else None
    extra: dict[str, Any] = field(default_factory=dict)  # tool_calls, tool_call_id, name


def conversation_example(
    row: RawRow,
    turns: list[Turn],
    *,
    key: str,
    train_on: str,
    tools: list[dict[str, Any]] | None = None,
) -> Example:
    """One example per conversation: every assistant turn trained (``train_on: all``) or
    the last one (``last``), a turn's own ``train: false`` or ``true`` winning; the history
    before the last trained turn is the prompt (its trained turns marked ``train``), and
    what follows it is dropped (it cannot change the loss of the turns before)."""
    if not turns:
        raise RowError(f"{key!r} must be a non-empty list of messages")
    assistants = [i for i, t in enumerate(turns) if t.role == "assistant"]
    if not assistants:
        raise RowError(f"{key!r} has no assistant message to train on")
    default_on = set(assistants) if train_on == "all" else {assistants[-1]}
    trained = [
        i for i in assistants if (turns[i].train if turns[i].train is not None else i in default_on)
    ]
    if not trained:
        raise RowError(f"{key!r}: every assistant message has train: false")
    for i, t in enumerate(turns):
        if t.train is not None and t.role != "assistant":
            raise RowError(f"{key}[{i}]: 'train' applies to assistant messages, not {t.role}")
    last = trained[-1]
    if not any(t.role == "user" for t in turns[: trained[0]]):
        raise RowError(f"{key!r} has no user message before the first trained answer")
    if turns[last].extra.get("tool_calls"):
        raise RowError(
            f"{key}[{last}]: the last trained assistant message calls tools; sftkit trains "
            "tool calls in the history, so end the conversation with the assistant's answer"
        )
    history: list[Message] = []
    for i, t in enumerate(turns[:last]):
        message: Message = {"role": t.role, "content": t.content, **t.extra}
        if i in trained:
            message["train"] = True
        history.append(message)
    return Example(example_id(row), history, turns[last].content, tools=tools)


def with_reasoning(content: str, reasoning: Any, where: str) -> str:
    """A message's `reasoning_content` written into its content as a ``<think>`` block (how
    templates that know no such field render it; those that do read it back out)."""
    if reasoning is None:
        return content
    if not isinstance(reasoning, str):
        raise RowError(f"{where}.reasoning_content must be a string")
    return f"<think>\n{reasoning.strip()}\n</think>\n\n{content.lstrip()}"


def tool_calls_of(value: Any, where: str) -> list[dict[str, Any]]:
    """A message's tool calls as chat templates take them: OpenAI's ``{type, function:
    {name, arguments}}`` objects, arguments given as a JSON string parsed into an object."""
    if not isinstance(value, list) or not all(isinstance(c, dict) for c in value):
        raise RowError(f"{where}.tool_calls must be a list of objects")
    calls = []
    for i, call in enumerate(value):
        function = call.get("function", call)
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise RowError(f"{where}.tool_calls[{i}] needs a function name")
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                raise RowError(
                    f"{where}.tool_calls[{i}].arguments is not JSON ({exc.msg})"
                ) from exc
        calls.append(
            {
                **call,
                "type": call.get("type", "function"),
                "function": {**function, "arguments": arguments},
            }
        )
    return calls


def tools_of(value: Any, key: str) -> list[dict[str, Any]] | None:
    """A row's tool definitions (a list of JSON schemas, or that list as a JSON string)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise RowError(f"{key!r} is not JSON ({exc.msg})") from exc
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise RowError(f"{key!r} must be a list of tool definitions (objects)")
    return value or None


def _flag(message: dict[str, Any], where: str) -> bool | None:
    if "train" in message:
        value = message["train"]
        if not isinstance(value, bool):
            raise RowError(f"{where}.train must be true or false, found {value!r}")
        return value
    if "weight" in message and message["weight"] is not None:  # ShareGPT/axolotl: 0 or 1
        if message["weight"] not in (0, 1):
            raise RowError(f"{where}.weight must be 0 or 1, found {message['weight']!r}")
        return bool(message["weight"])
    return None


class ChatFormat(SourceFormat):
    """{messages: [{role, content, train?}, ...]}: roles system, user, assistant, tool; one
    example per conversation, every assistant turn trained unless ``train_on: last`` or its
    own ``train: false``."""

    def convert(self, row: RawRow) -> Example:
        data = row.data
        if not isinstance(data, dict):
            raise RowError(f"expected a JSON object, found {type(data).__name__}")
        key = self.options.messages_field
        messages = data.get(key)
        if not isinstance(messages, list) or not messages:
            raise RowError(f"{key!r} must be a non-empty list of {{role, content}} objects")
        turns = []
        for i, message in enumerate(messages):
            where = f"{key}[{i}]"
            if not isinstance(message, dict):
                raise RowError(f"{where} is not an object")
            role, content = message.get("role"), message.get("content")
            if role not in ROLES:
                raise RowError(f"{where}.role must be one of {', '.join(ROLES)}, found {role!r}")
            extra: dict[str, Any] = {}
            if message.get("tool_calls") is not None:
                if role != "assistant":
                    raise RowError(f"{where}: only assistant messages call tools, not {role}")
                extra["tool_calls"] = tool_calls_of(message["tool_calls"], where)
                content = content or ""
            for name in ("tool_call_id", "name"):
                if isinstance(message.get(name), str):
                    extra[name] = message[name]
            if not isinstance(content, str):
                raise RowError(f"{where}.content must be a string")
            content = with_reasoning(content, message.get("reasoning_content"), where)
            turns.append(Turn(role, content, _flag(message, where), extra))
        if self.options.train_on == "last" and turns[-1].role != "assistant":
            raise RowError(f"the last message of {key!r} must be the assistant's answer")
        tools = tools_of(data.get(self.options.tools_field), self.options.tools_field)
        return conversation_example(
            row, turns, key=key, train_on=self.options.train_on, tools=tools
        )


class ShareGptFormat(SourceFormat):
    """ShareGPT: {conversations: [{from, value}, ...], system?}; speakers human/gpt/system/
    tool/function/observation (and the `roles` option's own names) become chat roles."""

    def convert(self, row: RawRow) -> Example:
        data = row.data
        if not isinstance(data, dict):
            raise RowError(f"expected a JSON object, found {type(data).__name__}")
        o = self.options
        key = o.conversations_field
        messages = data.get(key)
        if not isinstance(messages, list) or not messages:
            raise RowError(f"{key!r} must be a non-empty list of {{from, value}} objects")
        roles = {**SHAREGPT_ROLES, **o.roles}
        turns: list[Turn] = []
        system = data.get(o.system_field) if o.system_field else None
        if isinstance(system, str) and system.strip():
            turns.append(Turn("system", system, None))
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise RowError(f"{key}[{i}] is not an object")
            speaker, value = message.get(o.role_field), message.get(o.content_field)
            role = roles.get(speaker) if isinstance(speaker, str) else None
            if role is None:
                known = ", ".join(sorted(roles))
                raise RowError(
                    f"{key}[{i}].{o.role_field} {speaker!r} is not a speaker sftkit knows ({known}); "
                    "map it with data.format.options.roles"
                )
            if not isinstance(value, str):
                raise RowError(f"{key}[{i}].{o.content_field} must be a string")
            turns.append(Turn(role, value, _flag(message, f"{key}[{i}]")))
        return conversation_example(row, turns, key=key, train_on=o.train_on)


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
            tagged = (_in_split(row, split) for row in iter_rows(rows, name))
            splits[split] = convert_rows(
                tagged, converter.convert, source=name, skip_bad_rows=False, report=report
            )
            report.sources.append(
                SourceInfo(split, f"generated:{name} seed={o.seed}", len(splits[split]))
            )
        return RawSplits(splits["train"], splits["test"], report)


def _in_split(row: RawRow | tuple[str, str], split: str) -> RawRow | tuple[str, str]:
    if isinstance(row, RawRow):
        row.split = split
    return row


class _Gsm8kDefaults:
    keep_calculator_annotations = True
