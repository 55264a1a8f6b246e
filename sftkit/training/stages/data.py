"""Stage 3, the data: prepare the recipe's splits (`sftkit.data.prepare`), load the
tokenizer, and build what the training objective trains on (its `ObjectiveSpec.factory`):
the train split, and the dev split when the recipe evaluates the loss while training."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sftkit.specs import load_factory

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe


@dataclass(frozen=True)
class TrainingData:
    tokenizer: Any  # a transformers tokenizer
    train: Any  # a datasets.Dataset
    dev: Any = None  # the dev split as trained on, for the eval loss (training.eval_steps)


def prepare(resolved: ResolvedRecipe, say: Callable[..., None]) -> TrainingData:
    from sftkit.data.prepare import prepare_data
    from sftkit.data.tokenized import PreparedSplit
    from sftkit.modeling import load_tokenizer

    recipe = resolved.recipe
    prepared = prepare_data(resolved)
    for warning in prepared.warnings:
        say(f"[yellow]data warning:[/yellow] {warning}")
    counts = prepared.counts
    say(
        f"data: {counts['train']} train / {counts['dev']} dev / {counts['test']} test "
        f"examples in {prepared.directory}"
    )
    tokenizer = load_tokenizer(recipe)
    template = load_factory(resolved.template.spec.factory)(resolved.template.options)
    objective = resolved.registry.objectives.get(recipe.training.objective)
    build = load_factory(objective.factory)

    def split(name: Literal["train", "dev"]) -> Any:
        return build(PreparedSplit(prepared, name), template, tokenizer, recipe)

    dev = split("dev") if recipe.training.eval_steps is not None else None
    return TrainingData(tokenizer, split("train"), dev)
