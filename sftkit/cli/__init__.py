"""The `sftkit` command line: a thin layer over library functions.

`main()` builds the plugin manager (after reading the plugin options from argv, like pytest's
`-p`), builds the click group, lets plugins add commands, runs it, and maps errors to exit
codes: 0 ok, 2 bad input, 3 does not fit, 1 internal error, 130 / 143 interrupted by SIGINT /
SIGTERM. Heavy libraries (torch, ...) are
imported only inside the commands that train.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

import click

from sftkit.cli.app import AppContext, build_cli
from sftkit.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    RunInterrupted,
    SftkitError,
)
from sftkit.plugins import SftkitPluginManager, make_plugin_manager


def run_cli(
    argv: Sequence[str] | None = None, *, manager: SftkitPluginManager | None = None
) -> int:
    """Run the CLI with `argv` (default: sys.argv[1:]) and return the exit code. `manager`
    replaces the one built from the plugin options (`sftkit.testing.invoke_cli` passes one
    holding the plugins under test)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if manager is None:
            disabled, autoload, trace = plugin_options(args)
            manager = make_plugin_manager(autoload=autoload, disabled=disabled, trace=trace)
        app = AppContext(manager)
        cli = build_cli(app)
        result = cli.main(args=args, prog_name="sftkit", standalone_mode=False, obj=app)
        # Outside standalone mode click returns (not raises) the code of a
        # `click.exceptions.Exit` a command raised, e.g. estimate-memory's 3.
        return result if isinstance(result, int) and not isinstance(result, bool) else EXIT_OK
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return EXIT_BAD_INPUT
    except click.Abort as exc:
        # click turns Ctrl-C (KeyboardInterrupt) into Abort outside standalone mode.
        if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
            click.echo("Interrupted.", err=True)
            return EXIT_INTERRUPTED
        click.echo("Aborted.", err=True)
        return EXIT_INTERNAL
    except RunInterrupted as exc:  # not an error: the run stopped where it was told to
        click.echo(str(exc), err=True)
        return exc.exit_code
    except SftkitError as exc:
        click.echo(f"error: {exc}", err=True)
        if os.environ.get("SFTKIT_DEBUG"):
            traceback.print_exc()
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return EXIT_INTERRUPTED
    except Exception as exc:
        click.echo(
            f"internal error: {type(exc).__name__}: {exc}\n"
            "This is a bug in sftkit or a plugin. Re-run with SFTKIT_DEBUG=1 for the traceback "
            "and report it.",
            err=True,
        )
        if os.environ.get("SFTKIT_DEBUG"):
            traceback.print_exc()
        return EXIT_INTERNAL


def main() -> None:
    sys.exit(run_cli())


def plugin_options(args: list[str]) -> tuple[list[str], bool | None, bool]:
    """Read the plugin options before click runs: they decide which commands exist."""
    disabled: list[str] = []
    autoload: bool | None = None
    trace = False
    it = iter(range(len(args)))
    for i in it:
        arg = args[i]
        if arg == "--":
            break
        if arg == "--disable-plugin" and i + 1 < len(args):
            disabled.append(args[i + 1])
            next(it, None)
        elif arg.startswith("--disable-plugin="):
            disabled.append(arg.split("=", 1)[1])
        elif arg == "--no-plugin-autoload":
            autoload = False
        elif arg == "--trace-plugins":
            trace = True
        elif not arg.startswith("-"):
            break  # the subcommand: options after it are its own
    return disabled, autoload, trace
