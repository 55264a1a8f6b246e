"""Built-in commands beyond the core ones, added through the same `register_commands` hook a
third-party plugin uses. Each command module keeps its heavy imports inside the command."""

from __future__ import annotations

import importlib

import click

from sftkit.hookspecs import hookimpl

# "module:attribute" of each click command; imported when the CLI is built (cheap modules).
COMMAND_REFS: tuple[str, ...] = (
    "sftkit.cli.evaluate:eval_command",
    "sftkit.cli.report:report_command",
    "sftkit.cli.report:compare_command",
    "sftkit.cli.export:export_command",
    "sftkit.cli.estimate:estimate_memory",
    "sftkit.cli.run:run_command",
    "sftkit.cli.data:prepare_data_command",
    "sftkit.cli.data:preview_command",
    "sftkit.cli.launch:launch_command",
)


@hookimpl(trylast=True)
def register_commands(cli: click.Group) -> None:
    for ref in COMMAND_REFS:
        module_name, _, attr = ref.partition(":")
        cli.add_command(getattr(importlib.import_module(module_name), attr))
