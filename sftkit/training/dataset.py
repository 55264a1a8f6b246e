"""The tokenized training set handed to the trainer: input_ids and a completion_mask per
example, both from `sftkit.data.tokenize` (1 on every trained segment: the answer, and each
trained assistant turn of a conversation).

TRL builds the labels from them with the recipe's ``SFTConfig(completion_only_loss=...)``:
-100 outside the mask when it is on, every token trained when it is off, which is exactly
`Encoded.labels` (what `sftkit preview` shows and eval-loss scores). TRL 1.0 to 1.16 all keep
a ``completion_mask`` column through truncation and packing (a ``labels`` column would be
dropped by 1.0's packing), and drop rows left with no trained token."""

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
            "completion_mask": [e.trained_mask for e in encoded],
        }
    )


def sft_dataset(examples: list[Example], template: Any, tokenizer: Any, recipe: Any) -> Any:
    """The ``sft`` objective's data (its `ObjectiveSpec.factory`)."""
    return tokenized_dataset(
        examples, template, tokenizer, completion_only_loss=recipe.data.completion_only_loss
    )
