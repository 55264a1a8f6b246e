"""`sftkit launch`: the same recipe, overrides and options as `sftkit run`, on N processes
per node (and M nodes) through `accelerate launch` or `torchrun`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from sftkit.cli.app import AppContext, pass_app
from sftkit.cli.core import recipe_arguments


@click.command(name="launch")
@recipe_arguments
@click.option(
    "--nproc",
    type=int,
    default=None,
    help="Processes on this node, one per GPU (default: every visible GPU).",
)
@click.option("--nnodes", type=int, default=1, show_default=True, help="Number of nodes.")
@click.option(
    "--node-rank", type=int, default=0, show_default=True, help="This node's rank (0..nnodes-1)."
)
@click.option(
    "--master-addr",
    default="127.0.0.1",
    show_default=True,
    help="Address of node 0, reachable from every node.",
)
@click.option(
    "--master-port",
    type=int,
    default=None,
    help="Rendezvous port on node 0 (default: a free port on one node, 29500 on several).",
)
@click.option(
    "--launcher",
    type=click.Choice(["accelerate", "torchrun"]),
    default="accelerate",
    show_default=True,
    help="What starts the processes; both run the same generated configuration.",
)
@click.option(
    "--deepspeed-config",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Your DeepSpeed JSON instead of the generated one (implies distributed.engine="
    "deepspeed; its ZeRO stage and offloading go into the recipe and the memory check).",
)
@click.option(
    "--accelerate-config",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Your accelerate config file: its settings are kept, the topology and engine come "
    "from the launch and the recipe (a contradicting engine key is refused).",
)
@click.option(
    "--output-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Run directory (default: the recipe's output_dir). Must be on a filesystem every node shares.",
)
@click.option("--resume", is_flag=True, help="Continue the run from its last checkpoint.")
@click.option(
    "--force", is_flag=True, help="Train even when the memory estimate says it does not fit."
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the generated configuration and the launch command; start nothing, write nothing.",
)
@pass_app
def launch_command(
    app: AppContext,
    dry_run: bool,
    **request: Any,  # the other options, by name: the fields of `LaunchRequest`
) -> None:
    """Train RECIPE on several processes (GPUs, or CPU processes with gloo).

    \b
    The recipe's `distributed` section picks the engine (ddp, fsdp, deepspeed); the
    accelerate config and the DeepSpeed JSON are generated from it into RUN/distributed/.
    micro_batch_size is per process: the global batch is micro_batch_size x
    gradient_accumulation_steps x processes. Only rank 0 writes logs, metrics, reports and
    run metadata. Examples:
      sftkit launch recipes/quickstart.yaml --nproc 2
      sftkit launch recipes/r1_gsm8k_full.yaml distributed.engine=fsdp --nproc 8
      sftkit launch RECIPE --nproc 8 --nnodes 2 --node-rank 0 --master-addr node0   # on node 0
      sftkit launch RECIPE --nproc 8 --nnodes 2 --node-rank 1 --master-addr node0   # on node 1
      sftkit launch RECIPE --nproc 8 --dry-run
    Exit codes: 0 trained, 2 bad input, 3 does not fit, 1 a worker failed.
    """
    from sftkit.launch.session import LaunchRequest, plan_launch, run_launch

    started = time.perf_counter()
    plan = plan_launch(LaunchRequest(**request), registry=app.registry)
    for note in plan.notes:
        click.echo(f"note: {note}", err=True)
    if dry_run:
        click.echo(plan.render())
        return
    outcome = run_launch(plan, echo=lambda line: click.echo(line, err=True))
    elapsed = time.perf_counter() - started
    loss = outcome.get("train_loss")
    world = plan.topology.world_size
    click.echo(
        f"{outcome.get('status', 'completed')}: {plan.run_dir} in {elapsed:.1f}s on "
        f"{world} process{'es' if world != 1 else ''}"
        + (f" (train loss {loss:.4f})" if isinstance(loss, float) else "")
    )
