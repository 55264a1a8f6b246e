"""Built-in dataset formats: GSM8K, generic prompt/completion JSONL, chat messages, and the
synthetic arithmetic set the offline quickstart trains on."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sftkit.hookspecs import Register, hookimpl
from sftkit.specs import DatasetFormatSpec, Options


class SplitOptions(Options):
    dev_size: int = Field(default=200, ge=0, description="Rows of train held out as the dev split.")
    split_seed: int = Field(default=1234, description="Seed of the train/dev split.")
    skip_bad_rows: bool = Field(
        default=False, description="Skip malformed rows (counted) instead of failing."
    )


class Gsm8kOptions(SplitOptions):
    source: str = Field(
        default="openai/gsm8k",
        description="Hub dataset id, or a directory with train/test .jsonl or .parquet files.",
    )
    config: str = Field(default="main", description="Hub dataset config.")
    keep_calculator_annotations: bool = Field(
        default=False,
        description="Keep GSM8K's '<<48/2=24>>' calculator annotations in the reasoning.",
    )


class PromptCompletionOptions(SplitOptions):
    train_file: str = Field(description="JSONL with one {prompt, completion} object per line.")
    test_file: str | None = None
    prompt_field: str = "prompt"
    completion_field: str = "completion"


class ChatOptions(SplitOptions):
    train_file: str = Field(
        description="JSONL with one {messages: [{role, content}, ...]} per line."
    )
    test_file: str | None = None
    messages_field: str = "messages"


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
        summary="Generic JSONL of {prompt, completion} pairs.",
        factory="sftkit.data.formats:PromptCompletionFormat",
        options_model=PromptCompletionOptions,
    ),
    DatasetFormatSpec(
        name="chat",
        summary="JSONL of chat conversations: {messages: [{role, content}, ...]}.",
        factory="sftkit.data.formats:ChatFormat",
        options_model=ChatOptions,
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
