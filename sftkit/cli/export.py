"""`sftkit export`: the adapter alone, or a merged standalone model, with a model card."""

from __future__ import annotations

from pathlib import Path

import click

from sftkit.cli.app import AppContext, pass_app
from sftkit.dtypes import DTYPES


@click.command(name="export")
@click.argument("run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--merge",
    is_flag=True,
    help="Fold the LoRA adapters into the base: a standalone transformers model.",
)
@click.option(
    "--output-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where to write (must not exist; default RUN_DIR/export/merged or .../adapter).",
)
@click.option(
    "--dtype",
    type=click.Choice(DTYPES),
    help="Dtype of a merged model (default: the recipe's; bfloat16 over a quantized base).",
)
@click.option(
    "--max-shard-size",
    default="5GB",
    show_default=True,
    help="Largest safetensors shard of a merged model.",
)
@click.option(
    "--push-to-hub",
    metavar="REPO",
    help="Also upload the export to the Hugging Face Hub as REPO (needs network and a token).",
)
@click.option(
    "--public", is_flag=True, help="With --push-to-hub: create a public repo (default private)."
)
@pass_app
def export_command(
    app: AppContext,
    run_dir: Path,
    merge: bool,
    output_dir: Path | None,
    dtype: str | None,
    max_shard_size: str,
    push_to_hub: str | None,
    public: bool,
) -> None:
    """Export a run's model with its tokenizer and a generated model card (README.md).

    \b
    Without --merge: the adapter alone, in PEFT's format (load the base, then
    PeftModel.from_pretrained). With --merge: the adapters folded into the base, saved as
    safetensors shards that AutoModelForCausalLM loads on its own. For QLoRA (and 8-bit
    LoRA) runs the quantized base is dequantized to bfloat16 before the merge, so the merged
    weights are those the adapters were trained against. An existing output directory is
    never overwritten.
    """
    from sftkit.export import default_output_dir, export_run
    from sftkit.oserrors import check_can_create, writing_to
    from sftkit.quiet import log_to
    from sftkit.runpaths import RunPaths
    from sftkit.signals import stop_on_signals

    if merge:
        from sftkit.extras import require

        require("`sftkit export --merge`")
    target = output_dir or default_output_dir(run_dir, merge)
    check_can_create(target.parent, "export directory")
    log_to(RunPaths(run_dir).log)
    kept = f"{target} was not written (the partial export was removed)"
    with stop_on_signals("the export", kept=kept), writing_to(target.parent):
        result = export_run(
            run_dir,
            merge=merge,
            output_dir=output_dir,
            dtype=dtype,
            max_shard_size=max_shard_size,
            push_to_hub=push_to_hub,
            private=not public,
            registry=app.registry,
        )
    kind = "merged model" if result.merged and result.adapter else "adapter"
    if not result.adapter:
        kind = "model"  # a full fine-tune: nothing to merge
    detail = f" ({result.dtype})" if result.dtype else ""
    if result.quantized_base:
        detail += f", merged into the dequantized {result.quantized_base} base"
    click.echo(f"wrote {kind}{detail} to {result.output_dir}")
    click.echo("  " + ", ".join(result.files))
    if result.pushed_to:
        click.echo(f"pushed to {result.pushed_to}")
