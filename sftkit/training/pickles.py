"""Pickle files a run loads (a checkpoint's optimizer.pt, scheduler.pt, rng_state.pth, a
model's pytorch_model.bin) that would run code when unpickled.

transformers loads them with ``torch.load(weights_only=True)``, whose unpickler refuses any
import outside an allowlist, so such a file is never run: it fails the load with an
`UnpicklingError` that names neither the file nor what to do. Here the same question is
asked before loading, statically (`torch.serialization.get_unsafe_globals_in_checkpoint`,
with the numpy types transformers allows for the RNG state), so that a resume skips such a
checkpoint with the reason (`sftkit.training.checkpoints.inspect`), and a refusal at load
time becomes exit 2 naming the file (`refused_pickle`).
"""

from __future__ import annotations

import contextlib
import pickle
import pickletools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sftkit.errors import SftkitError

# The files a resume or a model load unpickles (the others, e.g. training_args.bin, are
# never loaded).
PICKLE_SUFFIXES = (".pt", ".pth", ".bin")
NEVER_LOADED = frozenset({"training_args.bin"})
ZIP_MAGIC = b"PK\x03\x04"
REFUSED = "Weights only load failed"  # torch's words when weights_only refuses a file


def is_loaded_pickle(name: str) -> bool:
    return name.endswith(PICKLE_SUFFIXES) and Path(name).name not in NEVER_LOADED


def code_it_runs(path: Path) -> list[str]:
    """What unpickling `path` would import beyond plain tensors and containers (`[]` for a
    file `torch.load(weights_only=True)` loads; also `[]` for a file that is no pickle at
    all: damage is the checksums' business)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError:
        return []
    if head != ZIP_MAGIC:  # not what torch.save writes: a bare pickle imports nothing safe
        return _bare_pickle_globals(path)
    try:
        import torch
    except ImportError:
        return []
    with _allowed():
        try:
            return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception:  # not a torch.save archive, or damaged: not this check's finding
            return []


def problem(path: Path, rel: str) -> str | None:
    """`inspect`'s wording for a checkpoint file that would run code, or None."""
    found = code_it_runs(path)
    if not found:
        return None
    return (
        f"{rel} holds a pickle that would run code when loaded ({', '.join(found[:3])}); "
        "no save writes that, so it was put there"
    )


def refused_pickle(exc: BaseException, places: Iterable[Path | None]) -> SftkitError | None:
    """If `exc` is torch refusing to unpickle a file (weights_only), an exit-2 error naming
    the file that would run code, looked for in `places` (the model, the checkpoint a
    resume loads, final/); else None."""
    if not any(isinstance(e, pickle.UnpicklingError) and REFUSED in str(e) for e in _chain(exc)):
        return None
    culprits = [
        (path, found)
        for place in places
        if place is not None and Path(place).is_dir()
        for path in sorted(Path(place).rglob("*"))
        if path.is_file() and is_loaded_pickle(path.name) and (found := code_it_runs(path))
    ]
    named = (
        "; ".join(f"{path} would import {', '.join(found[:3])}" for path, found in culprits)
        if culprits
        else "a .bin/.pt/.pth file it loaded imports more than tensors"
    )
    return SftkitError(
        f"torch refused to load a pickle that would run code: {named}. Nothing ran.",
        hint="Replace the file with one saved by save_pretrained / torch.save (safetensors "
        "where possible), or delete it (a checkpoint: a resume falls back to the previous "
        "complete one). Never load it with weights_only=False.",
    )


def loaded_from(ctx: Any) -> list[Path | None]:
    """Where a run loads pickles from: its model's directory (a local one), the checkpoint it
    resumed from, its random base, final/ (a run that only finishes its evaluation)."""
    return [
        Path(ctx.recipe.model.name_or_path),
        ctx.resumed_from,
        ctx.paths.base,
        ctx.paths.final,
    ]


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _allowed() -> Any:
    """The types transformers allows when it loads a checkpoint's RNG state (numpy's)."""
    try:
        from transformers.trainer_pt_utils import safe_globals
    except ImportError:
        return contextlib.nullcontext()
    return safe_globals()


def _bare_pickle_globals(path: Path) -> list[str]:
    """The imports (GLOBAL, STACK_GLOBAL) of a bare pickle's first object; [] if the file
    does not parse as a pickle."""
    found: list[str] = []
    strings: list[str] = []
    try:
        with path.open("rb") as handle:
            for opcode, arg, _ in pickletools.genops(handle):
                if opcode.name == "GLOBAL":
                    found.append(str(arg).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # not a pickle, or cut short: nothing to say here
        return []
    return sorted(set(found))
