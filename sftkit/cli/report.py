"""`sftkit report` and `sftkit compare`: run reports from the files in run directories."""

from __future__ import annotations

from pathlib import Path

import click

RUN_DIR = click.Path(path_type=Path, exists=True, file_okay=False)


@click.command(name="report")
@click.argument("run_dir", type=RUN_DIR)
def report_command(run_dir: Path) -> None:
    """Rebuild RUN_DIR/report.md, report.html and the loss / learning-rate plots.

    \b
    The report shows the recipe, the memory estimate against the measured peak (on CUDA),
    training loss and learning-rate curves, throughput and every evaluation under
    RUN_DIR/eval/; for an objective that logs them, its rewards, KL and completion lengths
    (grpo) or reward accuracy (dpo). `sftkit run` writes it at the end of a run; rebuild it
    after `sftkit eval`.
    """
    from sftkit.extras import missing
    from sftkit.reporting import write_report

    files = write_report(run_dir)
    for path in (files.markdown, files.html, *files.plots):
        click.echo(f"wrote {path}")
    if files.kept_plots or (not files.plots and missing(["matplotlib"])):
        kept = ", ".join(p.name for p in files.kept_plots) or "none"
        click.echo(
            "note: matplotlib is not installed, so the plots were not redrawn (the report "
            f"links those drawn before: {kept}); `pip install matplotlib` redraws them.",
            err=True,
        )


@click.command(name="compare")
@click.argument("run_a", type=RUN_DIR)
@click.argument("run_b", type=RUN_DIR)
@click.option(
    "--output-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Also write compare.md, compare.html and overlaid loss/learning-rate plots here.",
)
def compare_command(run_a: Path, run_b: Path, output_dir: Path | None) -> None:
    """Put two runs side by side: results, evaluations and recipe differences."""
    from rich.console import Console
    from rich.table import Table

    from sftkit.reporting import load_run
    from sftkit.reporting.compare import compare, write_comparison

    comparison = compare(load_run(run_a), load_run(run_b))
    console = Console()
    results = Table(title=f"A = {run_a}   B = {run_b}")
    for column in ("", "A", "B", "B vs A"):
        results.add_column(column)
    for row in comparison.results:
        results.add_row(*row)
    console.print(results)
    if comparison.recipe_diff:
        diff = Table(title="recipe differences")
        # Keys are never cut (two keys cut to one prefix would be one ambiguous row); long
        # values fold onto more lines instead.
        widest = max(len(key) for key, _, _ in comparison.recipe_diff)
        diff.add_column("key", min_width=widest, no_wrap=True)
        diff.add_column("A", overflow="fold")
        diff.add_column("B", overflow="fold")
        for key, a, b in comparison.recipe_diff:
            diff.add_row(key, a, b)
        console.print(diff)
    else:
        console.print("The recipes are identical (output_dir aside).")
    if output_dir is not None:
        click.echo(f"wrote {write_comparison(comparison, output_dir)}")
