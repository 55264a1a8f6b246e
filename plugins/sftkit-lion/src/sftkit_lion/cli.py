"""`sftkit lion-convert`: turn an AdamW recipe into the equivalent Lion recipe.

Lion's sign update has a larger norm than AdamW's, so the Lion paper (Chen et al. 2023, sec. 5)
recommends an lr 3-10x smaller and a weight decay 3-10x larger, which keeps lr * wd, the
effective decay, the same. The converted recipe is validated before it is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
import yaml

if TYPE_CHECKING:
    from sftkit import AppContext

# AdamW-family optimizer -> the Lion with the same memory placement.
_LION_FOR = {
    "adamw": "lion-32bit",
    "paged-adamw-32bit": "lion-32bit",
    "adamw-8bit": "lion-8bit",
    "paged-adamw-8bit": "paged-lion-8bit",
}


@click.command(name="lion-convert")
@click.argument("recipe")
@click.option(
    "--ratio",
    default=3.0,
    show_default=True,
    type=click.FloatRange(min=1.0),
    help="Divide lr and multiply weight decay by this factor (the paper: 3-10).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the converted recipe here (default: print it).",
)
@click.pass_obj
def lion_convert(app: AppContext, recipe: str, ratio: float, output: Path | None) -> None:
    """Print (or write) RECIPE with its AdamW optimizer replaced by the matching Lion."""
    from sftkit import DataError, RecipeError, SftkitError, find_recipe, load_recipe_text

    path = find_recipe(recipe)
    text = path.read_text(encoding="utf-8")
    resolved = load_recipe_text(text, registry=app.registry, source=str(path))
    current = resolved.optimizer.spec.name
    if current not in _LION_FOR:
        raise SftkitError(
            f"{path}: optimizer.name is {current!r}; lion-convert converts "
            f"{', '.join(sorted(_LION_FOR))}.",
            hint="Set optimizer.name to lion-8bit by hand for other optimizers.",
        )
    options = resolved.optimizer.options
    data = yaml.safe_load(text)
    new_options = {
        "lr": float(f"{options.lr / ratio:.3g}"),
        "betas": [0.9, 0.99],
        "weight_decay": float(f"{options.weight_decay * ratio:.3g}"),
    }
    data["optimizer"] = {"name": _LION_FOR[current], "options": new_options}
    converted = (
        f"# Converted from {path.name} by `sftkit lion-convert --ratio {ratio:g}`:\n"
        f"# {current} lr {options.lr:g} -> {_LION_FOR[current]} lr {new_options['lr']:g}, "
        f"weight decay {options.weight_decay:g} -> {new_options['weight_decay']:g}.\n"
        + yaml.safe_dump(data, sort_keys=False)
    )
    try:
        load_recipe_text(converted, registry=app.registry, source="converted recipe")
    except RecipeError as exc:  # pragma: no cover - only if sftkit's schema moved under us
        raise SftkitError(f"the converted recipe does not validate: {exc}") from exc
    if output is None:
        click.echo(converted, nl=False)
        return
    if output.exists():
        raise DataError(
            f"{output} already exists; lion-convert never overwrites a file.",
            hint="Choose another --output path or remove the file first.",
        )
    output.write_text(converted, encoding="utf-8")
    click.echo(f"wrote {output}")
