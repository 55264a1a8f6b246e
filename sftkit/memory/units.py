"""Byte units. sftkit prints binary gibibytes (GiB = 2**30 bytes) everywhere, and says so."""

from __future__ import annotations

import re

from sftkit.errors import SftkitError

KiB, MiB, GiB, TiB = 2**10, 2**20, 2**30, 2**40
UNIT_NOTE = "GiB = 2**30 bytes"

_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": KiB,
    "mib": MiB,
    "gib": GiB,
    "tib": TiB,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*$")


def gib(n: int | float) -> str:
    """``12.34 GiB`` (two decimals; the unit every report uses)."""
    return f"{n / GiB:.2f} GiB"


def gib_number(n: int | float) -> str:
    """The bare number in GiB, for tables whose header names the unit."""
    return f"{n / GiB:.2f}"


def is_size(text: str) -> bool:
    match = _SIZE.match(text)
    return bool(match and match.group(2).lower() in _UNITS)


def parse_size(text: str) -> int:
    """``40GB`` -> 40*10**9, ``40GiB`` -> 40*2**30 (decimal and binary units both accepted)."""
    match = _SIZE.match(text)
    if not match or match.group(2).lower() not in _UNITS:
        raise SftkitError(
            f"{text!r} is not a memory size; write a number and a unit such as 40GB, 40GiB or 24576MiB."
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
