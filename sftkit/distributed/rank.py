"""Which process am I? Read from the environment every launcher sets (torchrun, accelerate,
deepspeed: RANK, LOCAL_RANK, WORLD_SIZE), so the answer is known before torch.distributed is
initialised and without importing torch. A plain `python`/`sftkit run` is rank 0 of 1."""

from __future__ import annotations

import os


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip().lstrip("-").isdigit() else default


def rank() -> int:
    """Global rank of this process (0 when not launched by a distributed launcher)."""
    return _env_int("RANK", 0)


def local_rank() -> int:
    """Rank of this process on its node."""
    return _env_int("LOCAL_RANK", 0)


def world_size() -> int:
    """Number of processes in the run."""
    return _env_int("WORLD_SIZE", 1)


def local_world_size() -> int:
    """Processes of the run on this node (they share its cores)."""
    return _env_int("LOCAL_WORLD_SIZE", world_size())


def is_main_process() -> bool:
    """True for the one process that writes logs, reports, metrics and run metadata."""
    return rank() == 0
