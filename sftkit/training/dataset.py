"""The tokenized training set handed to the trainer: input_ids and a completion_mask per
example, both from `sftkit.data.tokenize` (1 on every trained segment: the answer, and each
trained assistant turn of a conversation), built once per set of inputs and cached
(`sftkit.data.tokenized`).

TRL builds the labels from them with the recipe's ``SFTConfig(completion_only_loss=...)``:
-100 outside the mask when it is on, every token trained when it is off, which is exactly
`Encoded.labels` (what `sftkit preview` shows and eval-loss scores). TRL 1.0 to 1.16 all keep
a ``completion_mask`` column through truncation and packing (a ``labels`` column would be
dropped by 1.0's packing), and drop rows left with no trained token."""

from __future__ import annotations

from typing import Any

from sftkit.data.tokenized import PreparedSplit, tokenized_split


def sft_dataset(split: PreparedSplit, template: Any, tokenizer: Any, recipe: Any) -> Any:
    """The ``sft`` objective's data (its `ObjectiveSpec.factory`)."""
    return tokenized_split(split, template, tokenizer, recipe, objective="sft")
