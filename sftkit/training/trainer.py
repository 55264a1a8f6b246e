"""`SftkitTrainer`: TRL's SFTTrainer with what a sftkit run adds, given as collaborators
(`RunTrainerMixin`, which another objective's trainer mixes into its TRL trainer).

The trainer is told, not patched: `TrainerParts` names the run (its directory, what a
resume carried), the engine, the optimizer's builder, the loss head and the memory
techniques, and the trainer asks each at the public point transformers gives for it:

- the engine, once the accelerator exists (`Engine.prepare_trainer`: FSDP on CPU);
- the optimizer's builder, in `create_optimizer`: the one place the optimizer is built, after
  the engine has sharded the model where it does so (FSDP), before it is wrapped otherwise;
- the loss head, in `compute_loss` (`sftkit.training.loss.HeadedModel`): TRL's loss and
  metrics run unchanged on the head's per-token log-probabilities;
- the memory techniques, on the model once TRL has prepared it (`sftkit.training.techniques`).

Checkpoints are atomic and resume exactly: transformers saves each into ``<run>/.partial/``
(its ``output_dir``); `Checkpoints.on_save` adds what this process carries (the loss window
no checkpoint holds, `sftkit.compat.loss_window`, and the training time so far), publishes
the folder complete (`sftkit.training.checkpoints.publish`) and rotates the complete ones
beyond ``training.save_total_limit``. `Carry.on_train_begin` puts the carried window back
before the first resumed step, so a run stopped at any step logs the same losses as one
never stopped. A weights-only restart keeps its fresh optimizer and fast-forwards the
schedule (`sftkit.compat.WeightsOnlyRestart`).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import PrinterCallback, ProgressCallback, TrainerCallback
from trl import SFTTrainer

from sftkit import compat
from sftkit.errors import TrainingDivergedError
from sftkit.runpaths import CHECKPOINT_PREFIX, RunPaths, carry_file
from sftkit.training.checkpoints import publish, rotate
from sftkit.training.runfiles import disk_full

if TYPE_CHECKING:
    import torch

    from sftkit.engine import Engine
    from sftkit.recipe.schema import Recipe
    from sftkit.registry import Registry

CHECKPOINTS_README = """\
# Checkpoints of an sftkit run

`sftkit run` saves one `checkpoint-<step>/` folder here every `training.save_steps` steps
(and at the last step), keeping the newest `training.save_total_limit`. Each holds the
weights, optimizer, scheduler and random-number state needed to continue the run:

    sftkit run RECIPE --output-dir {run_dir} --resume

They are not meant to be shared: the trained model is in `{final}`, and

    sftkit export {run_dir}

writes a copy with its tokenizer and a model card (`--merge` for a standalone model).
"""


class AlreadyTrained(Exception):
    """Raised at the start of training when the resumed checkpoint is at the last step."""


@dataclass
class RunClock:
    """Training time of the whole run: earlier attempts' (carried) plus this one's."""

    before: float = 0.0
    started: float | None = None

    def seconds(self) -> float:
        if self.started is None:
            return self.before
        return self.before + time.perf_counter() - self.started


@dataclass(frozen=True)
class TrainerParts:
    """Everything a run hands the trainer besides TRL's own arguments."""

    paths: RunPaths
    engine: Engine
    recipe: Recipe  # what the engine reads
    build_optimizer: Callable[[torch.nn.Module], torch.optim.Optimizer]
    loss_head: Callable[..., tuple[torch.Tensor, ...]] | None = None  # None: TRL's own
    techniques: Sequence[Callable[[Any], object]] = ()
    use_cpu: bool = False
    keep: int | None = None  # training.save_total_limit
    resumed: bool = False
    weights_only: bool = False
    carried: dict[str, Any] = field(default_factory=dict)
    clock: RunClock = field(default_factory=RunClock)
    registry: Registry | None = None  # the run's components (an objective's rewards, say)


if TYPE_CHECKING:
    from transformers import Trainer as _TrainerBase
else:
    _TrainerBase = object


class RunTrainerMixin(_TrainerBase):
    """What a sftkit run adds to a TRL trainer (see the module docstring); an objective's
    trainer is ``class T(RunTrainerMixin, compat.WeightsOnlyRestart, TRLTrainer)``."""

    def __init__(self, *, parts: TrainerParts, callbacks: Sequence[Any] = (), **kwargs: Any):
        self.parts = parts
        self.restart_weights_only = parts.weights_only
        self.saving: Path | None = None
        self.compat_notes = compat.check()  # exit 2 before anything trains on a changed library
        # First: the carried loss window is back before any other callback sees a step.
        super().__init__(
            callbacks=[Carry(self), *callbacks, Checkpoints(self)],
            optimizers=(None, None),  # built once, in create_optimizer
            **kwargs,
        )
        # Our progress display and metrics replace the trainer's tqdm bar and printed dicts.
        self.remove_callback(PrinterCallback)
        self.remove_callback(ProgressCallback)
        for technique in parts.techniques:
            technique(self.model)
        with contextlib.suppress(OSError):  # the trainer made its output_dir, .partial/
            parts.paths.partial.rmdir()

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        self.parts.engine.prepare_trainer(self, self.parts.recipe, use_cpu=self.parts.use_cpu)

    def create_optimizer(self, model: Any = None) -> Any:
        trainer: Any = self
        if trainer.optimizer is None:
            trainer.optimizer = self.parts.build_optimizer(
                trainer.model if model is None else model
            )
        return super().create_optimizer(model)

    def compute_loss(
        self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if self.parts.loss_head is not None:
            from sftkit.training.loss import HeadedModel

            model = HeadedModel(model, self.parts.loss_head)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        """TRL's card in the checkpoints folder describes a hub model that does not exist;
        ours says what the folder is and how to use it."""
        if not self.is_world_process_zero():
            return
        paths = self.parts.paths
        paths.checkpoints.mkdir(parents=True, exist_ok=True)
        text = CHECKPOINTS_README.format(run_dir=paths.root, final=paths.final)
        (paths.checkpoints / "README.md").write_text(text, encoding="utf-8")

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        folder = Path(output_dir) if output_dir is not None else None
        if (
            folder is not None
            and folder.parent == self.parts.paths.partial
            and folder.name.startswith(CHECKPOINT_PREFIX)
        ):
            self.saving = folder  # a checkpoint is in the making until `Checkpoints.on_save`
        super().save_model(output_dir, _internal_call)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """A checkpoint cut short (a full disk, a divergence found at save) leaves nothing
        under .partial/, and a full disk says which save failed."""
        try:
            return super().train(*args, **kwargs)
        except BaseException as exc:
            folder, self.saving = self.saving, None
            if folder is None:
                raise
            full = disk_full(exc, self.parts.paths.root, f"saving {folder.name}")
            if self.args.should_save:
                shutil.rmtree(folder, ignore_errors=True)
                with contextlib.suppress(OSError):
                    folder.parent.rmdir()
            if full is not None:
                raise full from exc
            raise

    def carry(self) -> dict[str, Any]:
        """What this process carries across a checkpoint (see the module docstring)."""
        return {
            "step": self.state.global_step,
            **compat.loss_window(self),
            "train_runtime_s": self.parts.clock.seconds(),
        }


class SftkitTrainer(RunTrainerMixin, compat.WeightsOnlyRestart, SFTTrainer):
    """TRL's SFTTrainer running a sftkit recipe (the ``sft`` objective)."""


class Carry(TrainerCallback):
    """Restores the carried state before the first resumed step; raises `AlreadyTrained`
    when the checkpoint is at the last step (the trainer would train one more); makes the
    end-of-training summary cover the whole run."""

    def __init__(self, trainer: RunTrainerMixin) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        parts = self.trainer.parts
        parts.clock.started = time.perf_counter()
        if parts.carried:
            compat.restore_loss_window(self.trainer, parts.carried, args.device)
        if parts.resumed and state.global_step >= state.max_steps:
            raise AlreadyTrained

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        carried = self.trainer.parts.carried
        if not logs or "train_runtime" not in logs or not carried:
            return
        # The trainer's summary covers this process's part of the run; make it the whole.
        steps = max(state.global_step, 1)
        logs["train_loss"] = compat.total_loss(self.trainer) / steps
        this_part = float(logs["train_runtime"])
        runtime = this_part + float(carried.get("train_runtime_s", 0.0))
        logs["train_runtime"] = round(runtime, 4)
        if runtime > 0:
            done = state.global_step - int(carried.get("step", 0))
            samples = logs.get("train_samples_per_second", 0.0) * this_part
            per_step = samples / done if done > 0 else 0.0
            logs["train_steps_per_second"] = round(steps / runtime, 3)
            logs["train_samples_per_second"] = round(per_step * steps / runtime, 3)


class Checkpoints(TrainerCallback):
    """Publishes each checkpoint transformers has just saved under .partial/ (last in the
    callback list, after every other callback's on_save)."""

    def __init__(self, trainer: RunTrainerMixin) -> None:
        self.trainer = trainer

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        trainer, paths = self.trainer, self.trainer.parts.paths
        step = state.global_step
        partial = paths.partial_checkpoint(step)
        window = trainer.carry()
        if not math.isfinite(window["tr_loss"]):
            raise TrainingDivergedError(step, window["tr_loss"])
        if args.should_save:
            self._point_best_at_published(state, partial, paths.checkpoint(step))
        target = carry_file(partial, args.process_index)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(window), encoding="utf-8")
        trainer.accelerator.wait_for_everyone()
        if args.should_save:
            publish(
                partial, paths.checkpoint(step), kind="checkpoint", step=step,
                max_steps=state.max_steps,
            )  # fmt: skip
            rotate(paths, trainer.parts.keep, protect=state.best_model_checkpoint)
        trainer.accelerator.wait_for_everyone()
        trainer.saving = None

    @staticmethod
    def _point_best_at_published(state: Any, partial: Path, published: Path) -> None:
        """transformers records the best checkpoint (training.early_stopping) by the folder
        it saved into, under .partial/: name the folder it is renamed to, in the state and
        in the checkpoint's trainer_state.json, before it is sealed."""
        if state.best_model_checkpoint != str(partial):
            return
        state.best_model_checkpoint = str(published)
        state_file = partial / "trainer_state.json"
        if state_file.is_file():
            state.save_to_json(str(state_file))


def load_carry(checkpoint: Path, process: int) -> dict[str, Any]:
    """The carried state a checkpoint holds for `process` ({} for one without)."""
    path = carry_file(checkpoint, process)
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data
