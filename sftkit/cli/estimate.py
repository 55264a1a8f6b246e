"""`sftkit estimate-memory`: will the recipe fit, where is the peak, what to change.

Torch-free unless `--measure` is given (which imports torch inside the command).
"""

from __future__ import annotations

import json

import click

from sftkit.cli.app import AppContext, pass_app
from sftkit.cli.core import recipe_arguments, show_notes
from sftkit.errors import EXIT_DOES_NOT_FIT, EXIT_INTERNAL
from sftkit.recipe.load import load_recipe


@click.command(name="estimate-memory")
@recipe_arguments
@click.option(
    "--gpu",
    metavar="NAME|SIZE",
    help="A GPU name (A100-40GB, H100-80GB, ...), a size (40GB, 40GiB), 'auto' (the present "
    "device) or 'cpu'. Default: the recipe's hardware.gpu.",
)
@click.option(
    "--model",
    "model",
    metavar="ID|PATH",
    help="Estimate for another model: a hub id, a directory or a config.json path.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object (bytes) instead of the table."
)
@click.option(
    "--fit", is_flag=True, help="Also search the largest micro-batch and sequence length that fit."
)
@click.option(
    "--measure",
    is_flag=True,
    help="Run one real forward, backward and optimizer step (and a generating objective's "
    "rollout) on the present device (random tokens) and print predicted against measured. "
    "Needs the training stack.",
)
@pass_app
def estimate_memory(
    app: AppContext,
    recipe: str,
    overrides: tuple[str, ...],
    gpu: str | None,
    model: str | None,
    as_json: bool,
    fit: bool,
    measure: bool,
) -> None:
    """Predict peak GPU memory per phase of RECIPE, before any weights load.

    \b
    Exit status: 0 fits, 3 does not fit, 2 bad input. All figures in GiB (2**30 bytes);
    --json gives bytes.
    \b
      sftkit estimate-memory recipes/r1_gsm8k_qlora.yaml
      sftkit estimate-memory recipes/r1_gsm8k_full.yaml --gpu H100-80GB
      sftkit estimate-memory recipes/r1_gsm8k_qlora.yaml --fit --json
    """
    from sftkit.memory import estimate

    resolved = load_recipe(recipe, overrides, registry=app.registry)
    show_notes(resolved)
    result = estimate(resolved, gpu=gpu, model=model)
    if fit:
        from sftkit.memory.advice import fit_search

        result.fit_search = fit_search(resolved, gpu=gpu, model=model)
    comparison = None
    if measure:
        from sftkit.training.measure import measure_recipe

        comparison = measure_recipe(resolved, result, model=model)
    if as_json:
        data = result.to_dict()
        if comparison is not None:
            data["measured"] = comparison.to_dict()
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(result.render())
        if comparison is not None:
            click.echo("")
            click.echo(comparison.render())
    if comparison is not None and not comparison.ok:
        raise click.exceptions.Exit(EXIT_INTERNAL)
    if not result.fits:
        raise click.exceptions.Exit(EXIT_DOES_NOT_FIT)
