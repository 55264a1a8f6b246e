"""The training stack's minimum versions, and the check that turns a clash into an input
error (exit 2) naming the packages and versions, never "a bug in sftkit".

`MINIMUMS` is the one list: pyproject.toml's ``train`` extra declares the same versions
(tests/test_versions.py holds them equal) and ``nox -s minimums`` installs exactly these and
runs a smoke subset, so they are versions known to work. Reading versions uses
``importlib.metadata`` only: nothing heavy is imported.
"""

from __future__ import annotations

import re
from importlib import metadata

from sftkit.errors import SftkitError

# package -> oldest release sftkit works with (checked by `nox -s minimums`)
MINIMUMS: dict[str, str] = {
    "torch": "2.6",
    "transformers": "5.3.0",
    "trl": "1.0.0",
    "peft": "0.18.0",
    "accelerate": "1.10.0",
    "datasets": "4.7.0",
    "bitsandbytes": "0.50.0",
    "safetensors": "0.5.0",
}
# What each is needed for, in a clash message.
WHY = {
    "transformers": "models, tokenizers and the trainer (5.0-5.2 keep the loss window an "
    "exact resume carries in local variables)",
    "trl": "SFTTrainer (0.x imports names transformers 5 removed)",
    "bitsandbytes": "quantized bases and 8-bit optimizers (older releases fail on CPU)",
    "peft": "adapters (0.17 imports names transformers 5 removed)",
    "datasets": "TRL 1.x needs datasets 4.7",
}


class VersionConflictError(SftkitError):
    """An installed package is older than sftkit needs, or they do not work together."""


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: ``2.13.0+cpu`` -> (2, 13, 0)."""
    head = re.match(r"\d+(\.\d+)*", version.strip())
    return tuple(int(p) for p in head.group(0).split(".")) if head else ()


def installed(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def too_old(packages: tuple[str, ...] = tuple(MINIMUMS)) -> list[tuple[str, str, str]]:
    """(package, installed, minimum) for each installed package older than its minimum."""
    out = []
    for package in packages:
        version = installed(package)
        if version is not None and release(version) < release(MINIMUMS[package]):
            out.append((package, version, MINIMUMS[package]))
    return out


def conflict(problems: list[tuple[str, str, str]], *, doing: str) -> VersionConflictError:
    lines = [
        f"  {package} {version} is older than sftkit needs (>= {minimum})"
        + (f": {WHY[package]}" if package in WHY else "")
        for package, version, minimum in problems
    ]
    upgrade = " ".join(f"'{p}>={m}'" for p, _, m in problems)
    return VersionConflictError(
        f"{doing} needs newer packages:\n" + "\n".join(lines),
        hint=f"pip install -U {upgrade}   (or: pip install -U 'sftkit[train]')",
    )


def check_training_stack(doing: str = "training") -> None:
    """Raise `VersionConflictError` (exit 2) when an installed package of the training
    stack is older than `MINIMUMS`. Missing packages are left to the import that needs them."""
    problems = too_old()
    if problems:
        raise conflict(problems, doing=doing)


def import_clash(exc: ImportError, *, doing: str) -> VersionConflictError:
    """An ImportError inside the training stack (``cannot import name 'HybridCache'``):
    a version clash between its packages, said as one, with the versions installed."""
    versions = ", ".join(
        f"{p} {installed(p)}"
        for p in ("transformers", "trl", "peft", "accelerate", "torch")
        if installed(p)
    )
    return VersionConflictError(
        f"{doing}: the installed packages do not work together ({exc}); installed: {versions}.",
        hint="pip install -U 'sftkit[train]' installs versions that do "
        + "("
        + ", ".join(f"{p}>={v}" for p, v in MINIMUMS.items())
        + ").",
    )
