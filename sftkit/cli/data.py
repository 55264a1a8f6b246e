"""`sftkit prepare-data` and `sftkit preview`: the data a recipe trains on, before a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sftkit.cli.app import AppContext, pass_app
from sftkit.cli.core import recipe_arguments, show_notes


@click.command(name="prepare-data")
@recipe_arguments
@click.option(
    "--output",
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory for train/dev/test JSONL (default: data.prepared_dir or <output_dir>/data).",
)
@click.option(
    "--skip-bad-rows", is_flag=True, help="Skip malformed rows (counted) instead of failing."
)
@click.option("--force", is_flag=True, help="Replace data prepared earlier in that directory.")
@click.option(
    "--no-tokenize",
    is_flag=True,
    help="Only the JSONL splits: leave tokenizing (cached for every later run) to the run.",
)
@pass_app
def prepare_data_command(
    app: AppContext,
    recipe: str,
    overrides: tuple[str, ...],
    output: Path | None,
    skip_bad_rows: bool,
    force: bool,
    no_tokenize: bool,
) -> None:
    """Read, validate and split the recipe's data into train/dev/test JSONL + manifest.json,
    then tokenize what the run trains on, cached by its inputs, so that a run starts
    training at once.

    \b
    A malformed row is reported as FILE:LINE: what is wrong. Examples:
      sftkit prepare-data recipes/r1_gsm8k_qlora.yaml
      sftkit prepare-data recipes/r1_gsm8k_qlora.yaml data.format.options.source=data/gsm8k
    """
    from sftkit.data.prepare import prepare_data
    from sftkit.recipe.load import load_recipe
    from sftkit.signals import stop_on_signals

    resolved = load_recipe(recipe, overrides, registry=app.registry)
    show_notes(resolved)
    _refuse_while_running(resolved, output)
    # Stopped halfway, the directory has no manifest.json: the next run prepares it again.
    kept = "the data directory is marked incomplete and is prepared again next time"
    with stop_on_signals("preparing the data", kept=kept):
        prepared = prepare_data(
            resolved, directory=output, force=force, skip_bad_rows=skip_bad_rows or None
        )
    m = prepared.manifest
    verb = "up to date" if prepared.reused else "prepared"
    counts = m["counts"]
    click.echo(
        f"{verb}: {prepared.directory}  train {counts['train']}, dev {counts['dev']}, "
        f"test {counts['test']}  ({m['format']}, fingerprint {m['fingerprint']})"
    )
    for source in m["sources"]:
        digest = f"  sha256 {source['sha256']}" if source.get("sha256") else ""
        click.echo(
            f"  {source['split']:<5} {source['rows']:>6} rows from {source['source']}{digest}"
        )
    if m.get("skipped_rows"):
        click.echo(f"  skipped {m['skipped_rows']} malformed row(s):")
        for problem in m.get("skipped", []):
            click.echo(f"    {problem}")
    for warning in m.get("warnings", []):
        click.echo(f"warning: {warning}", err=True)
    if output is None and not no_tokenize:  # a run reads the recipe's directory only
        from sftkit.training.stages.data import prepare

        data = prepare(resolved, lambda *args, **kwargs: None)
        dev = f", dev {len(data.dev)} rows" if data.dev is not None else ""
        click.echo(
            f"tokenized: train {len(data.train)} rows{dev} in {prepared.directory / 'tokenized'}"
        )


def _refuse_while_running(resolved: Any, output: Path | None) -> None:
    """Preparing into a run directory that a live process trains in would change its data
    under it: refused with who holds the run (`sftkit.training.lock`)."""
    from sftkit.data.prepare import prepared_dir
    from sftkit.training.lock import check_no_run_holds

    check_no_run_holds(output or prepared_dir(resolved))


@click.command(name="preview")
@recipe_arguments
@click.option("-n", "count", default=3, show_default=True, help="Examples to show.")
@click.option(
    "--split",
    type=click.Choice(["train", "dev", "test"]),
    default="train",
    show_default=True,
)
@pass_app
def preview_command(
    app: AppContext, recipe: str, overrides: tuple[str, ...], count: int, split: str
) -> None:
    """Show tokenized examples with trained and masked tokens marked, and length statistics.

    \b
    Trained tokens (labels) are green, masked ones (prompt, ignored by the loss) dim. Check
    that only the answer and its EOS are trained before paying for a run. Only the tokenizer
    is loaded, not the model.
    """
    from rich.console import Console

    from sftkit.extras import TOKENIZER_STACK, require

    require("`sftkit preview`", TOKENIZER_STACK)
    from sftkit.data.preview import preview
    from sftkit.recipe.load import load_recipe

    resolved = load_recipe(recipe, overrides, registry=app.registry)
    show_notes(resolved)
    preview(resolved, Console(), count=count, split=split)
