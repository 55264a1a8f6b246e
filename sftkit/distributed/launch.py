"""The command that starts one worker per rank: `accelerate launch` or `torchrun`.

Both run with the interpreter that runs sftkit (``python -m accelerate.commands.launch`` /
``python -m torch.distributed.run``), so a virtual environment never picks up another
installation's launcher. Every worker runs ``python -m sftkit.launch.worker RUN_DIR``.
"""

from __future__ import annotations

import shlex
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sftkit.distributed.topology import Topology

Launcher = Literal["accelerate", "torchrun"]
LAUNCHERS: tuple[Launcher, ...] = ("accelerate", "torchrun")
WORKER_MODULE = "sftkit.launch.worker"
ENV_BACKEND = "SFTKIT_DIST_BACKEND"  # the worker's torch.distributed backend


@dataclass(frozen=True)
class LaunchCommand:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # added to the caller's environment

    def shell(self) -> str:
        """The command as one shell line (what `--dry-run` prints and launch.sh holds)."""
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return (prefix + " " if prefix else "") + shlex.join(self.argv)


def free_port() -> int:
    """An unused TCP port on this host, for a single-node rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_arguments(run_dir: Path, *, resume: bool) -> list[str]:
    return [str(run_dir), *(["--resume"] if resume else [])]


def launch_command(
    launcher: Launcher,
    topology: Topology,
    worker_args: list[str],
    *,
    accelerate_config: Path | None = None,
    use_cpu: bool = False,
    backend: str | None = None,
    python: str = sys.executable,
) -> LaunchCommand:
    env: dict[str, str] = {"SFTKIT_LAUNCHER": launcher}
    if backend:
        env[ENV_BACKEND] = backend
    if use_cpu:
        # Read by TrainingArguments and accelerate: CPU devices, gloo, MULTI_CPU state.
        env["ACCELERATE_USE_CPU"] = "true"
    if launcher == "accelerate":
        if accelerate_config is None:
            raise ValueError("accelerate launch needs the generated accelerate config file")
        argv = [
            python,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(accelerate_config),
            "--num_processes",
            str(topology.world_size),
            "--num_machines",
            str(topology.nnodes),
            "--machine_rank",
            str(topology.node_rank),
            "--main_process_ip",
            topology.master_addr,
            "--main_process_port",
            str(topology.master_port),
            "-m",
            WORKER_MODULE,
            *worker_args,
        ]
    else:
        argv = [
            python,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            str(topology.nnodes),
            "--nproc-per-node",
            str(topology.nproc_per_node),
            "--node-rank",
            str(topology.node_rank),
            "--master-addr",
            topology.master_addr,
            "--master-port",
            str(topology.master_port),
            "-m",
            WORKER_MODULE,
            *worker_args,
        ]
    return LaunchCommand(argv, env)
