"""`sftkit launch` as library calls: plan the launch (torch-free), then run it.

Planning resolves the recipe with the user's overrides plus what the launch implies (the world
size is `hardware.num_gpus`, so memory.json holds per-process figures; more than one process
without an engine is DDP), and builds the command. Running it on node 0 claims the run
directory and pre-flights memory exactly as `sftkit run` does, prepares the data and any
random base once (so no two ranks write the same file), writes the engine configs into
RUN/distributed/, then starts the workers and waits.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sftkit.devices import is_cpu
from sftkit.distributed.configs import (
    accelerate_config,
    deepspeed_overrides,
    engine_files,
    merge_accelerate_config,
    write_configs,
)
from sftkit.distributed.describe import describe_engine
from sftkit.distributed.launch import (
    LaunchCommand,
    Launcher,
    free_port,
    launch_command,
    worker_arguments,
)
from sftkit.distributed.topology import Topology
from sftkit.distributed.trainer import backend as choose_backend
from sftkit.engine import engine_of
from sftkit.errors import LaunchError, MissingDependencyError, WorkerFailedError
from sftkit.launch.lifetime import die_with_parent
from sftkit.recipe.load import load_recipe
from sftkit.runpaths import DEEPSPEED_CONFIG, LaunchPaths, RunPaths

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe
    from sftkit.registry import Registry

DEFAULT_MULTI_NODE_PORT = 29500


@dataclass(frozen=True)
class LaunchRequest:
    recipe: str
    overrides: Sequence[str] = ()
    nproc: int | None = None
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None
    launcher: Launcher = "accelerate"
    output_dir: Path | None = None
    resume: bool = False
    force: bool = False
    deepspeed_config: Path | None = None  # the user's DeepSpeed JSON, instead of the generated
    accelerate_config: Path | None = None  # the user's accelerate config, merged (configs.py)


@dataclass
class LaunchPlan:
    resolved: ResolvedRecipe
    topology: Topology
    launcher: Launcher
    resume: bool
    force: bool
    use_cpu: bool
    backend: str
    config_dir: Path
    command: LaunchCommand
    notes: list[str] = field(default_factory=list)
    brought: dict[str, str] = field(default_factory=dict)  # engine file name -> user's text
    brought_accelerate: dict[str, Any] | None = None
    accelerate_source: str = ""

    @property
    def run_dir(self) -> Path:
        return Path(self.resolved.recipe.output_dir)

    @property
    def files(self) -> LaunchPaths:
        return LaunchPaths(self.config_dir)

    def render(self) -> str:
        """What `--dry-run` prints: the engine, the generated files, the command."""
        r = self.resolved.recipe
        t = self.topology
        lines = [
            f"recipe     {self.resolved.source}"
            + (f"  ({' '.join(self.resolved.overrides)})" if self.resolved.overrides else ""),
            f"run        {self.run_dir}",
            f"processes  {t.world_size} ({t.nproc_per_node} per node x {t.nnodes} node(s)), "
            f"this is node {t.node_rank}; {'CPU' if self.use_cpu else 'CUDA'} with {self.backend}",
            f"engine     {describe_engine(r)}",
            f"batch      {r.training.micro_batch_size} per process x "
            f"{r.training.gradient_accumulation_steps} accumulation x {t.world_size} processes = "
            f"{r.training.micro_batch_size * r.training.gradient_accumulation_steps * t.world_size}"
            " sequences per optimizer step",
            "",
            f"# {self.files.accelerate_config}",
        ]
        config = accelerate_config(r, t, config_dir=self.config_dir, use_cpu=self.use_cpu)
        if self.brought_accelerate is not None:
            config = merge_accelerate_config(
                self.brought_accelerate, config, source=self.accelerate_source
            )
        lines.append(yaml.safe_dump(config, sort_keys=False).rstrip())
        for name, content in engine_files(r, self.brought).items():
            lines += ["", f"# {self.config_dir / name}", content.rstrip()]
        lines += ["", "# command", self.command.shell()]
        return "\n".join(lines)


def plan_launch(request: LaunchRequest, *, registry: Registry) -> LaunchPlan:
    """Resolve the recipe for this launch and build the command. Starts and writes nothing."""
    extra = [f"output_dir={request.output_dir}"] if request.output_dir is not None else []
    brought: dict[str, str] = {}
    if request.deepspeed_config is not None:
        chosen = load_recipe(request.recipe, (*request.overrides, *extra), registry=registry)
        if chosen.recipe.distributed.engine not in ("none", "deepspeed"):
            raise LaunchError(
                f"--deepspeed-config brings a DeepSpeed JSON, but the recipe's engine is "
                f"{chosen.recipe.distributed.engine!r}.",
                hint="Drop the option, or use distributed.engine=deepspeed (or none).",
            )
        text, data = _read_brought(request.deepspeed_config, "DeepSpeed JSON")
        extra += deepspeed_overrides(data, source=str(request.deepspeed_config))
        brought[DEEPSPEED_CONFIG] = text
    brought_accelerate = None
    if request.accelerate_config is not None:
        _, brought_accelerate = _read_brought(request.accelerate_config, "accelerate config")
    first = load_recipe(request.recipe, (*request.overrides, *extra), registry=registry)
    use_cpu = is_cpu(first.recipe.hardware.gpu)
    nproc = request.nproc if request.nproc is not None else _visible_gpus(use_cpu)
    port = request.master_port
    if port is None:
        port = DEFAULT_MULTI_NODE_PORT if request.nnodes > 1 else free_port()
    topology = Topology(
        nproc_per_node=nproc,
        nnodes=request.nnodes,
        node_rank=request.node_rank,
        master_addr=request.master_addr,
        master_port=port,
    )
    notes: list[str] = []
    implied: list[str] = []
    world = topology.world_size
    engine_name = first.recipe.distributed.engine
    launched = engine_of(first.recipe).launch_engine(first.recipe, world)
    if launched is not None:
        implied.append(f"distributed.engine={launched}")
        title = registry.engines.get(launched).load().title
        notes.append(
            f"{world} processes and distributed.engine {engine_name}: training with {title}."
        )
    if first.recipe.hardware.num_gpus != world:
        implied.append(f"hardware.num_gpus={world}")
        if first.recipe.hardware.num_gpus != 1:
            notes.append(
                f"hardware.num_gpus is {first.recipe.hardware.num_gpus} but {world} processes "
                f"are launched: memory is checked for {world}."
            )
    resolved = (
        load_recipe(request.recipe, (*request.overrides, *extra, *implied), registry=registry)
        if implied
        else first
    )
    run_dir = Path(resolved.recipe.output_dir)
    # Only node 0 writes into the run directory (which may not exist yet when others start).
    config_dir = (
        RunPaths(run_dir).launch.root
        if topology.is_first_node
        else Path(tempfile.gettempdir()) / f"sftkit-launch-{os.getpid()}"
    )
    backend = choose_backend(resolved.recipe, use_cpu=use_cpu)
    command = launch_command(
        request.launcher,
        topology,
        worker_arguments(run_dir, resume=request.resume),
        accelerate_config=LaunchPaths(config_dir).accelerate_config,
        use_cpu=use_cpu,
        backend=backend,
    )
    return LaunchPlan(
        resolved=resolved,
        topology=topology,
        launcher=request.launcher,
        resume=request.resume,
        force=request.force,
        use_cpu=use_cpu,
        backend=backend,
        config_dir=config_dir,
        command=command,
        notes=notes + ([f"DeepSpeed settings from {request.deepspeed_config}."] if brought else []),
        brought=brought,
        brought_accelerate=brought_accelerate,
        accelerate_source=str(request.accelerate_config or ""),
    )


def _read_brought(path: Path, what: str) -> tuple[str, dict[str, Any]]:
    """A user's config file: its text and its mapping (JSON is YAML too)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise LaunchError(f"cannot read the {what} {str(path)!r}: {exc}") from exc
    if not isinstance(data, dict):
        raise LaunchError(f"the {what} {str(path)!r} does not hold a mapping.")
    return text, data


def run_launch(plan: LaunchPlan, *, echo: Callable[[str], None]) -> dict[str, Any]:
    """Prepare (node 0), start the workers, wait; run.json's fields on node 0."""
    _check_engine_installed(plan)
    record: dict[str, Any] = {}
    ctx = _prepare_run(plan, echo=echo) if plan.topology.is_first_node else None
    try:  # node 0 holds the run directory's lock until its workers are done
        if ctx is not None and ctx.plan.kind == "done":
            return record
        if ctx is not None and ctx.lock is not None:
            ctx.lock.share()  # the workers hold it too, until the last of them is gone
        return _launch(plan, echo=echo, lock=ctx.lock if ctx is not None else None)
    finally:
        if ctx is not None:
            ctx.release()


def _launch(plan: LaunchPlan, *, echo: Callable[[str], None], lock: Any = None) -> dict[str, Any]:
    record: dict[str, Any] = {}
    generated = write_configs(
        plan.resolved.recipe,
        plan.topology,
        plan.config_dir,
        use_cpu=plan.use_cpu,
        brought=plan.brought,
        brought_accelerate=plan.brought_accelerate,
        accelerate_source=plan.accelerate_source,
    )
    script = plan.files.launch_script
    script.write_text(
        "#!/bin/sh\n# The command `sftkit launch` ran on this node.\n"
        f"cd {shlex.quote(os.getcwd())}\n{plan.command.shell()}\n",
        encoding="utf-8",
    )
    echo(
        f"launch: {plan.topology.world_size} processes via {plan.launcher}; configs in {generated.accelerate.parent}"
    )
    # Killed outright, this process takes the launcher (and so the workers) with it; the
    # launcher holds the run's lock with it (and the workers, `sftkit.launch.worker`).
    returncode = subprocess.call(
        plan.command.argv,
        env={**os.environ, **plan.command.env},
        preexec_fn=die_with_parent(),
        pass_fds=lock.inherited() if lock is not None else (),
    )
    if plan.topology.is_first_node:
        record = _settle_run_json(plan, returncode)
    if returncode != 0:
        raise WorkerFailedError(
            f"the {plan.launcher} workers exited with status {returncode}; the first error is "
            "in the output above.",
            hint=f"Fix it and continue with `sftkit launch ... --resume` (run: {plan.run_dir}).",
        )
    if plan.topology.is_first_node and _evaluates_here(plan):
        _evaluate_final(plan, echo=echo)
    return record


def _evaluates_here(plan: LaunchPlan) -> bool:
    """After-training evaluation of a sharded run: the workers could not (see
    `evaluates_in_process`); this process loads final/ whole, as `sftkit eval` would."""
    from sftkit.distributed.trainer import shards_parameters

    r = plan.resolved.recipe
    return (
        r.evaluation.after_training
        and bool(plan.resolved.evaluators)
        and plan.topology.world_size > 1
        and shards_parameters(r)
    )


def _evaluate_final(plan: LaunchPlan, *, echo: Callable[[str], None]) -> None:
    import torch

    from sftkit.evaluation.runner import evaluate_in_run
    from sftkit.modeling import load_trained
    from sftkit.reporting.report import write_report

    echo("evaluation after training: loading final/ in one process")
    try:
        model, tokenizer = load_trained(plan.run_dir)
        evaluate_in_run(plan.resolved, model, tokenizer, plan.run_dir, stage="after", echo=echo)
    except torch.cuda.OutOfMemoryError:
        # The run itself is complete; a model that needed sharding may not fit one GPU.
        echo(
            "evaluation after training skipped: the trained model does not fit one GPU; run "
            f"`sftkit eval {plan.run_dir}` on a larger one."
        )
        return
    write_report(plan.run_dir)  # again, now with the evaluation in it


def _visible_gpus(use_cpu: bool) -> int:
    if use_cpu:
        raise LaunchError(
            "hardware.gpu is cpu: pass --nproc N for the number of CPU processes.",
            hint="e.g. sftkit launch recipes/quickstart.yaml --nproc 2",
        )
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "sftkit launch") from exc
    count = torch.cuda.device_count()
    if count == 0:
        raise LaunchError(
            "no CUDA device is visible: pass --nproc N, or train on CPU processes with "
            "hardware.gpu=cpu.",
        )
    return count


def _check_engine_installed(plan: LaunchPlan) -> None:
    import importlib.util

    recipe = plan.resolved.recipe
    for package in engine_of(recipe).requires(recipe):
        if importlib.util.find_spec(package) is None:
            raise MissingDependencyError(
                package, f"distributed.engine: {recipe.distributed.engine}"
            )
    if plan.launcher == "accelerate" and importlib.util.find_spec("accelerate") is None:
        raise MissingDependencyError("accelerate", "sftkit launch --launcher accelerate")


def _prepare_run(plan: LaunchPlan, *, echo: Callable[[str], None]) -> Any:
    """What `sftkit run` does before training, once, in this process: claim the directory,
    pre-flight memory, write the run's metadata, prepare the data (no two ranks may write the
    same file) and tokenize it (a random base is written by rank 0 of the workers)."""
    try:
        from rich.console import Console

        from sftkit.modeling import training_device
        from sftkit.training.runfiles import resolved_recipe_data
        from sftkit.training.runner import start_run
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "torch", "sftkit launch") from exc
    recipe = plan.resolved.recipe
    if not plan.use_cpu:
        training_device(recipe)  # a clear error here beats one per rank
    ctx = start_run(
        plan.resolved, resume=plan.resume, force=plan.force, console=Console(stderr=True)
    )
    if ctx.plan.kind == "done":
        return ctx
    plan.config_dir.mkdir(parents=True, exist_ok=True)
    plan.files.worker_recipe.write_text(
        "# The resolved recipe the workers of this launch read (written by sftkit launch).\n"
        + yaml.safe_dump(resolved_recipe_data(plan.resolved), sort_keys=False),
        encoding="utf-8",
    )
    # prepared and tokenized here, once: the ranks then read the tokenized cache instead of
    # each tokenizing the same rows (the first rename would win, the work done N times)
    from rich.text import Text

    from sftkit.training.stages.data import prepare

    data = prepare(plan.resolved, lambda line, *_, **__: echo(Text.from_markup(line).plain))
    echo(f"tokenized: train {len(data.train)} rows, for every rank")
    return ctx


def _settle_run_json(plan: LaunchPlan, returncode: int) -> dict[str, Any]:
    """A rank killed by its launcher cannot record its failure; record it here."""
    from sftkit.training.runfiles import now, read_json, update_run_json

    paths = RunPaths(plan.run_dir)
    record = read_json(paths.run)
    if returncode != 0 and record.get("status") == "running":
        record = update_run_json(
            paths,
            status="failed",
            finished=now(),
            error=f"workers exited with status {returncode}",
        )
    return record
