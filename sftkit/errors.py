"""The one family of errors the library raises, and the exit codes they map to.

Library code raises these; only the CLI turns them into messages and exit codes. Each class
carries the exit code the CLI uses, so mapping an error to a code is never a string switch.
The codes themselves are defined here and nowhere else (the CLI and the launch worker import
them).
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug, or a run that broke after its input was accepted
EXIT_BAD_INPUT = 2
EXIT_DOES_NOT_FIT = 3
EXIT_SIGNAL_BASE = 128  # the shell's convention: killed by signal N exits 128 + N
EXIT_INTERRUPTED = EXIT_SIGNAL_BASE + 2  # SIGINT (Ctrl-C)


class SftkitError(Exception):
    """Base of every error sftkit raises on purpose. Exit code 2: the input was wrong."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n{self.hint}" if self.hint else self.message


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe: where, what was expected, what was found."""

    path: str  # dotted key path, e.g. "strategy.options.rank"; "" for the whole document
    message: str
    suggestion: str | None = None  # "did you mean ..." text, already phrased

    def render(self, source: str | None = None) -> str:
        where = self.path or "(top level)"
        head = f"{source}: {where}: " if source else f"{where}: "
        tail = f" {self.suggestion}" if self.suggestion else ""
        return f"{head}{self.message}{tail}"


class RecipeError(SftkitError):
    """A recipe (or its overrides) is invalid. Holds every problem found, not only the first."""

    def __init__(self, problems: list[Problem], *, source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        count = len(self.problems)
        header = f"{source or 'recipe'}: {count} problem{'s' if count != 1 else ''} found"
        lines = [header, *("  " + p.render(source) for p in self.problems)]
        super().__init__("\n".join(lines))


class OverrideError(SftkitError):
    """A command-line override such as `training.lr=` cannot be parsed."""


class UnknownComponentError(SftkitError):
    """A recipe or command named a strategy, optimizer, ... that no plugin registered."""

    def __init__(self, kind: str, name: str, known: list[str], suggestion: str | None) -> None:
        self.kind, self.name, self.known = kind, name, list(known)
        msg = f"unknown {kind} {name!r}."
        if suggestion:
            msg += f" Did you mean {suggestion!r}?"
        msg += f" Known {kind}s: {', '.join(sorted(known)) or '(none)'}."
        super().__init__(
            msg, hint=f"Run `sftkit list {kind.replace(' ', '-')}s` to see them with a summary."
        )


class PluginError(SftkitError):
    """A plugin is broken: it fails to import, has a bad hook, or clashes with another."""


class DuplicateComponentError(PluginError):
    """Two plugins registered a component under the same name."""


class SpecError(PluginError):
    """A component spec is inconsistent (e.g. full training over a quantized base)."""


class ParamGroupsError(PluginError):
    """A strategy's optimizer parameter groups miss a trainable parameter, repeat one, or
    hold a frozen one."""


class ModelShapeError(SftkitError):
    """The model's architecture cannot be read or is not one the estimator knows."""


class UnknownArchitectureError(ModelShapeError):
    """Neither sftkit's catalog nor the generic path (the model built by transformers on the
    meta device) can read the model's architecture. `sftkit run` trains such a model
    without a memory estimate rather than refusing it."""


class DataError(SftkitError):
    """A dataset file is missing or a row is malformed. The message names file and line."""


class RunDirectoryError(SftkitError):
    """A run directory exists and would be overwritten."""


class DoesNotFitError(SftkitError):
    """The memory estimate exceeds the budget. Exit code 3."""

    exit_code = EXIT_DOES_NOT_FIT


class ModelLoadError(SftkitError):
    """A model or tokenizer cannot be loaded (missing, offline, incompatible)."""


class MissingDependencyError(SftkitError):
    """An optional heavy dependency (torch, peft, ...) is needed for this command."""

    def __init__(self, package: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the Python package {package!r}, which is not installed.",
            hint="Install the training stack with `pip install 'sftkit[train]'`.",
        )


class LaunchError(SftkitError):
    """A multi-process launch is misconfigured (world size, node rank, address) or failed."""


class WorkerFailedError(LaunchError):
    """A launched worker process failed. Exit code 1: the input was accepted, the run broke."""

    exit_code = EXIT_INTERNAL
