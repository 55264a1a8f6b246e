"""Core commands: validate, plugins, list, recipes. None of them imports torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sftkit.cli.app import AppContext, pass_app
from sftkit.engine import engine_of
from sftkit.recipe.load import bundled_recipes_dir, load_recipe
from sftkit.registry import KINDS


def recipe_arguments(func: Any) -> Any:
    """RECIPE plus trailing overrides, shared by every command that reads a recipe."""
    func = click.argument("overrides", nargs=-1, metavar="[KEY=VALUE | ~KEY]...")(func)
    return click.argument("recipe", metavar="RECIPE")(func)


def show_notes(resolved: Any) -> None:
    """What loading changed that the user did not write (`ResolvedRecipe.notes`)."""
    for note in resolved.notes:
        click.echo(f"note: {note}", err=True)


@click.command()
@recipe_arguments
@pass_app
def validate(app: AppContext, recipe: str, overrides: tuple[str, ...]) -> None:
    """Check a recipe and its overrides: schema, components, options, compatibility."""
    from sftkit.preflight import check as check_before_loading

    resolved = load_recipe(recipe, overrides, registry=app.registry)
    show_notes(resolved)
    check_before_loading(resolved, machine=False)  # the data files it names exist
    r = resolved.recipe
    click.echo(f"{resolved.source}: OK")
    click.echo(
        f"  model      {r.model.name_or_path} ({r.model.dtype}, {r.model.attn_implementation})"
    )
    if r.model.trust_remote_code:
        click.echo(
            "  model code trust_remote_code: true (Python code that comes with the model runs "
            "when it loads)"
        )
    click.echo(f"  strategy   {r.strategy.name}  [{resolved.strategy.plugin}]")
    click.echo(f"  optimizer  {r.optimizer.name}  [{resolved.optimizer.plugin}]")
    click.echo(f"  data       {resolved.data_label} with template {r.data.template.name}")
    t = r.training
    click.echo(
        f"  training   micro-batch {t.micro_batch_size} x accumulation {t.gradient_accumulation_steps}, "
        f"sequence {t.max_seq_length}, {t.precision}, checkpointing {'on' if t.gradient_checkpointing else 'off'}"
    )
    if t.trainer_args:
        shown = ", ".join(f"{k}={v!r}" for k, v in t.trainer_args.items())
        click.echo(f"  TRL        {shown}")
    click.echo(f"  hardware   {r.hardware.num_gpus} x {r.hardware.gpu}")
    engine = engine_of(r)
    if engine.distributes:
        click.echo(f"  engine     {engine.describe(r)}")


@click.command(name="plugins")
@click.option("--all", "show_all", is_flag=True, help="Include the built-in plugins.")
@pass_app
def plugins_command(app: AppContext, show_all: bool) -> None:
    """Installed plugins, their versions, and what each registers."""
    registry = app.registry
    provided: dict[str, list[str]] = {}
    for kind in KINDS:
        catalog = registry.catalog(kind)
        noun = kind[:-1] if kind != "strategies" else "strategy"
        for entry in catalog:
            provided.setdefault(entry.plugin, []).append(f"{noun} {entry.spec.name}")
        for name, (_, builtins) in catalog.shadowed().items():
            for entry in builtins:
                provided.setdefault(entry.plugin, []).append(f"{noun} {name} (shadowed)")
        for name, entries in catalog.conflicts().items():
            for entry in entries:
                provided.setdefault(entry.plugin, []).append(f"{noun} {name} (conflict)")
    for plugin, commands in app.commands_by_plugin.items():
        provided.setdefault(plugin, []).extend(f"command {c}" for c in commands)
    table = Table(title="sftkit plugins", show_lines=False)
    for column in ("plugin", "distribution", "version", "registers"):
        table.add_column(column)
    shown = 0
    for info in sorted(app.manager.infos.values(), key=lambda i: (i.builtin, i.name)):
        if info.builtin and not show_all:
            continue
        shown += 1
        table.add_row(
            info.name,
            info.distribution or ("sftkit (built-in)" if info.builtin else "-"),
            info.version or "-",
            ", ".join(provided.get(info.name, [])) or "(hooks only)",
        )
    console = Console()
    if shown:
        console.print(table)
    else:
        console.print("No third-party plugins installed (use --all to include the built-ins).")
    for failure in app.manager.failures:
        console.print(f"[red]broken[/red] {failure.describe()}", highlight=False)
    if app.manager.failures:
        console.print("Disable a broken plugin with `sftkit --disable-plugin NAME ...`.")


@click.command(name="list")
@click.argument("kind", type=click.Choice(sorted(KINDS)))
@pass_app
def list_command(app: AppContext, kind: str) -> None:
    """Registered components of one KIND, with the plugin that provides each."""
    table = Table(title=f"{kind}")
    table.add_column("name", style="bold")
    table.add_column("plugin")
    table.add_column("summary")
    catalog = app.registry.catalog(kind)
    for entry in catalog:
        table.add_row(entry.spec.name, entry.plugin, entry.spec.summary)
    conflicts = catalog.conflicts()
    for name, entries in conflicts.items():
        plugins = ", ".join(e.plugin for e in entries)
        table.add_row(
            name, f"[red]conflict[/red]: {escape(plugins)}", "unusable until one is disabled"
        )
    Console().print(table)
    notes = [catalog.conflict_error(name) for name in conflicts]
    err = Console(stderr=True)
    for name, (winner, builtins) in catalog.shadowed().items():
        kept = ", ".join(f"{e.plugin}:{name}" for e in builtins)
        err.print(
            f"[yellow]shadowed[/yellow] {escape(name)} is plugin {escape(winner.plugin)!r}'s; "
            f"the built-in one stays available as {escape(kept)}",
            highlight=False,
        )
    for note in notes:
        err.print(f"[red]conflict[/red] {escape(str(note))}", highlight=False)
    for broken in catalog.broken:
        err.print(f"[red]broken[/red] {escape(broken.error)}", highlight=False)


@click.group(name="recipes", invoke_without_command=True)
@click.pass_context
def recipes_command(ctx: click.Context) -> None:
    """Recipes bundled with sftkit, one line each. `sftkit recipes cp NAME DEST` copies one
    to start from."""
    if ctx.invoked_subcommand is not None:
        return
    table = Table(title=f"bundled recipes ({bundled_recipes_dir()})")
    table.add_column("recipe", style="bold")
    table.add_column("what it does")
    for path in sorted(bundled_recipes_dir().glob("*.yaml")):
        table.add_row(path.stem, recipe_summary(path))
    Console().print(table)


@recipes_command.command(name="cp")
@click.argument("name")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace DEST if it exists.")
def recipes_cp(name: str, dest: Path, force: bool) -> None:
    """Copy the bundled recipe NAME to DEST (a file, or a directory) to edit and run.

    \b
      sftkit recipes cp quickstart my_run.yaml
      sftkit run my_run.yaml
    """
    from sftkit.recipe.load import copy_recipe

    target = copy_recipe(name, dest, force=force)
    click.echo(f"copied {name} to {target}; run it with `sftkit run {target}`")


def recipe_summary(path: Path) -> str:
    """The recipe's `description:` value, without parsing the whole recipe."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return "(unreadable)"
    if isinstance(data, dict):
        return (
            str(data.get("description", "")).strip().splitlines()[0]
            if data.get("description")
            else ""
        )
    return ""


COMMANDS = (validate, plugins_command, list_command, recipes_command)
