"""The `sftkit` command line: a thin layer over library functions.

`main()` builds the plugin manager (after reading the plugin options from argv, like pytest's
`-p`), builds the click group, lets plugins add commands, runs it, and maps errors to exit
codes: 0 ok, 2 bad input (a missing package and a refusing file system included), 3 does not
fit, 1 internal error, 130 / 143 interrupted by SIGINT / SIGTERM. Heavy libraries (torch,
...) are imported only inside the commands that train; what they log goes to the command's
log file (`sftkit.quiet`), not the terminal.
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
from sftkit.extras import as_broken_install, as_missing_dependency
from sftkit.oserrors import from_exception
from sftkit.plugins import SftkitPluginManager, make_plugin_manager
from sftkit.progress import Display, current, use
from sftkit.quiet import adopt_loaded, hidden_messages, log_path, quiet_libraries


def run_cli(
    argv: Sequence[str] | None = None, *, manager: SftkitPluginManager | None = None
) -> int:
    """Run the CLI with `argv` (default: sys.argv[1:]) and return the exit code. `manager`
    replaces the one built from the plugin options (`sftkit.testing.invoke_cli` passes one
    holding the plugins under test)."""
    args, verbose = verbose_option(list(sys.argv[1:] if argv is None else argv))
    # For the command: the libraries' logging, warnings and bars go to the log file of the
    # directory it writes into (sftkit.quiet); put back as they were when it ends.
    with quiet_libraries(verbose=verbose):
        try:
            with use(Display(on_activity=adopt_loaded)):
                return _run(args, manager)
        finally:
            hidden = hidden_messages()
            if hidden and not verbose:
                click.echo(
                    f"note: {hidden} library warning{'s' if hidden != 1 else ''} not shown "
                    "(--verbose shows them).",
                    err=True,
                )


def _run(args: list[str], manager: SftkitPluginManager | None) -> int:
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
        current().close()  # below the progress lines of the stage it stopped
        click.echo(str(exc), err=True)
        return exc.exit_code
    except SftkitError as exc:
        return _report(exc)
    except KeyboardInterrupt:
        current().close()
        click.echo("Interrupted.", err=True)
        return EXIT_INTERRUPTED
    except Exception as exc:
        current().close()  # the error goes below the progress lines, not among them
        # The user's to fix, though no sftkit code raised it: a package this command needs
        # is missing, or the file system refused (full, read-only, permissions, ...).
        known = (
            as_missing_dependency(exc, f"`sftkit {_command(args)}`")
            or as_broken_install(exc)
            or from_exception(exc)
        )
        if known is not None:
            known.__cause__ = exc
            return _report(known)
        log = log_path()
        click.echo(
            f"internal error: {type(exc).__name__}: {exc}\n"
            "This is a bug in sftkit or a plugin. Re-run with SFTKIT_DEBUG=1 for the traceback "
            "and report it" + (f", with {log}." if log else "."),
            err=True,
        )
        if os.environ.get("SFTKIT_DEBUG"):
            traceback.print_exc()
        return EXIT_INTERNAL


def _report(exc: SftkitError) -> int:
    current().close()
    click.echo(f"error: {exc}", err=True)
    if os.environ.get("SFTKIT_DEBUG"):
        traceback.print_exception(exc.__cause__ or exc)
    return exc.exit_code


def _command(args: list[str]) -> str:
    """The subcommand's name in `args` (global options and their values skipped)."""
    values = {i + 1 for i, a in enumerate(args) if a == "--disable-plugin"}
    return next((a for i, a in enumerate(args) if not a.startswith("-") and i not in values), "")


def main() -> None:
    if verbose_option(sys.argv[1:])[1]:
        os.environ["SFTKIT_VERBOSE"] = "1"  # for the processes `sftkit launch` starts
    sys.exit(run_cli())


def verbose_option(args: list[str]) -> tuple[list[str], bool]:
    """Take ``--verbose`` out of `args`, wherever it stands before ``--`` (after the command
    too, where a user types it); SFTKIT_VERBOSE=1 means the same."""
    end = args.index("--") if "--" in args else len(args)
    verbose = "--verbose" in args[:end] or os.environ.get("SFTKIT_VERBOSE", "") not in ("", "0")
    return [a for i, a in enumerate(args) if i >= end or a != "--verbose"], verbose


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
