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
EXIT_TERMINATED = EXIT_SIGNAL_BASE + 15  # SIGTERM (a scheduler, `kill`, `timeout`)


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
    """A run directory exists and would be overwritten, or cannot be resumed as asked."""


class RunLockedError(RunDirectoryError):
    """Another live process (a run, a resume, an evaluation) is writing into the run
    directory; the message says which (pid, host, since when, what)."""


class DiskFullError(SftkitError):
    """The disk filled up while the run was writing; nothing complete was lost, and the run
    continues from its last complete checkpoint once there is room."""


class TrainingDivergedError(SftkitError):
    """The training loss became NaN or infinite at a step; the run stopped there, and no
    checkpoint of the diverged weights was kept."""

    def __init__(self, step: int, value: float, *, hint: str | None = None) -> None:
        self.step, self.value = step, value
        super().__init__(
            f"the training loss is {value} at step {step}: training diverged.",
            hint=hint
            or "Lower optimizer.options.lr (or raise training.warmup_ratio, keep "
            "training.max_grad_norm set) and start a new run; resuming would diverge again.",
        )


class RunInterrupted(SftkitError):
    """A run stopped by SIGINT or SIGTERM. Exit code 128 + the signal number (130, 143);
    the message names the step reached and the checkpoint a resume continues from."""

    def __init__(self, message: str, *, signum: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.signum = signum
        self.exit_code = EXIT_SIGNAL_BASE + signum


class DoesNotFitError(SftkitError):
    """The memory estimate exceeds the budget. Exit code 3."""

    exit_code = EXIT_DOES_NOT_FIT


class ModelLoadError(SftkitError):
    """A model or tokenizer cannot be loaded (missing, offline, incompatible)."""


class MissingDependencyError(SftkitError):
    """An optional heavy dependency (torch, peft, ...) is needed for this command."""

    def __init__(self, package: str, purpose: str, *, hint: str | None = None) -> None:
        packages = [p.strip() for p in package.split(",") if p.strip()]
        self.packages = packages
        what = (
            f"the Python package {packages[0]!r}, which is not installed"
            if len(packages) == 1
            else f"the Python packages {', '.join(map(repr, packages))}, which are not installed"
        )
        super().__init__(f"{purpose} needs {what}.", hint=hint or install_hint(packages))


# The CPU build of torch: on Linux an unpinned `pip install torch` is the CUDA build with
# several GB of GPU libraries.
TORCH_CPU_INSTALL = "pip install torch --index-url https://download.pytorch.org/whl/cpu"
TRAINING_STACK = frozenset(
    {"torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes"}
    | {"safetensors", "tensorboard", "matplotlib", "tokenizers", "huggingface_hub"}
)


def install_hint(packages: list[str]) -> str:
    """What to run to get `packages` (import names)."""
    stack = "`pip install 'sftkit[train]'` (`pip install -e '.[train]'` in a checkout)"
    # The training stack pulls torch in: without torch here, that would be the CUDA build.
    if "torch" in packages or (
        any(p in TRAINING_STACK for p in packages) and not _importable("torch")
    ):
        return (
            f"Install torch first: on a machine without a GPU the CPU build, `{TORCH_CPU_INSTALL}`; "
            f"on a GPU machine the build for its CUDA version. Then the training stack: {stack}."
        )
    if any(p in TRAINING_STACK for p in packages):
        return f"Install the training stack: {stack}."
    return f"Install it: `pip install {' '.join(p.replace('_', '-') for p in packages)}`."


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class FileSystemError(SftkitError):
    """The file system refused: no space left, read-only, permission denied, a path through a
    file. Exit code 2: the user can fix it (`sftkit.oserrors` words the message)."""


class LaunchError(SftkitError):
    """A multi-process launch is misconfigured (world size, node rank, address) or failed."""


class WorkerFailedError(LaunchError):
    """A launched worker process failed. Exit code 1: the input was accepted, the run broke."""

    exit_code = EXIT_INTERNAL
