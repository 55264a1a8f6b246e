"""full-sft: every weight of a dense base trains."""

from __future__ import annotations

from typing import Any

from sftkit.strategies.base import Strategy


class FullSft(Strategy):
    pass


def build(options: Any) -> FullSft:
    return FullSft(options)
