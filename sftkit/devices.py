"""What a device string names (``hardware.gpu``, ``estimate-memory --gpu``, a process's torch
device type): the one answer to "is this a CPU run". Imports nothing, so any layer may ask."""

from __future__ import annotations

CPU = "cpu"


def is_cpu(device: str) -> bool:
    """True when `device` means the host CPU: ``cpu`` in any case, spaces around it ignored
    (the estimator, the launcher and the trainer must agree on this)."""
    return device.strip().lower() == CPU
