"""Every place sftkit reaches into a library's private name, and the gate that checks them.

sftkit stands on transformers, TRL, accelerate and bitsandbytes through their public
extension points (callbacks, `compute_loss`, `create_optimizer`, `TrainerState`, ...). Where
none exists, the private name is used here and nowhere else (a test greps for it), listed in
`PRIVATE` with the versions it was verified on. `check()` runs when the trainer is built: a
name that is gone is exit 2 naming the package, its installed version and the newest one
sftkit was tested with, instead of a resumed run that quietly logs wrong losses. A package
newer than `TESTED` runs, with one line saying so (`newer_than_tested`); `nox -s newest`
installs the newest releases and runs the smoke subset, so checking one is one command.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from dataclasses import dataclass
from typing import Any

from sftkit.errors import SftkitError
from sftkit.versions import installed, release

# The newest release of each package the test suite passed on (raise after `nox -s newest`).
TESTED: dict[str, str] = {
    "transformers": "5.25.0",
    "trl": "1.16.0",
    "accelerate": "1.16.0",
    "bitsandbytes": "0.50.2",
    "peft": "0.21.2",
    "torch": "2.13.0",
    "datasets": "5.2.0",
}


@dataclass(frozen=True)
class Private:
    """One private name: `owner` is ``module:Class`` or a module; `set_by_class` marks an
    instance attribute the class's own code assigns (looked for in its source)."""

    package: str
    owner: str
    name: str
    why: str
    verified: tuple[str, ...]  # the releases it was checked in
    set_by_class: bool = False

    def present(self) -> bool:
        module_name, _, attr = self.owner.partition(":")
        try:
            owner: Any = importlib.import_module(module_name)
            owner = getattr(owner, attr) if attr else owner
            if not self.set_by_class:
                return hasattr(owner, self.name)
            source = inspect.getsource(owner)
        except (ImportError, AttributeError, OSError, TypeError):
            return False
        return f"self.{self.name} =" in source


_T, _S = "transformers.trainer:Trainer", "trl.trainer.sft_trainer:SFTTrainer"
_WINDOW = "the loss window an exact resume carries across a checkpoint"
# transformers 5.0-5.2 kept the window in local variables (hence the minimum of 5.3.0).
_TF = ("5.3.0", "5.4.0", "5.5.0", "5.10.0", "5.15.0", "5.20.0", "5.25.0")
PRIVATE: tuple[Private, ...] = tuple(
    Private(*row)
    for row in (
        ("transformers", _T, "_load_optimizer_and_scheduler",
         "a weights-only restart keeps its fresh optimizer", ("5.0.0", "5.25.0")),
        ("transformers", _T, "_tr_loss", _WINDOW, _TF, True),
        ("transformers", _T, "_total_loss_scalar", _WINDOW, _TF, True),
        ("transformers", _T, "_globalstep_last_logged", _WINDOW, _TF, True),
        ("trl", _S, "_metrics", _WINDOW, ("1.0.0", "1.16.0"), True),
        ("trl", _S, "_total_train_tokens", _WINDOW, ("1.0.0", "1.16.0"), True),
        ("accelerate", "accelerate.state:PartialState", "_shared_state",
         "FSDP on CPU", ("1.10.0", "1.16.0")),
        ("datasets", "datasets.arrow_dataset:Dataset", "_fingerprint",
         "a loaded dataset's identity", ("5.2.0",), True),
        ("bitsandbytes", "bitsandbytes.functional", "_convert_weight_packed_for_cpu_inverse",
         "merging over a 4-bit base packed for the CPU", ("0.50.2",)),
    )
)  # fmt: skip


class IncompatibleLibraryError(SftkitError):
    """A private name sftkit relies on is gone from an installed library (exit 2)."""


def check() -> list[str]:
    """Raise `IncompatibleLibraryError` if a private name of an installed library is
    missing; otherwise the lines to say about packages newer than tested."""
    missing = [p for p in PRIVATE if installed(p.package) is not None and not p.present()]
    if missing:
        lines = [
            f"  {p.package} {installed(p.package)}: {p.owner.replace(':', '.')}.{p.name} is "
            f"gone ({p.why}); newest tested: {p.package} {TESTED[p.package]}"
            for p in missing
        ]
        pins = sorted({f"'{p.package}=={TESTED[p.package]}'" for p in missing})
        raise IncompatibleLibraryError(
            "sftkit does not work with the installed version of a library it builds on:\n"
            + "\n".join(lines),
            hint=f"Install the tested version (pip install {' '.join(pins)}), or an sftkit "
            "release that supports the new one.",
        )
    return newer_than_tested()


def newer_than_tested() -> list[str]:
    """One line per installed package newer than `TESTED` (it runs; this says so)."""
    return [
        f"note: {package} {version} is newer than sftkit was tested with ({tested}); "
        "`nox -s newest` checks it."
        for package, tested in TESTED.items()
        if (version := installed(package)) is not None and release(version) > release(tested)
    ]


# ----------------------------------------------------------------- the reaches themselves


class WeightsOnlyRestart:
    """Mixin for the trainer: with `restart_weights_only` set, resuming keeps the fresh
    optimizer and fast-forwards the schedule (`fast_forward`), loading no optimizer file."""

    restart_weights_only: bool = False

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        trainer: Any = self
        if checkpoint is not None and self.restart_weights_only:
            fast_forward(trainer.lr_scheduler, trainer.state.global_step)
            return
        super()._load_optimizer_and_scheduler(checkpoint)  # type: ignore[misc]


def fast_forward(scheduler: Any, step: int) -> None:
    """Step a fresh learning-rate scheduler to `step`, as the interrupted run had."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()"
        for _ in range(step):
            scheduler.step()


def loss_window(trainer: Any) -> dict[str, Any]:
    """What transformers and TRL keep between logs (and for the run's train_loss) and no
    checkpoint holds."""
    return {
        "tr_loss": float(trainer._tr_loss.item()),
        "last_logged": trainer._globalstep_last_logged,
        "total_loss": trainer._total_loss_scalar,
        "trl_metrics": {k: list(v) for k, v in trainer._metrics["train"].items()},
        "train_tokens": trainer._total_train_tokens,
    }


def restore_loss_window(trainer: Any, saved: dict[str, Any], device: Any) -> None:
    """Put a carried `loss_window` back (just before the first resumed step)."""
    import torch

    trainer._tr_loss = torch.tensor(saved["tr_loss"], device=device)
    trainer._globalstep_last_logged = saved["last_logged"]
    trainer._total_loss_scalar = saved["total_loss"]
    metrics = trainer._metrics["train"]
    metrics.clear()
    metrics.update({k: list(v) for k, v in saved.get("trl_metrics", {}).items()})
    if saved.get("train_tokens") is not None:
        trainer._total_train_tokens = saved["train_tokens"]


def total_loss(trainer: Any) -> float:
    """The sum behind the trainer's train_loss so far."""
    return float(trainer._total_loss_scalar)


def pin_fsdp_state() -> None:
    """accelerate's AcceleratorState copies PartialState's shared dict each time one is
    constructed; without this a later `AcceleratorState()` turns a CPU FSDP run back into
    MULTI_CPU."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


def unpack_cpu_4bit(weight: Any, state: Any) -> tuple[Any, Any]:
    """Undo bitsandbytes' repacking of a 4-bit weight for its CPU kernel."""
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

    unpacked: tuple[Any, Any] = _convert_weight_packed_for_cpu_inverse(weight, state)
    return unpacked


def dataset_fingerprint(dataset: Any) -> str | None:
    """The fingerprint `datasets` gave a Dataset (its own cache key; there is no public
    accessor); None for a streamed one, which has none."""
    from datasets import Dataset

    return dataset._fingerprint if isinstance(dataset, Dataset) else None
