"""The object lifecycle hooks receive: what is running, where, and its live pieces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sftkit.distributed.rank import rank, world_size
from sftkit.runpaths import RunPaths

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase, TrainerState

    from sftkit.recipe.load import ResolvedRecipe
    from sftkit.recipe.schema import Recipe


@dataclass(frozen=True)
class RunView:
    """What the lifecycle hooks receive as `run`: the run, read-only. `state` is the
    trainer's `TrainerState` (global step, max steps, log history, best checkpoint); `rank`
    of `world_size` is the process (hooks marked `every_process` run on each)."""

    resolved: ResolvedRecipe
    paths: RunPaths
    device: str
    resumed_from: Path | None
    model: torch.nn.Module  # a PeftModel for LoRA strategies
    tokenizer: PreTrainedTokenizerBase
    state: TrainerState
    rank: int = 0
    world_size: int = 1

    @property
    def run_dir(self) -> Path:
        return self.paths.root

    @property
    def recipe(self) -> Recipe:
        return self.resolved.recipe


@dataclass
class RunContext:
    """The run's state inside sftkit, filled as it goes (plugins see `view()`)."""

    resolved: ResolvedRecipe
    paths: RunPaths
    device: str
    model: Any = None  # the model being trained (a PeftModel for LoRA strategies)
    tokenizer: Any = None
    trainer: Any = None  # the TRL SFTTrainer
    resumed_from: Path | None = None
    # Filled as the run goes: last log values, then the final summary.
    metrics: dict[str, Any] = field(default_factory=dict)
    # How the run goes on (sftkit.training.resume.RunPlan), the lock it holds, its signal
    # handling (sftkit.training.interrupts.Interrupts).
    plan: Any = None
    lock: Any = None
    interrupts: Any = None
    weights_only: bool = False  # resume from weights alone: fresh optimizer state
    # What the resumed checkpoint carried for this process (sftkit.training.trainer).
    carried: dict[str, Any] = field(default_factory=dict)
    clock: Any = None  # sftkit.training.trainer.RunClock: training time of the whole run

    def view(self) -> RunView:
        return RunView(
            self.resolved,
            self.paths,
            self.device,
            self.resumed_from,
            self.trainer.model,
            self.tokenizer,
            self.trainer.state,
            rank(),
            world_size(),
        )

    def release(self) -> None:
        """Let go of the run directory's lock (if this context holds it)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    @property
    def run_dir(self) -> Path:
        return self.paths.root

    @property
    def recipe(self) -> Any:
        return self.resolved.recipe
