"""Stage 3, the data: prepare the recipe's splits (`sftkit.data.prepare`), load the
tokenizer, and build what the training objective trains on (its `ObjectiveSpec.factory`):
the train split, and the dev split when the recipe evaluates the loss while training."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sftkit.errors import Problem, RecipeError
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

    train = split("train")
    check_batch_fits_data(resolved, len(train), prepared.directory)
    dev = split("dev") if recipe.training.eval_steps is not None else None
    return TrainingData(tokenizer, train, dev)


def check_batch_fits_data(resolved: ResolvedRecipe, rows: int, directory: Any) -> None:
    """A micro-batch larger than the whole train set is a typo, not a request: the trainer
    would make one batch of the whole set (and pad it to the longest row). Known only now,
    once the data is prepared."""
    size = resolved.recipe.training.micro_batch_size
    if size > rows:
        raise RecipeError(
            [
                Problem(
                    "training.micro_batch_size",
                    f"{size} is larger than the train set, which has {rows} rows "
                    f"(prepared in {directory}); every step would be one batch of the whole "
                    "set.",
                    f"Set training.micro_batch_size to at most {rows} (and raise "
                    "training.gradient_accumulation_steps for a larger effective batch).",
                )
            ],
            source=resolved.source,
        )
