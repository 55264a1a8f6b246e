"""What can be checked before anything heavy is imported, all of it at once (torch-free).

`sftkit run` used to meet a recipe's problems one per attempt, each after the imports or the
hub's retries that came before it: a missing local data file after 15 s of imports; on a
machine without a GPU, no CUDA, then (with hardware.gpu=cpu) Liger needs CUDA, then the
model is not in the offline cache. `findings(resolved, machine=...)` lists every such
problem with its fix:

- data: each local source the recipe names (``source``, ``train_file``, ``test_file`` of a
  format or of a mixture's formats) exists, unless the data is already prepared (a prepared
  directory carries on without its source);
- with ``machine=True`` (`sftkit run`; `validate` checks the recipe, which may be meant for
  another machine): a GPU recipe finds a CUDA device (told by its device nodes, no torch), and
  when none is there, what else would stop the same recipe on the CPU (the device checks of
  the kernels and of the evaluation's model); offline (``HF_HUB_OFFLINE``), the hub model and
  hub datasets are in the local cache.

The checks after the imports stay (torch's own CUDA check is the authority): this only makes
the first attempt say everything it can.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sftkit.devices import is_cpu
from sftkit.errors import SftkitError

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe

SOURCE_KEYS = ("source", "train_file", "test_file")
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Finding:
    """One problem: what is wrong (naming the key or the file) and how to fix it."""

    what: str
    fix: str


class PreflightError(SftkitError):
    """Every problem `findings` found, each with its fix (exit 2)."""

    def __init__(self, source: str, found: list[Finding]) -> None:
        self.findings = list(found)
        count = len(found)
        lines = [f"{source}: {count} problem{'s' if count != 1 else ''} before starting:"]
        lines += [f"  - {f.what}\n    fix: {f.fix}" for f in found]
        super().__init__("\n".join(lines))


def check(resolved: ResolvedRecipe, *, machine: bool) -> None:
    """Raise `PreflightError` naming every problem `findings` finds."""
    found = findings(resolved, machine=machine)
    if found:
        raise PreflightError(resolved.source, found)


def findings(resolved: ResolvedRecipe, *, machine: bool) -> list[Finding]:
    found = data_findings(resolved)
    if machine:
        found += device_findings(resolved)
        found += offline_findings(resolved)
    return found


# --------------------------------------------------------------------------------- data


def data_findings(resolved: ResolvedRecipe) -> list[Finding]:
    if _already_prepared(resolved):
        return []
    found = []
    for key, component in _formats(resolved):
        for option in SOURCE_KEYS:
            ref = getattr(component.options, option, None)
            if isinstance(ref, str) and ref:
                missing = missing_local_source(ref)
                if missing:
                    found.append(
                        Finding(
                            f"{key}.options.{option}: {missing}",
                            f"Correct the path (relative paths are from {Path.cwd()}), or "
                            "give a hub dataset id (org/name).",
                        )
                    )
    return found


def missing_local_source(ref: str) -> str | None:
    """Why `ref` names a local file or glob that is not there; None when it is there or is
    a hub id (`sftkit.data.sources` reads it either way)."""
    if any(ch in ref for ch in "*?["):
        files = glob.glob(str(Path(ref).expanduser()), recursive=True)
        return None if files else f"no file matches {ref!r}"
    path = Path(ref).expanduser()
    if os.path.lexists(path):
        return None
    looks_local = ref.startswith((".", "/", "~")) or ref.endswith(LOCAL_SUFFIXES)
    return f"{ref!r} does not exist (looked at {path.resolve()})" if looks_local else None


def _already_prepared(resolved: ResolvedRecipe) -> bool:
    from sftkit.data.prepare import prepared_dir, read_manifest

    try:
        return read_manifest(prepared_dir(resolved)) is not None
    except (OSError, SftkitError):
        return False


# ------------------------------------------------------------------------------ devices


def cuda_device_present() -> bool | None:
    """Whether this machine shows a CUDA (or ROCm) device to a process, from its device
    nodes: torch needs them to find one. None where this cannot be told (not Linux)."""
    if not os.path.isdir("/dev") or not os.path.isdir("/proc"):
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    nodes = glob.glob("/dev/nvidia[0-9]*") + glob.glob("/dev/dxg") + glob.glob("/dev/kfd")
    return bool(nodes)


def device_findings(resolved: ResolvedRecipe) -> list[Finding]:
    recipe = resolved.recipe
    if is_cpu(recipe.hardware.gpu) or cuda_device_present() is not False:
        return []
    found = [
        Finding(
            f"hardware.gpu is {recipe.hardware.gpu!r} but this machine has no CUDA device "
            "(no /dev/nvidia*).",
            "Run on a machine with a GPU, or train on the CPU with hardware.gpu=cpu (tiny "
            "models only); with that override, the problems below also need fixing.",
        )
    ]
    return found + cpu_findings(resolved)


def cpu_findings(resolved: ResolvedRecipe) -> list[Finding]:
    """What would stop `resolved` on the CPU besides the CPU itself."""
    from sftkit.modeling.kernels import check_inference_device, check_kernels

    found = []
    for check_on_cpu in (
        lambda: check_kernels(resolved.recipe, "cpu"),
        lambda: _check_inference(check_inference_device, resolved),
    ):
        try:
            check_on_cpu()
        except SftkitError as exc:
            found.append(Finding(exc.message, exc.hint or ""))
    return found


def _check_inference(check: Any, resolved: ResolvedRecipe) -> None:
    evaluation = resolved.recipe.evaluation
    if evaluation.evaluators and (evaluation.before_training or evaluation.after_training):
        check(resolved, "cpu")


# ------------------------------------------------------------------------------ offline


def offline() -> bool:
    return any(
        os.environ.get(name, "").strip().lower() in TRUE
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def offline_findings(resolved: ResolvedRecipe) -> list[Finding]:
    """Offline, a hub model or dataset that is not in the local cache cannot load; online
    it downloads, so nothing is said."""
    if not offline():
        return []
    try:
        from huggingface_hub import constants
    except ImportError:  # the light core: the run says what to install
        return []
    cache = Path(constants.HF_HUB_CACHE)
    found = []
    model = resolved.recipe.model
    for key, ref in (
        ("model.name_or_path", model.name_or_path),
        ("model.tokenizer", model.tokenizer),
    ):
        if ref and _hub_ref(ref) and not _cached(cache, "models", ref):
            found.append(
                Finding(
                    f"{key} {ref!r} is a hub model that is not in the local cache ({cache}), "
                    "and HF_HUB_OFFLINE is set: it cannot be loaded.",
                    f"Download it once with the network (`hf download {ref}`), or set "
                    f"{key} to a local copy.",
                )
            )
    if not _already_prepared(resolved):
        datasets_cache = Path(
            os.environ.get("HF_DATASETS_CACHE", Path(constants.HF_HOME) / "datasets")
        )
        for key, component in _formats(resolved):
            ref = getattr(component.options, "source", None)
            if (
                isinstance(ref, str)
                and _hub_ref(ref)
                and not _cached(cache, "datasets", ref)
                and not list(datasets_cache.glob(f"{ref.replace('/', '___')}*"))
            ):
                found.append(
                    Finding(
                        f"{key}.options.source {ref!r} is a hub dataset that is not in the "
                        "local cache, and HF_HUB_OFFLINE is set: it cannot be read.",
                        f"Download it once with the network (`hf download {ref} --repo-type "
                        "dataset`), or point the source at a local copy (a directory of "
                        "train/test JSONL or Parquet files).",
                    )
                )
    return found


def _formats(resolved: ResolvedRecipe) -> list[tuple[str, Any]]:
    if resolved.mixture:
        return [(f"data.mixture.datasets.{i}.format", c) for i, c in enumerate(resolved.mixture)]
    return [("data.format", resolved.data_format)]


def _hub_ref(ref: str) -> bool:
    """An ``org/name`` that is not a local path (nor a ``builtin:`` model)."""
    if ":" in ref or ref.startswith((".", "/", "~")) or os.path.lexists(Path(ref).expanduser()):
        return False
    parts = ref.split("/")
    return len(parts) == 2 and all(parts)


def _cached(cache: Path, kind: str, ref: str) -> bool:
    """Anything of `ref` in the hub cache: a snapshot directory holding at least one file."""
    snapshots = cache / f"{kind}--{ref.replace('/', '--')}" / "snapshots"
    return any(snapshots.glob("*/*"))
