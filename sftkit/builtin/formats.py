"""Built-in dataset formats: GSM8K, prompt/completion, Alpaca, chat messages, ShareGPT, and
the synthetic arithmetic set the offline quickstart trains on. All but the synthetic set read
any source (`SourceOptions`): a hub id, a `datasets` directory, local files or globs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from sftkit.hookspecs import Register, hookimpl
from sftkit.specs import DatasetFormatSpec, Options


class SplitOptions(Options):
    dev_size: int = Field(default=200, ge=0, description="Rows of train held out as the dev split.")
    split_seed: int = Field(default=1234, description="Seed of the train/dev split.")
    skip_bad_rows: bool = Field(
        default=False, description="Skip malformed rows (counted) instead of failing."
    )


class SourceOptions(SplitOptions):
    """Where a format's rows come from (`sftkit.data.sources.read_splits` reads them): a
    `source` holding named splits, or explicit `train_file` / `test_file`."""

    source: str | None = Field(
        default=None,
        description="Hub dataset id (org/name), a `datasets` save_to_disk directory, a "
        "directory of train/test files, or local files/globs (JSONL, JSON, Parquet, CSV) "
        "holding the train split.",
    )
    config: str | None = Field(default=None, description="Hub dataset config (subset).")
    revision: str | None = Field(default=None, description="Hub dataset revision.")
    train_split: str = Field(default="train", description="The source's split to train on.")
    test_split: str | None = Field(
        default="test", description="The source's test split, used when it has one; null: none."
    )
    train_file: str | None = Field(
        default=None,
        description="Train rows: local files or a glob (JSONL, JSON, Parquet, CSV), or a hub id; "
        "instead of source.",
    )
    test_file: str | None = Field(default=None, description="Test rows, like train_file.")

    @model_validator(mode="before")
    @classmethod
    def _train_file_replaces_a_default_source(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("train_file") and "source" not in data:
            return {**data, "source": None}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> SourceOptions:
        if self.train_file and self.source:
            raise ValueError("set source or train_file, not both")
        if not self.train_file and not self.source:
            raise ValueError("set source (a hub id, directory, file or glob) or train_file")
        return self


class Gsm8kOptions(SourceOptions):
    source: str | None = Field(
        default="openai/gsm8k",
        description="Hub dataset id, a `datasets` directory, a directory with train/test "
        ".jsonl or .parquet files, or local files/globs.",
    )
    config: str | None = Field(default="main", description="Hub dataset config.")
    keep_calculator_annotations: bool = Field(
        default=False,
        description="Keep GSM8K's '<<48/2=24>>' calculator annotations in the reasoning.",
    )


class PromptCompletionOptions(SourceOptions):
    prompt_field: str = "prompt"
    completion_field: str = "completion"


class AlpacaOptions(SourceOptions):
    instruction_field: str = "instruction"
    input_field: str = Field(default="input", description="Optional; follows the instruction.")
    output_field: str = "output"
    system_field: str | None = Field(
        default="system", description="Optional field holding a system message; null: none."
    )
    separator: str = Field(default="\n\n", description="Between the instruction and the input.")


TrainOn = Literal["all", "last"]


class ChatOptions(SourceOptions):
    messages_field: str = "messages"
    tools_field: str = Field(
        default="tools",
        description="The column of tool definitions (JSON schemas, or them as a JSON string) "
        "the chat template is given with the conversation.",
    )
    train_on: TrainOn = Field(
        default="all",
        description="Which assistant turns train: every one (one example per conversation, "
        "the rest masked), or the last only. A message's own 'train' wins.",
    )


class ShareGptOptions(SourceOptions):
    conversations_field: str = "conversations"
    role_field: str = "from"
    content_field: str = "value"
    system_field: str | None = Field(
        default="system", description="Optional field holding a system prompt; null: none."
    )
    roles: dict[str, Literal["system", "user", "assistant", "tool"]] = Field(
        default_factory=dict,
        description="More speaker names -> roles, beside human/gpt/system/tool/function/...",
    )
    train_on: TrainOn = Field(default="all", description="As for the chat format.")


class SyntheticArithmeticOptions(SplitOptions):
    train_size: int = Field(default=2000, ge=1)
    test_size: int = Field(default=200, ge=1)
    max_operand: int = Field(default=20, ge=2, description="Largest number in a problem.")
    operations: list[Literal["add", "sub", "mul"]] = Field(
        default_factory=lambda: list[Literal["add", "sub", "mul"]](["add", "sub"]),
        min_length=1,
        description="Kinds of problem to generate (mul uses factors up to 10).",
    )
    seed: int = Field(default=0, description="Seed of the generator (test uses a derived seed).")


FORMATS = (
    DatasetFormatSpec(
        name="gsm8k",
        summary="GSM8K word problems (question/answer ending '#### N'), from the hub or local files.",
        factory="sftkit.data.formats:Gsm8kFormat",
        options_model=Gsm8kOptions,
    ),
    DatasetFormatSpec(
        name="prompt-completion",
        summary="Rows of {prompt, completion} pairs.",
        factory="sftkit.data.formats:PromptCompletionFormat",
        options_model=PromptCompletionOptions,
    ),
    DatasetFormatSpec(
        name="alpaca",
        summary="Alpaca rows {instruction, input, output}: the input follows the instruction.",
        factory="sftkit.data.formats:AlpacaFormat",
        options_model=AlpacaOptions,
    ),
    DatasetFormatSpec(
        name="chat",
        summary="Conversations {messages: [{role, content}]}: every assistant turn trained.",
        factory="sftkit.data.formats:ChatFormat",
        options_model=ChatOptions,
    ),
    DatasetFormatSpec(
        name="sharegpt",
        summary="ShareGPT {conversations: [{from, value}]}: human/gpt/system/tool speakers.",
        factory="sftkit.data.formats:ShareGptFormat",
        options_model=ShareGptOptions,
    ),
    DatasetFormatSpec(
        name="synthetic-arithmetic",
        summary="Generated GSM8K-style arithmetic word problems (offline quickstart).",
        factory="sftkit.data.formats:SyntheticArithmeticFormat",
        options_model=SyntheticArithmeticOptions,
    ),
)


@hookimpl(trylast=True)
def register_dataset_formats(register: Register) -> None:
    for spec in FORMATS:
        register(spec)
