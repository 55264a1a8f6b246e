"""The tokenized training set handed to the trainer: input_ids and labels per example,
labels already masked by `sftkit.data.tokenize` (TRL keeps a given labels column as is,
truncates to max_length, drops fully masked rows, and packs when asked)."""

from __future__ import annotations

from typing import Any

from sftkit import progress
from sftkit.data.example import Example
from sftkit.data.tokenize import encode_example
from sftkit.errors import DataError

SHOWN_EVERY = 256  # examples between progress updates


def tokenized_dataset(
    examples: list[Example], template: Any, tokenizer: Any, *, completion_only_loss: bool
) -> Any:
    from datasets import Dataset

    if not examples:
        raise DataError("the train split is empty: there is nothing to train on.")
    encoded = []
    with progress.current().stage("tokenize", len(examples)) as stage:
        for i, example in enumerate(examples, start=1):
            encoded.append(
                encode_example(
                    template, example, tokenizer, completion_only_loss=completion_only_loss
                )
            )
            if i % SHOWN_EVERY == 0 or i == len(examples):
                stage.update(i)
    return Dataset.from_dict(
        {
            "input_ids": [e.input_ids for e in encoded],
            "labels": [e.labels for e in encoded],
        }
    )
