"""`sftkit run`: from a resolved recipe to a run directory with a trained model.

Read top to bottom, this is the whole run:

1. claim the run directory (never overwrite another run; one writer at a time: the lock)
   and pre-flight the memory estimate, before anything heavy is loaded; decide whether the
   run starts, continues from its newest complete checkpoint, only finishes, or has nothing
   left to do (`sftkit.training.resume`);
2. write recipe.yaml, memory.json, environment.json, run.json;
3. prepare the data, load the tokenizer, build the model per the strategy (quantized base,
   adapters), build the optimizer from its plugin;
4. hand everything to TRL's SFTTrainer (today's API: SFTConfig(max_length=...),
   processing_class=, optimizers=(optimizer, None)) with metrics/hooks/progress callbacks,
   its checkpoints made atomic and exactly resumable (`sftkit.training.resumable`);
5. evaluate before training (if the recipe asks), train (or resume), save final/, evaluate
   after training, write the report, mark run.json completed.

SIGINT and SIGTERM stop at the next step boundary with a checkpoint
(`sftkit.training.interrupts`); every way a run ends leaves run.json saying how, and where
it would continue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from sftkit import progress
from sftkit.devices import is_cpu
from sftkit.errors import (
    DoesNotFitError,
    MissingDependencyError,
    RunInterrupted,
    SftkitError,
    TrainingDivergedError,
    UnknownArchitectureError,
)
from sftkit.quiet import log_to, quiet_libraries
from sftkit.runpaths import RunPaths
from sftkit.training.checkpoints import choose_checkpoint, discard_partial, publish
from sftkit.training.context import RunContext
from sftkit.training.lock import RunLock, check_unlocked, command_line
from sftkit.training.pickles import loaded_from, refused_pickle
from sftkit.training.preconditions import check_conditions, training_variables
from sftkit.training.resume import (
    diverged_after_resume,
    plan_run,
    read_json_safely,
    resumed_fields,
)
from sftkit.training.runfiles import (
    check_run_dir,
    disk_full,
    environment,
    now,
    update_run_json,
    write_json,
    write_recipe,
)

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe

log = logging.getLogger("sftkit.run")
# save_steps: None means "at the end only"; the trainer saves at the end with this.
NEVER = 10**12
# Fields of run.json that describe how an earlier attempt ended.
ENDING_FIELDS = ("stopped_at_step", "signal", "failed_step", "checkpoint")


@dataclass
class RunResult:
    run_dir: Path
    status: str
    metrics: dict[str, Any]
    context: RunContext


def run_recipe(
    resolved: ResolvedRecipe,
    *,
    resume: bool = False,
    force: bool = False,
    weights_only: bool = False,
    console: Console | None = None,
    callbacks: Sequence[Any] = (),
    handle_signals: bool = False,
) -> RunResult:
    """Train `resolved` into ``resolved.recipe.output_dir``; see the module docstring.

    `weights_only` lets a resume restart from a checkpoint's weights when none has its
    optimizer state. With `handle_signals` (the CLI), SIGINT/SIGTERM stop at the next step
    with a checkpoint and raise `RunInterrupted`."""
    from sftkit.training.interrupts import Interrupts, StopNow

    console = console or progress.current().console
    with (
        progress.use(progress.console_display(console)),
        Interrupts(enabled=handle_signals) as interrupts,
    ):
        try:
            ctx = start_run(
                resolved, resume=resume, force=force, console=console, weights_only=weights_only
            )
        except StopNow as exc:
            raise RunInterrupted(
                f"interrupted by {interrupts.name} before training started; nothing was lost.",
                signum=exc.signum,
            ) from None
        try:
            if ctx.plan.kind == "done":
                return RunResult(ctx.paths.root, "completed", read_json_safely(ctx.paths), ctx)
            ctx.interrupts = interrupts
            status = execute_run(ctx, console=console, callbacks=callbacks)
        finally:
            ctx.release()
    return RunResult(ctx.paths.root, status, dict(ctx.metrics), ctx)


def start_run(
    resolved: ResolvedRecipe,
    *,
    resume: bool,
    force: bool,
    console: Console,
    weights_only: bool = False,
) -> RunContext:
    """Everything before loading a weight: claim the run directory (its lock, held by the
    returned context until `ctx.release()`), pre-flight the memory estimate, plan the
    resume, write recipe.yaml / memory.json / environment.json / run.json (running).
    `sftkit launch` calls this once, then `execute_run` in every rank."""
    from sftkit.versions import check_training_stack

    check_training_stack("sftkit run")  # before anything is written or imported
    from sftkit.modeling import training_device
    from sftkit.modeling.kernels import check_inference_device, check_kernels
    from sftkit.training.loss import check_loss_head

    recipe = resolved.recipe
    paths = RunPaths(Path(recipe.output_dir))
    say = progress.console_display(console).say  # plain lines stay whole off a terminal
    check_unlocked(paths)  # quick refusals first, before any work
    notes = check_run_dir(paths, resolved, resume=resume)
    plan = plan_run(paths, resolved, resume=resume, weights_only=weights_only)
    if plan.kind == "done":  # nothing to do: not even the lock file is written
        for note in (*notes, *plan.notes):
            say(note, markup=False)
        return RunContext(resolved=resolved, paths=paths, device="", plan=plan)
    estimate = preflight(resolved, force=force, echo=say)
    device = training_device(recipe)
    check_kernels(recipe, device)  # before anything is written or loaded
    check_loss_head(resolved, device)
    conditions = check_conditions(resolved, device, paths if resume else None)
    if recipe.evaluation.evaluators and (
        recipe.evaluation.before_training or recipe.evaluation.after_training
    ):
        check_inference_device(resolved, device)
    lock = RunLock.acquire(
        paths,
        command=command_line(),
        echo=lambda m: say(f"[yellow]note:[/yellow] {escape(m)}"),
    )
    try:
        # Again, now that the directory is ours: another process may have been quicker.
        notes = check_run_dir(paths, resolved, resume=resume)
        plan = plan_run(paths, resolved, resume=resume, weights_only=weights_only)
        for note in (*notes, *plan.notes, *conditions):
            say(note, markup=False)
        ctx = RunContext(resolved=resolved, paths=paths, device=device, plan=plan, lock=lock)
        if plan.kind == "done":
            return ctx
        _prepare_directory(ctx, estimate, console)
    except BaseException:
        lock.release()
        raise
    if plan.checkpoint is not None:
        from sftkit.training.resumable import load_carry

        ctx.resumed_from, ctx.weights_only = plan.checkpoint, plan.weights_only
        ctx.carried = load_carry(plan.checkpoint, 0)
    return ctx


def _prepare_directory(ctx: RunContext, estimate: dict[str, Any], console: Console) -> None:
    paths, plan, recipe = ctx.paths, ctx.plan, ctx.recipe
    discarded = discard_partial(paths)
    if discarded:
        progress.console_display(console).say(
            f"discarded what an interrupted save left unfinished: {', '.join(discarded)}",
            markup=False,
        )
    paths.root.mkdir(parents=True, exist_ok=True)
    _speak_at_start(ctx, console)
    if plan.kind == "new":
        write_recipe(paths, ctx.resolved)
    write_json(paths.memory, estimate)
    write_json(paths.environment, environment(ctx.device))
    record = read_json_safely(paths)
    fields: dict[str, Any] = {
        "status": "running",
        "finished": None,
        "error": None,
        "model": recipe.model.name_or_path,
        "strategy": recipe.strategy.name,
        "optimizer": recipe.optimizer.name,
        "device": ctx.device,
        "environment_variables": training_variables(),
        "resumed_from": str(plan.checkpoint) if plan.checkpoint else None,
    }
    if plan.kind == "new" or "started" not in record:
        fields["started"] = now()
    fields.update(resumed_fields(paths, plan, record))  # metrics.jsonl made to match
    update_run_json(paths, drop=ENDING_FIELDS, **fields)


def _speak_at_start(ctx: RunContext, console: Console) -> None:
    """Route the libraries' output to the run's log, and say once what the user should know
    that a library would otherwise have said in a warning."""
    from sftkit.modeling import trust_remote_code_notice

    recipe, say = ctx.recipe, progress.console_display(console).say
    quiet_libraries()  # the CLI did already; a run started from Python gets the same
    log_to(ctx.paths.log)
    if recipe.model.trust_remote_code:
        say(trust_remote_code_notice(recipe))
    if getattr(ctx.resolved.optimizer.spec, "paged", False) and is_cpu(ctx.device):
        # bitsandbytes says so in a UserWarning (now in the log file); say it plainly.
        say(
            f"[yellow]note:[/yellow] {recipe.optimizer.name} pages its state to host memory "
            "only on CUDA; on the CPU it runs unpaged."
        )


def execute_run(ctx: RunContext, *, console: Console, callbacks: Sequence[Any] = ()) -> str:
    """Train, save, evaluate and report; run.json ends completed, interrupted or failed. In
    a launched run every rank calls this; only the main process writes run metadata and the
    report."""
    from sftkit.distributed.rank import is_main_process
    from sftkit.training.interrupts import StopNow

    main = is_main_process()
    display = progress.console_display(console)  # the launch worker's, or run_recipe's
    try:
        with progress.use(display):
            if ctx.plan is not None and ctx.plan.kind == "evaluate":
                finish_evaluation(ctx, console=console)
            else:
                train(ctx, console=console, extra_callbacks=callbacks)
    except BaseException as exc:
        error: BaseException = exc
        if isinstance(exc, StopNow):
            error = interrupted(ctx, exc.signum)
        elif (full := disk_full(exc, ctx.paths.root, "writing the run")) is not None:
            error = full
        elif (refused := refused_pickle(exc, loaded_from(ctx))) is not None:
            error = refused
        elif isinstance(exc, TrainingDivergedError):  # right after a resume: the checkpoint?
            error = diverged_after_resume(exc, ctx.paths, ctx.resumed_from)
        if main:  # Ctrl-C without our handler (a library caller) is an interrupt too
            record_ending(ctx, interrupted(ctx, 2) if type(exc) is KeyboardInterrupt else error)
        if error is exc:
            raise
        raise error from None
    signum = ctx.interrupts.signum if ctx.interrupts is not None else None
    if signum is not None:  # stopped at a step boundary, with a checkpoint
        error = interrupted(ctx, signum)
        if main:
            record_ending(ctx, error)
        raise error
    if not main:
        return "completed"
    record = update_run_json(
        ctx.paths, drop=ENDING_FIELDS, status="completed", finished=now(), error=None
    )
    after_run(ctx, echo=display.say)
    return str(record["status"])


def interrupted(ctx: RunContext, signum: int) -> RunInterrupted:
    import signal

    state = getattr(ctx.trainer, "state", None)
    step = state.global_step if state is not None else ctx.plan.step if ctx.plan else 0
    total = f" of {state.max_steps}" if state is not None and state.max_steps > 0 else ""
    point = choose_checkpoint_quietly(ctx.paths)
    saved = (
        f"{point.name} is saved, and a resume continues from there"
        if point is not None
        else "no checkpoint is saved yet, so a resume starts over"
    )
    if point is not None and point.step < step:
        saved += f" (the {step - point.step} step(s) since are trained again)"
    return RunInterrupted(
        f"interrupted by {signal.Signals(signum).name} at step {step}{total}; {saved}.",
        signum=signum,
        hint=f"Resume with the same command and --resume (run directory: {ctx.paths.root}).",
    )


def choose_checkpoint_quietly(paths: RunPaths) -> Any:
    try:
        return choose_checkpoint(paths).checkpoint
    except SftkitError:
        return None


def record_ending(ctx: RunContext, error: BaseException) -> None:
    """run.json for a run that stopped early: how, at which step, what a resume continues
    from. On a full disk the lock's reserve is given back so that this write succeeds."""
    state = getattr(ctx.trainer, "state", None)
    point = choose_checkpoint_quietly(ctx.paths)
    fields: dict[str, Any] = {
        "finished": now(),
        "error": f"{type(error).__name__}: {error}".splitlines()[0],
        "stopped_at_step": state.global_step if state is not None else None,
        "checkpoint": point.name if point is not None else None,
    }
    if isinstance(error, RunInterrupted):
        import signal

        fields.update(status="interrupted", signal=signal.Signals(error.signum).name)
    else:
        fields["status"] = "failed"
        if isinstance(error, TrainingDivergedError):
            fields["failed_step"] = error.step
    for attempt in range(2):
        try:
            update_run_json(ctx.paths, **fields)
            return
        except OSError:
            if attempt == 0 and ctx.lock is not None:
                ctx.lock.release_reserve()
    log.error("could not record the run's end in %s", ctx.paths.run)


def preflight(
    resolved: ResolvedRecipe, *, force: bool, echo: Callable[[str], None]
) -> dict[str, Any]:
    """The memory estimate as a dict for memory.json; `DoesNotFitError` (exit 3) unless
    `force`. Runs before any model is loaded."""
    from sftkit.memory import estimate
    from sftkit.memory import preflight as memory_preflight

    try:
        result = memory_preflight(resolved)
    except UnknownArchitectureError as exc:
        # The estimator lacking an architecture is no reason to refuse the model.
        echo(
            "[yellow]warning:[/yellow] no memory estimate for this model, so no pre-flight "
            f"check: {exc.message}"
        )
        return {"unavailable": exc.message}
    except DoesNotFitError:
        if not force:
            raise
        result = estimate(resolved)
        echo(
            "[yellow]warning:[/yellow] the memory estimate does not fit "
            f"({result.peak_bytes / 2**30:.1f} GiB at {result.peak_phase}); running anyway (--force)."
        )
    data: dict[str, Any] = result.to_dict()
    return data


def train(ctx: RunContext, *, console: Console, extra_callbacks: Sequence[Any] = ()) -> None:
    try:
        from transformers import PrinterCallback, ProgressCallback, set_seed
        from trl import SFTTrainer
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError):
            raise
        from sftkit.versions import import_clash

        raise import_clash(exc, doing="sftkit run") from exc

    from sftkit.data.prepare import prepare_data, read_examples
    from sftkit.modeling import build_model, load_tokenizer
    from sftkit.specs import load_factory
    from sftkit.training import evaluating
    from sftkit.training.callbacks import HooksCallback, MetricsCallback, RichProgressCallback
    from sftkit.training.dataset import tokenized_dataset
    from sftkit.training.optimizer import build_optimizer, optimizer_lr
    from sftkit.training.resumable import AlreadyTrained, CarryCallback, resumable_trainer
    from sftkit.training.sft_trainer import sftkit_trainer_class
    from sftkit.training.techniques import after_trainer_built

    resolved, recipe, paths = ctx.resolved, ctx.recipe, ctx.paths
    display = progress.console_display(console)
    set_seed(recipe.training.seed)
    prepared = prepare_data(resolved)
    for warning in prepared.warnings:
        display.say(f"[yellow]data warning:[/yellow] {warning}")
    counts = prepared.counts
    display.say(
        f"data: {counts['train']} train / {counts['dev']} dev / {counts['test']} test "
        f"examples in {prepared.directory}"
    )
    tokenizer = load_tokenizer(recipe)
    template = load_factory(resolved.template.spec.factory)(resolved.template.options)
    examples = read_examples(prepared.split_path("train"))
    dataset = tokenized_dataset(
        examples, template, tokenizer, completion_only_loss=recipe.data.completion_only_loss
    )
    eval_dataset = None
    if recipe.training.eval_steps is not None:  # eval loss on dev while training
        eval_dataset = tokenized_dataset(
            read_examples(prepared.split_path("dev")),
            template,
            tokenizer,
            completion_only_loss=recipe.data.completion_only_loss,
        )
    started = time.perf_counter()
    with display.stage("load model"):
        model = build_model(
            resolved, tokenizer, base_dir=paths.base if recipe.model.random_init else None
        )
        optimizer = build_optimizer(resolved, model)
    display.say(_describe_model(model, recipe, time.perf_counter() - started))
    args = sft_config(ctx, learning_rate=optimizer_lr(optimizer))
    ctx.tokenizer = tokenizer
    from sftkit.distributed.rank import is_main_process, world_size
    from sftkit.distributed.trainer import (
        engine_trainer_class,
        evaluates_in_process,
        prepare_final_save,
        trainer_optimizers,
    )

    # First: the carried loss window is restored before any other callback sees a step.
    callbacks: list[Any] = [CarryCallback(ctx)]
    if is_main_process():  # one writer of metrics.jsonl and TensorBoard; hooks run once
        callbacks.append(MetricsCallback(ctx))
        if "tensorboard" in recipe.training.report_to:
            callbacks.append(_tensorboard(paths, resumed_at=ctx.plan.step if ctx.plan else 0))
        manager = resolved.registry.manager
        if manager is not None:
            callbacks.append(HooksCallback(ctx, manager.hook))
        callbacks.append(RichProgressCallback(display))
    callbacks.extend(evaluating.callbacks(ctx, console, main=is_main_process()))
    if ctx.interrupts is not None:
        from sftkit.training.interrupts import StopOnSignal

        callbacks.append(StopOnSignal(ctx.interrupts, single_process=world_size() == 1))
    callbacks.extend(extra_callbacks)
    trainer_class = engine_trainer_class(
        sftkit_trainer_class(SFTTrainer),
        recipe,
        use_cpu=is_cpu(ctx.device),
        optimizer_factory=lambda sharded: build_optimizer(resolved, sharded),
    )
    trainer = resumable_trainer(trainer_class, ctx)(
        model=model,
        args=args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        optimizers=trainer_optimizers(recipe, optimizer),  # FSDP builds it once sharded
        callbacks=callbacks,
    )
    after_trainer_built(trainer, resolved)  # the recipe's loss head and adapter dtype
    # Our progress bar and metrics replace the trainer's tqdm bar and printed dicts.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    ctx.model, ctx.trainer = trainer.model, trainer

    if ctx.resumed_from is None and is_main_process():
        evaluate_stage(ctx, "before", echo=display.say)
    output: Any = None
    try:
        output = trainer.train(
            resume_from_checkpoint=str(ctx.resumed_from) if ctx.resumed_from else None
        )
        ctx.metrics.update(output.metrics)
    except AlreadyTrained:
        # Checkpoint at the last step (killed while final/ was saved): no step 21 of 20.
        display.say(
            f"{ctx.resumed_from.name if ctx.resumed_from else 'the checkpoint'} is at the last "
            f"step ({trainer.state.global_step} of {trainer.state.max_steps}): saving final/ "
            "from it.",
            markup=False,
        )
    if ctx.interrupts is not None and ctx.interrupts.signum is not None:
        return  # stopped at a step boundary: the checkpoint is saved, final/ is not due
    prepare_final_save(trainer)
    save_final(ctx)
    if is_main_process():
        update_run_json(paths, **run_summary(ctx, output))
        if evaluates_in_process(recipe):  # else `sftkit launch` evaluates final/ afterwards
            evaluate_stage(ctx, "after", echo=display.say)


def finish_evaluation(ctx: RunContext, *, console: Console) -> None:
    """final/ is complete but the run stopped before its evaluation: evaluate final/."""
    from sftkit.modeling import load_trained

    if not ctx.recipe.evaluation.after_training or not ctx.resolved.evaluators:
        return
    ctx.model, ctx.tokenizer = load_trained(ctx.run_dir)
    evaluate_stage(ctx, "after", echo=progress.console_display(console).say)


def sft_config(ctx: RunContext, *, learning_rate: float) -> Any:
    """SFTConfig from the recipe (TRL 1.x names: max_length, completion_only_loss, ...)."""
    from trl import SFTConfig

    from sftkit.training.evaluating import eval_arguments, save_steps

    t, data = ctx.recipe.training, ctx.recipe.data
    report_to = [r for r in t.report_to if r not in ("tensorboard", "none")] or "none"
    if t.liger_kernels:
        _require("liger_kernel", "liger-kernel", "training.liger_kernels")
    from sftkit.distributed.trainer import trainer_arguments
    from sftkit.training.loss import trl_config_kwargs

    engine = trainer_arguments(ctx.recipe, ctx.paths.root, use_cpu=is_cpu(ctx.device))
    checkpointing = engine.pop("gradient_checkpointing", t.gradient_checkpointing)
    return SFTConfig(
        output_dir=str(ctx.paths.checkpoints),
        per_device_train_batch_size=t.micro_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps if t.max_steps is not None else -1,
        learning_rate=learning_rate,  # logged only: the scheduler scales the optimizer's lr
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
        dataset_num_proc=None,
        dataloader_num_workers=0,
        use_liger_kernel=t.liger_kernels,
        neftune_noise_alpha=t.neftune_noise_alpha,
        **eval_arguments(ctx.recipe),  # eval loss on dev, best checkpoint, early stopping
        **trl_config_kwargs(),
        **engine,  # DDP/FSDP/DeepSpeed settings for launched runs (sftkit.distributed)
    )


def _checkpointing_args(config_class: Any, enabled: bool) -> dict[str, Any]:
    """transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old
    name warns); older releases only know the old one."""
    import dataclasses

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


def _describe_model(model: Any, recipe: Any, seconds: float) -> str:
    """Two short lines, so that neither wraps on an 80-column terminal for common names."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return (
        f"model: {recipe.model.name_or_path} ({recipe.strategy.name}), loaded in {seconds:.1f}s\n"
        f"  {trainable:,} of {total:,} parameters train ({100 * trainable / max(total, 1):.2f}%)"
    )


def save_final(ctx: RunContext) -> None:
    """final/: the PEFT adapter (LoRA strategies) or the full model, plus the tokenizer;
    assembled under .partial/ and renamed into place complete, replacing an earlier one."""
    import shutil

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
                partial,
                paths.final,
                kind="final",
                step=state.global_step,
                max_steps=state.max_steps,
            )
    except BaseException as exc:
        full = disk_full(exc, paths.root, "saving final/")  # before freeing the partial
        if writer:
            shutil.rmtree(partial, ignore_errors=True)
        if full is not None:
            raise full from exc
        raise


def run_summary(ctx: RunContext, output: Any) -> dict[str, Any]:
    """run.json's training summary, over the whole run however many attempts it took.
    `output` is the trainer's (None: nothing was left to train after the checkpoint)."""
    import torch

    state = ctx.trainer.state
    losses = [e["loss"] for e in state.log_history if "loss" in e]
    rates = [e["tokens_per_second"] for e in state.log_history if "tokens_per_second" in e]
    metrics = output.metrics if output is not None else {}
    carried = ctx.carried
    runtime = metrics.get("train_runtime")
    train_loss = metrics.get("train_loss")
    if carried:  # the trainer's figures cover only this attempt
        runtime = round(ctx.runtime_s(), 4)
        total = getattr(ctx.trainer, "_total_loss_scalar", None)
        if output is None:  # as the trainer's summary would have added the last window
            total = carried.get("total_loss", 0.0) + carried.get("tr_loss", 0.0)
        train_loss = total / max(state.global_step, 0.001) if total is not None else None
    tokens = ctx.metrics.get("num_tokens", carried.get("train_tokens"))
    summary: dict[str, Any] = {
        "steps": state.global_step,
        "max_steps": state.max_steps,
        "epochs": state.epoch,
        "train_runtime_s": runtime,
        "tokens_per_second": (tokens / runtime)
        if tokens and runtime
        else (rates[-1] if rates else None),
        "final_loss": losses[-1] if losses else None,
        "train_loss": train_loss,
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if ctx.device == "cuda" else None,
    }
    from sftkit.training.evaluating import best_summary

    summary.update(best_summary(ctx))
    return summary


def evaluate_stage(ctx: RunContext, stage: str, *, echo: Callable[[str], None]) -> None:
    """The recipe's evaluators before or after training (evaluation.before_training /
    after_training), written to <run>/eval/<stage>-<evaluator>/."""
    evaluation = ctx.recipe.evaluation
    wanted = evaluation.before_training if stage == "before" else evaluation.after_training
    if not wanted or not ctx.resolved.evaluators:
        return
    from sftkit.evaluation.runner import evaluate_in_run

    model = ctx.trainer.model if ctx.trainer is not None else ctx.model
    evaluate_in_run(ctx.resolved, model, ctx.tokenizer, ctx.run_dir, stage=stage, echo=echo)


def after_run(ctx: RunContext, *, echo: Callable[[str], None]) -> None:
    """The run report (report.md, report.html, loss.png) from the finished run directory."""
    try:
        from sftkit.reporting.report import write_report
    except ImportError:  # pragma: no cover - reporting ships with sftkit
        return
    try:
        files = write_report(ctx.run_dir)
    except SftkitError as exc:
        echo(f"[yellow]warning:[/yellow] no report: {exc}")
        return
    echo(f"report: {getattr(files, 'markdown', files)}")
