"""Stage 5, train: the objective's trainer (`SftkitTrainer` for ``sft``) built once with the
run's collaborators and callbacks, trained (or resumed), and final/ saved complete.

The trainer's arguments come from `trainer_config_kwargs`, the one place the recipe becomes
TRL's `SFTConfig` (TRL 1.x names: max_length, completion_only_loss, ...)."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sftkit import compat, progress
from sftkit.devices import data_workers, is_cpu
from sftkit.errors import MissingDependencyError, Problem, RecipeError
from sftkit.recipe.trainer_args import KEY, unknown_names
from sftkit.runpaths import RunPaths
from sftkit.specs import load_factory
from sftkit.training.checkpoints import publish
from sftkit.training.context import RunContext
from sftkit.training.runfiles import disk_full
from sftkit.training.stages.data import TrainingData

# save_steps: None means "at the end only"; the trainer saves at the end with this.
NEVER = 10**12


@dataclass(frozen=True)
class Trained:
    output: Any  # transformers' TrainOutput; None: the checkpoint was at the last step
    stopped: bool  # by SIGINT/SIGTERM at a step boundary (a checkpoint is saved, final/ not)


def build_trainer(
    ctx: RunContext, data: TrainingData, model: Any, extra_callbacks: Sequence[Any] = ()
) -> Any:
    from sftkit.distributed.rank import is_main_process, world_size
    from sftkit.training import evaluating
    from sftkit.training.callbacks import (
        HooksCallback,
        MetricsCallback,
        RichProgressCallback,
        lifecycle_hooks,
    )

    recipe, main = ctx.recipe, is_main_process()
    manager = ctx.resolved.registry.manager
    hooks = lifecycle_hooks(manager, main=main) if manager is not None else None
    callbacks: list[Any] = []
    if main:  # one writer of metrics.jsonl and TensorBoard
        callbacks.append(MetricsCallback(ctx))
        if "tensorboard" in recipe.training.report_to:
            callbacks.append(_tensorboard(ctx.paths, resumed_at=ctx.plan.step if ctx.plan else 0))
    if hooks is not None:  # all on the main process; elsewhere those marked every_process
        callbacks.append(HooksCallback(ctx, hooks))
    if main:
        callbacks.append(RichProgressCallback(progress.current()))
    callbacks.extend(evaluating.callbacks(ctx, progress.current().console, main=main))
    if ctx.interrupts is not None:
        from sftkit.training.interrupts import StopOnSignal

        callbacks.append(StopOnSignal(ctx.interrupts, single_process=world_size() == 1))
    objective = ctx.resolved.registry.objectives.get(recipe.training.objective)
    trainer = load_factory(objective.trainer)(
        parts=trainer_parts(ctx),
        model=model,
        args=load_factory(objective.config)(
            **{**trainer_config_kwargs(ctx), **objective_options(ctx)}
        ),
        train_dataset=data.train,
        eval_dataset=data.dev,
        processing_class=data.tokenizer,
        callbacks=[*callbacks, *extra_callbacks],
    )
    for note in trainer.compat_notes:
        progress.current().say(note, markup=False)
    ctx.model, ctx.tokenizer, ctx.trainer = trainer.model, data.tokenizer, trainer
    return trainer


def fit(ctx: RunContext, trainer: Any) -> Trained:
    """Train (or resume) and save final/; stopped at a step boundary, only the checkpoint."""
    from sftkit.distributed.trainer import prepare_final_save
    from sftkit.training.trainer import AlreadyTrained

    output: Any = None
    try:
        output = trainer.train(
            resume_from_checkpoint=str(ctx.resumed_from) if ctx.resumed_from else None
        )
        ctx.metrics.update(output.metrics)
    except AlreadyTrained:
        # Checkpoint at the last step (killed while final/ was saved): no step 21 of 20.
        progress.current().say(
            f"{ctx.resumed_from.name if ctx.resumed_from else 'the checkpoint'} is at the last "
            f"step ({trainer.state.global_step} of {trainer.state.max_steps}): saving final/ "
            "from it.",
            markup=False,
        )
    if ctx.interrupts is not None and ctx.interrupts.signum is not None:
        return Trained(output, stopped=True)
    prepare_final_save(trainer)
    save_final(ctx)
    return Trained(output, stopped=False)


def objective_options(ctx: RunContext) -> dict[str, Any]:
    """``training.objective_options``, validated (at load) by the objective's options model,
    as arguments of its config."""
    t = ctx.recipe.training
    spec = ctx.resolved.registry.objectives.get(t.objective)
    return spec.options_model.model_validate(t.objective_options).model_dump()


def trainer_parts(ctx: RunContext) -> Any:
    """What `SftkitTrainer` is given besides TRL's arguments: the run, its engine, how to
    build its optimizer, its loss head and memory techniques."""
    from sftkit.engine import engine_of
    from sftkit.training.loss import runtime_head
    from sftkit.training.optimizer import build_optimizer
    from sftkit.training.techniques import memory_techniques
    from sftkit.training.trainer import RunClock, TrainerParts

    resolved, recipe = ctx.resolved, ctx.recipe
    ctx.clock = RunClock(before=float(ctx.carried.get("train_runtime_s", 0.0)))
    return TrainerParts(
        paths=ctx.paths,
        engine=engine_of(recipe),
        recipe=recipe,
        build_optimizer=lambda model: build_optimizer(resolved, model),
        loss_head=runtime_head(resolved),
        techniques=memory_techniques(resolved),
        use_cpu=is_cpu(ctx.device),
        keep=recipe.training.save_total_limit,
        resumed=ctx.resumed_from is not None,
        weights_only=ctx.weights_only,
        carried=ctx.carried,
        clock=ctx.clock,
        registry=resolved.registry,
    )


def trainer_config_kwargs(ctx: RunContext) -> dict[str, Any]:
    """The trainer's arguments (`SFTConfig`'s) from the recipe."""
    from trl import SFTConfig

    from sftkit.distributed.rank import local_world_size
    from sftkit.distributed.trainer import trainer_arguments
    from sftkit.training.evaluating import eval_arguments, save_steps
    from sftkit.training.loss import trl_config_kwargs

    t, data = ctx.recipe.training, ctx.recipe.data
    report_to = [r for r in t.report_to if r not in ("tensorboard", "none")] or "none"
    if t.liger_kernels:  # applied by liger-kernel's own API (sftkit.training.techniques)
        _require("liger_kernel", "liger-kernel", "training.liger_kernels")
    engine = trainer_arguments(ctx.recipe, ctx.paths.root, use_cpu=is_cpu(ctx.device))
    checkpointing = engine.pop("gradient_checkpointing", t.gradient_checkpointing)
    built = dict(
        output_dir=str(ctx.paths.partial),  # saved there, then published (SftkitTrainer)
        per_device_train_batch_size=t.micro_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps if t.max_steps is not None else -1,
        # unused: the optimizer is sftkit's, each group with its own rate
        learning_rate=getattr(ctx.resolved.optimizer.options, "lr", None) or 0.0,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        max_grad_norm=t.max_grad_norm if t.max_grad_norm is not None else 0.0,
        seed=t.seed,
        data_seed=t.seed,
        bf16=t.precision == "bf16",
        fp16=t.precision == "fp16",
        use_cpu=is_cpu(ctx.device),
        **_checkpointing_args(SFTConfig, checkpointing),
        logging_steps=t.logging_steps,
        logging_first_step=True,
        logging_nan_inf_filter=False,  # a NaN loss must show, not be smoothed over
        save_strategy="steps",
        save_steps=save_steps(ctx.recipe) or NEVER,  # the trainer always saves at the end too
        save_total_limit=None,  # sftkit rotates, counting complete checkpoints only
        report_to=report_to,
        disable_tqdm=True,
        max_length=t.max_seq_length,
        packing=data.packing,
        packing_strategy="bfd",  # best-fit packing, padding-free where attention allows it
        completion_only_loss=data.completion_only_loss,
        neftune_noise_alpha=t.neftune_noise_alpha,
        **eval_arguments(ctx.recipe),  # eval loss on dev, best checkpoint, early stopping
        **engine,  # DDP/FSDP/DeepSpeed settings for launched runs (sftkit.distributed)
    )
    # defaults the recipe's trainer_args may change, what sftkit sets, trainer_args
    defaults = {**data_workers(ctx.device, local_world_size()), **trl_config_kwargs()}
    objective = ctx.resolved.registry.objectives.get(t.objective)
    return {**defaults, **built, **passed_through(built, t, load_factory(objective.config))}


def passed_through(built: dict[str, Any], t: Any, config_class: Any) -> dict[str, Any]:
    """``training.trainer_args``, refused where it names an option sftkit set for this run
    (a plugin engine's, say) or one the objective's config class lacks (a list for another
    TRL, or another class, could not tell at validation)."""
    problems = unknown_names(config_class, t.trainer_args)
    problems += [
        Problem(f"{KEY}.{name}", f"sftkit sets {name} for this run ({built[name]!r}).")
        for name in t.trainer_args
        if name in built
    ]
    if problems:
        raise RecipeError(problems)
    return dict(t.trainer_args)


def _checkpointing_args(config_class: Any, enabled: bool) -> dict[str, Any]:
    """transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old
    name warns); older releases only know the old one."""
    names = {f.name for f in dataclasses.fields(config_class)}
    prefix = "activation" if "activation_checkpointing" in names else "gradient"
    kwargs = {"use_reentrant": False} if enabled else None
    return {f"{prefix}_checkpointing": enabled, f"{prefix}_checkpointing_kwargs": kwargs}


def _tensorboard(paths: RunPaths, *, resumed_at: int = 0) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise MissingDependencyError("tensorboard", "training.report_to: [tensorboard]") from exc
    from transformers.integrations import TensorBoardCallback

    # A resumed run hides what an earlier attempt logged after the checkpoint.
    purge = {"purge_step": resumed_at + 1} if resumed_at else {}
    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(paths.tensorboard), **purge))


def _require(module: str, package: str, purpose: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(package, purpose)


def save_final(ctx: RunContext) -> None:
    """final/: the PEFT adapter (LoRA strategies) or the full model, plus the tokenizer;
    assembled under .partial/ and renamed into place complete, replacing an earlier one."""
    trainer, paths = ctx.trainer, ctx.paths
    writer = trainer.is_world_process_zero()
    partial = paths.partial_final
    if writer:
        shutil.rmtree(partial, ignore_errors=True)
    try:
        trainer.save_model(str(partial))  # writes on the main process only
        if writer:
            ctx.tokenizer.save_pretrained(str(partial))
        trainer.accelerator.wait_for_everyone()
        if writer:
            state = trainer.state
            publish(
                partial, paths.final, kind="final", step=state.global_step,
                max_steps=state.max_steps,
            )  # fmt: skip
    except BaseException as exc:
        full = disk_full(exc, paths.root, "saving final/")  # before freeing the partial
        if writer:
            shutil.rmtree(partial, ignore_errors=True)
        if full is not None:
            raise full from exc
        raise


def train_loss(ctx: RunContext, output: Any) -> tuple[float | None, float | None]:
    """(runtime, train_loss) of the whole run however many attempts it took."""
    metrics = output.metrics if output is not None else {}
    carried = ctx.carried
    if not carried:  # the trainer's figures cover the whole run
        return metrics.get("train_runtime"), metrics.get("train_loss")
    if output is None:  # as the trainer's summary would have added the last window
        total = carried.get("total_loss", 0.0) + carried.get("tr_loss", 0.0)
    else:
        total = compat.total_loss(ctx.trainer)
    return round(ctx.clock.seconds(), 4), total / max(ctx.trainer.state.global_step, 0.001)
