"""The click group, its global options, and the context commands share."""

from __future__ import annotations

from dataclasses import dataclass, field

import click

from sftkit._version import __version__
from sftkit.plugins import PluginFailure, SftkitPluginManager
from sftkit.registry import Registry


@dataclass
class AppContext:
    """What every command can reach: the plugin manager and (lazily) the registry."""

    manager: SftkitPluginManager
    commands_by_plugin: dict[str, list[str]] = field(default_factory=dict)
    _registry: Registry | None = None

    @property
    def registry(self) -> Registry:
        """Every plugin's components. A broken plugin or a name two plugins register fails
        only the commands and recipes that need it (see `Registry.from_manager`)."""
        if self._registry is None:
            self._registry = Registry.from_manager(self.manager)
        return self._registry


pass_app = click.make_pass_decorator(AppContext)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="sftkit")
@click.option(
    "--disable-plugin",
    "disable_plugin",
    multiple=True,
    metavar="NAME",
    help="Do not load plugin NAME (repeatable; also SFTKIT_DISABLE_PLUGINS=a,b).",
)
@click.option(
    "--no-plugin-autoload",
    is_flag=True,
    help="Load only built-in plugins (also SFTKIT_DISABLE_PLUGIN_AUTOLOAD=1).",
)
@click.option("--trace-plugins", is_flag=True, help="Print every hook call to stderr.")
@click.option(
    "--verbose",
    is_flag=True,
    help="Also show what the libraries (transformers, datasets, bitsandbytes, ...) log and "
    "warn, and their own progress bars; it always goes to the run's sftkit.log. Allowed "
    "after the command too (also SFTKIT_VERBOSE=1).",
)
def cli(
    disable_plugin: tuple[str, ...], no_plugin_autoload: bool, trace_plugins: bool, verbose: bool
) -> None:
    """sftkit: supervised fine-tuning that checks the run fits before it loads a weight.

    \b
    Typical use:
      sftkit validate recipes/r1_gsm8k_qlora.yaml
      sftkit estimate-memory recipes/r1_gsm8k_qlora.yaml
      sftkit run recipes/quickstart.yaml
    Recipes take overrides after the path: key.path=value, or ~key.path to delete.
    """
    # The plugin options were applied before the group was built (see sftkit.cli.plugin_options),
    # and --verbose before anything ran (sftkit.cli.verbose_option).


def build_cli(app: AppContext) -> click.Group:
    """A fresh command group with the core commands and every plugin's commands."""
    from sftkit.cli import core

    group = click.Group(
        name=cli.name,
        commands={},
        params=list(cli.params),
        help=cli.help,
        callback=cli.callback,
        context_settings=cli.context_settings,
    )
    for command in core.COMMANDS:
        group.add_command(command)
    # Call order (later plugins first), each plugin through its own pluggy caller so that
    # `--trace-plugins` shows it and we know which commands each plugin added.
    for plugin, call in reversed(app.manager.callers_by_plugin("register_commands")):
        before = set(group.commands)
        try:
            call(cli=group)
        except Exception as exc:  # a broken plugin must not take down every command
            app.manager.record_failure(
                PluginFailure(
                    plugin,
                    app.manager.distribution_of(plugin),
                    f"register_commands raised {type(exc).__name__}: {exc}",
                    "register_commands",
                )
            )
            continue
        added = sorted(set(group.commands) - before)
        if added:
            app.commands_by_plugin[plugin] = added
    return group
