"""Built-in memory budgets: GPU catalog, raw sizes, ``auto`` and ``cpu``. `trylast`."""

from __future__ import annotations

from sftkit.hookspecs import hookimpl
from sftkit.memory.budget import MemoryBudget, builtin_budget


@hookimpl(trylast=True)
def device_memory_budget(device: str) -> MemoryBudget:
    return builtin_budget(device)
