"""`sftkit run`: from a resolved recipe to a run directory with a trained model.

Read top to bottom, this is the whole run:

1. claim the run directory (never overwrite another run) and pre-flight the memory estimate,
   before anything heavy is loaded;
2. write recipe.yaml, memory.json, environment.json, run.json;
3. prepare the data, load the tokenizer, build the model per the strategy (quantized base,
   adapters), build the optimizer from its plugin;
4. hand everything to TRL's SFTTrainer (today's API: SFTConfig(max_length=...),
   processing_class=, optimizers=(optimizer, None)) with metrics/hooks/progress callbacks;
5. evaluate before training (if the recipe asks), train (or resume), save final/, evaluate
   after training, write the report, mark run.json completed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from sftkit.devices import is_cpu
from sftkit.errors import (
    DoesNotFitError,
    MissingDependencyError,
    SftkitError,
    UnknownArchitectureError,
)
from sftkit.runpaths import RunPaths, last_checkpoint
from sftkit.training.context import RunContext
from sftkit.training.runfiles import (
    check_run_dir,
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
    console: Console | None = None,
    callbacks: Sequence[Any] = (),
) -> RunResult:
    """Train `resolved` into ``resolved.recipe.output_dir``; see the module docstring."""
    console = console or Console(stderr=True)
    ctx = start_run(resolved, resume=resume, force=force, console=console)
    status = execute_run(ctx, console=console, callbacks=callbacks)
    return RunResult(ctx.paths.root, status, dict(ctx.metrics), ctx)


def start_run(
    resolved: ResolvedRecipe, *, resume: bool, force: bool, console: Console
) -> RunContext:
    """Everything before loading a weight: claim the run directory, pre-flight the memory
    estimate, write recipe.yaml / memory.json / environment.json / run.json (running).
    `sftkit launch` calls this once, then `execute_run` in every rank."""
    from sftkit.versions import check_training_stack

    check_training_stack("sftkit run")  # before anything is written or imported
    from sftkit.modeling import training_device
    from sftkit.modeling.kernels import check_inference_device, check_kernels

    recipe = resolved.recipe
    paths = RunPaths(Path(recipe.output_dir))
    check_run_dir(paths, resolved, resume=resume)
    estimate = preflight(resolved, force=force, echo=console.print)
    device = training_device(recipe)
    check_kernels(recipe, device)  # before anything is written or loaded
    if recipe.evaluation.evaluators and (
        recipe.evaluation.before_training or recipe.evaluation.after_training
    ):
        check_inference_device(resolved, device)
    paths.root.mkdir(parents=True, exist_ok=True)
    if not resume:
        write_recipe(paths, resolved)
    write_json(paths.memory, estimate)
    write_json(paths.environment, environment(device))
    checkpoint = last_checkpoint(paths) if resume else None
    update_run_json(
        paths,
        status="running",
        started=now(),
        finished=None,
        error=None,
        model=recipe.model.name_or_path,
        strategy=recipe.strategy.name,
        optimizer=recipe.optimizer.name,
        device=device,
        resumed_from=str(checkpoint) if checkpoint else None,
    )
    return RunContext(resolved=resolved, paths=paths, device=device, resumed_from=checkpoint)


def execute_run(ctx: RunContext, *, console: Console, callbacks: Sequence[Any] = ()) -> str:
    """Train, save, evaluate and report; run.json ends completed or failed. In a launched
    run every rank calls this; only the main process writes run metadata and the report."""
    from sftkit.distributed.rank import is_main_process

    main = is_main_process()
    try:
        train(ctx, console=console, extra_callbacks=callbacks)
    except BaseException as exc:
        if main:
            update_run_json(
                ctx.paths, status="failed", finished=now(), error=f"{type(exc).__name__}: {exc}"
            )
        raise
    if not main:
        return "completed"
    record = update_run_json(ctx.paths, status="completed", finished=now(), error=None)
    after_run(ctx, echo=console.print)
    return str(record["status"])


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

    resolved, recipe, paths = ctx.resolved, ctx.recipe, ctx.paths
    _quiet_library_progress_bars()
    set_seed(recipe.training.seed)
    prepared = prepare_data(resolved)
    for warning in prepared.warnings:
        console.print(f"[yellow]data warning:[/yellow] {warning}")
    counts = prepared.counts
    console.print(
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
    model = build_model(
        resolved, tokenizer, base_dir=paths.base if recipe.model.random_init else None
    )
    optimizer = build_optimizer(resolved, model)
    console.print(_describe_model(model, recipe, time.perf_counter() - started))
    args = sft_config(ctx, learning_rate=optimizer_lr(optimizer))
    ctx.tokenizer = tokenizer
    from sftkit.distributed.rank import is_main_process
    from sftkit.distributed.trainer import (
        engine_trainer_class,
        evaluates_in_process,
        prepare_final_save,
        trainer_optimizers,
    )

    callbacks: list[Any] = []
    if is_main_process():  # one writer of metrics.jsonl and TensorBoard; hooks run once
        callbacks.append(MetricsCallback(ctx))
        if "tensorboard" in recipe.training.report_to:
            callbacks.append(_tensorboard(paths))
        manager = resolved.registry.manager
        if manager is not None:
            callbacks.append(HooksCallback(ctx, manager.hook))
        callbacks.append(RichProgressCallback(console))
    callbacks.extend(evaluating.callbacks(ctx, console, main=is_main_process()))
    callbacks.extend(extra_callbacks)
    trainer_class = engine_trainer_class(
        SFTTrainer,
        recipe,
        use_cpu=is_cpu(ctx.device),
        optimizer_factory=lambda sharded: build_optimizer(resolved, sharded),
    )
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        optimizers=trainer_optimizers(recipe, optimizer),  # FSDP builds it once sharded
        callbacks=callbacks,
    )
    # Our progress bar and metrics replace the trainer's tqdm bar and printed dicts.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    ctx.model, ctx.trainer = trainer.model, trainer

    if ctx.resumed_from is None and is_main_process():
        evaluate_stage(ctx, "before", echo=console.print)
    output = trainer.train(
        resume_from_checkpoint=str(ctx.resumed_from) if ctx.resumed_from else None
    )
    ctx.metrics.update(output.metrics)
    prepare_final_save(trainer)
    save_final(ctx)
    if is_main_process():
        update_run_json(paths, **run_summary(ctx, output))
        if evaluates_in_process(recipe):  # else `sftkit launch` evaluates final/ afterwards
            evaluate_stage(ctx, "after", echo=console.print)


def sft_config(ctx: RunContext, *, learning_rate: float) -> Any:
    """SFTConfig from the recipe (TRL 1.x names: max_length, completion_only_loss, ...)."""
    from trl import SFTConfig

    from sftkit.training.evaluating import eval_arguments, save_steps

    t, data = ctx.recipe.training, ctx.recipe.data
    report_to = [r for r in t.report_to if r not in ("tensorboard", "none")] or "none"
    if t.liger_kernels:
        _require("liger_kernel", "liger-kernel", "training.liger_kernels")
    from sftkit.distributed.trainer import trainer_arguments

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
        save_total_limit=t.save_total_limit,
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


def _tensorboard(paths: RunPaths) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise MissingDependencyError("tensorboard", "training.report_to: [tensorboard]") from exc
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(paths.tensorboard)))


def _quiet_library_progress_bars() -> None:
    """transformers' and datasets' own tqdm bars (loading shards, mapping) would interleave
    with ours; the run prints one line per step instead."""
    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()


def _require(module: str, package: str, purpose: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(package, purpose)


def _describe_model(model: Any, recipe: Any, seconds: float) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return (
        f"model: {recipe.model.name_or_path} ({recipe.strategy.name}) loaded in {seconds:.1f}s; "
        f"{trainable:,} of {total:,} parameters train ({100 * trainable / max(total, 1):.2f}%)"
    )


def save_final(ctx: RunContext) -> None:
    """final/: the PEFT adapter (LoRA strategies) or the full model, plus the tokenizer."""
    trainer = ctx.trainer
    trainer.save_model(str(ctx.paths.final))  # writes on the main process only
    if trainer.is_world_process_zero():
        ctx.tokenizer.save_pretrained(str(ctx.paths.final))


def run_summary(ctx: RunContext, output: Any) -> dict[str, Any]:
    import torch

    metrics = output.metrics
    state = ctx.trainer.state
    losses = [e["loss"] for e in state.log_history if "loss" in e]
    rates = [e["tokens_per_second"] for e in state.log_history if "tokens_per_second" in e]
    runtime = metrics.get("train_runtime")
    tokens = ctx.metrics.get("num_tokens")
    summary: dict[str, Any] = {
        "steps": state.global_step,
        "max_steps": state.max_steps,
        "epochs": state.epoch,
        "train_runtime_s": runtime,
        "tokens_per_second": (tokens / runtime)
        if tokens and runtime
        else (rates[-1] if rates else None),
        "final_loss": losses[-1] if losses else None,
        "train_loss": metrics.get("train_loss"),
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
