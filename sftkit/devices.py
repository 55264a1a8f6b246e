"""What a device string names (``hardware.gpu``, ``estimate-memory --gpu``, a process's torch
device type): the one answer to "is this a CPU run", and the thread policy of a process that
runs a model there. Imports only the standard library, so any layer may ask."""

from __future__ import annotations

import os
import sys

CPU = "cpu"


def is_cpu(device: str) -> bool:
    """True when `device` means the host CPU: ``cpu`` in any case, spaces around it ignored
    (the estimator, the launcher and the trainer must agree on this)."""
    return device.strip().lower() == CPU


def use_cpu_thread_policy(device: str) -> None:
    """The thread policy of every command that runs a model on `device` (`sftkit run` and
    `sftkit eval` alike): on a CPU, OpenMP threads sleep instead of spinning while they wait.

    Spinning threads make a CPU process several times slower as soon as anything else uses
    the cores: quickstart training on 2 cores, light load, 1.8 s/step spinning against 0.32
    s/step passive; its 200-problem evaluation 39 s in `sftkit eval` against 1.4 s inside
    `sftkit run`, which alone set this. libgomp reads the variable once, when torch loads it,
    so this must run before torch is imported (it does nothing after); an explicit
    ``OMP_WAIT_POLICY`` in the environment wins."""
    if is_cpu(device) and "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def data_workers(device: str, processes: int) -> dict[str, int | None]:
    """The trainer's data loading for this machine (``training.trainer_args`` overrides it):
    on a GPU, loader workers and dataset-map processes from this process's share of the
    cores, one kept for the training loop itself; on a CPU run the cores train the model,
    so both stay in the main process."""
    if is_cpu(device):
        return {"dataloader_num_workers": 0, "dataset_num_proc": None}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    share = max(1, (cores or 1) // max(1, processes))
    return {
        "dataloader_num_workers": min(4, share - 1),
        "dataset_num_proc": min(8, share) if share > 1 else None,
    }
