"""The ``dpo`` objective (TRL's `DPOTrainer`): its data, its config and its trainer.

- data (`dpo_dataset`): each prepared preference pair (the ``preference`` format: an
  `Example` whose `completion` is the chosen answer and `rejected` the rejected one) as the
  recipe's template renders it: the prompt text, and each answer as the completion text
  the template would train on (its end-of-turn or EOS included). TRL tokenizes the pairs.
- config (`SftkitDpoConfig`): `DPOConfig` given the arguments sftkit builds for a run and
  the objective's options (``beta``, ``loss_type``).
- trainer (`SftkitDpoTrainer`): `DPOTrainer` with the run's collaborators
  (`RunTrainerMixin`). The reference model: with adapters (LoRA, QLoRA) TRL keeps the
  reference as a frozen copy of the adapters (``ref``) on the same base weights, so no second
  model; under full training the trainer is given a frozen copy of the model, which the
  estimator prices (`ObjectiveSpec.reference_copy`).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from trl import DPOConfig, DPOTrainer

from sftkit import compat
from sftkit.errors import DataError
from sftkit.training.reference import ReferenceAdapterNotFinal
from sftkit.training.trainer import RunTrainerMixin


def dpo_dataset(split: Any, template: Any, tokenizer: Any, recipe: Any) -> Any:
    """The split's preference pairs as {prompt, chosen, rejected} texts (TRL's layout)."""
    from datasets import Dataset

    rows = []
    for example in split:
        if example.rejected is None:
            raise DataError(
                f"example {example.id} of {split.path} has no rejected answer: the dpo "
                "objective trains on preference pairs.",
                hint="Use data.format: preference (rows of {prompt, chosen, rejected}), or "
                "training.objective: sft for prompt/completion data.",
            )
        rejected = dataclasses.replace(example, completion=example.rejected)
        rows.append(
            {
                "prompt": template.prompt_text(example, tokenizer),
                "chosen": template.completion_text(example, tokenizer),
                "rejected": template.completion_text(rejected, tokenizer),
            }
        )
    return Dataset.from_list(rows)


@dataclasses.dataclass
class SftkitDpoConfig(DPOConfig):
    """`DPOConfig` taking every argument sftkit builds for a run (the objective's options,
    ``beta`` and ``loss_type``, are its own fields). SFT's data shaping does not apply to
    pairs: TRL's DPO loss is over the answers only and pairs are not packed, so these three
    are taken and left unused."""

    packing: bool = False
    packing_strategy: str = "bfd"
    completion_only_loss: bool | None = None


class SftkitDpoTrainer(
    ReferenceAdapterNotFinal, RunTrainerMixin, compat.WeightsOnlyRestart, DPOTrainer
):
    """TRL's DPOTrainer running a sftkit recipe (the ``dpo`` objective)."""

    def __init__(self, *, model: Any, **kwargs: Any) -> None:
        from accelerate.utils import is_peft_model

        reference = None
        if not is_peft_model(model):
            # Full training: the reference is the model as it starts, frozen. (TRL would
            # load it again from the model's hub id, which a local or built model lacks.)
            reference = copy.deepcopy(model).requires_grad_(False).eval()
        super().__init__(model=model, ref_model=reference, **kwargs)
