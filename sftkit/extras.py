"""The optional packages a command needs, checked before it starts and without importing
them: the light core (`pip install sftkit`: validate, estimate-memory) says what to install
instead of failing halfway through a run."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Iterable

from sftkit.errors import TRAINING_STACK, MissingDependencyError, SftkitError

# What loading, training and evaluating a model imports.
RUN_STACK = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "safetensors")
# What a tokenizer alone needs (`sftkit preview`).
TOKENIZER_STACK = ("transformers", "tokenizers")


def missing(modules: Iterable[str]) -> list[str]:
    """The modules of `modules` that cannot be imported here."""
    out = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(name)
    return out


def require(purpose: str, modules: Iterable[str] = RUN_STACK) -> None:
    """Raise `MissingDependencyError` (exit 2, with how to install) unless every module in
    `modules` can be imported."""
    absent = missing(modules)
    if absent:
        raise MissingDependencyError(", ".join(absent), purpose)


def as_missing_dependency(exc: BaseException, purpose: str) -> MissingDependencyError | None:
    """A `ModuleNotFoundError` for an optional package (anywhere in `exc`'s chain) as the
    error a user can act on; None for any other error (a missing module of sftkit's own is
    a bug)."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        if isinstance(current, ModuleNotFoundError) and current.name:
            top = current.name.split(".")[0]
            if top in TRAINING_STACK or top in OPTIONAL:
                # Name everything the stack lacks, so one install fixes it.
                absent = [top, *(m for m in missing(RUN_STACK) if m != top)]
                return MissingDependencyError(", ".join(absent), purpose)
        current = current.__cause__ or current.__context__
        seen += 1
    return None


# Optional packages outside the training stack that a recipe can ask for.
OPTIONAL = frozenset({"liger_kernel", "deepspeed", "pyarrow", "wandb", "mlflow", "trackio"})


def as_broken_install(exc: BaseException) -> SftkitError | None:
    """An installed package whose RECORD file `importlib.metadata` cannot read (a row with
    too many fields, a size that is no number): TRL and transformers read every package's
    RECORD when they are imported, so one damaged install elsewhere fails sftkit with a
    message from deep inside ``importlib.metadata``. Named here, with the fix; None when
    `exc` did not come from reading a RECORD."""
    if not _raised_in_metadata(exc):
        return None
    broken = []
    for dist in importlib.metadata.distributions():
        try:
            dist.files  # noqa: B018 (reading the property parses RECORD)
        except Exception as error:  # what a malformed row raises varies
            name = dist.metadata["Name"] or "?"
            where = f"{name}-{dist.version}.dist-info/RECORD in {dist.locate_file('')}"
            broken.append((name, where, error))
    if not broken:
        return None
    names = ", ".join(name for name, _, _ in broken)
    details = "; ".join(f"{path}: {type(err).__name__}: {err}" for _, path, err in broken)
    return SftkitError(
        f"the installed package {names} has a malformed RECORD file, which the training "
        f"libraries read when they are imported ({details}).",
        hint="Reinstall it: pip install --force-reinstall --no-deps "
        + " ".join(name for name, _, _ in broken)
        + " (or uninstall it if it is not needed).",
    )


def _raised_in_metadata(exc: BaseException) -> bool:
    current: BaseException | None = exc
    for _ in range(10):
        if current is None:
            return False
        tb = current.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename.endswith("importlib/metadata/__init__.py"):
                return True
            tb = tb.tb_next
        current = current.__cause__ or current.__context__
    return False
