"""Which curves a report draws besides loss and learning rate, chosen by the keys a run logged.

An objective's trainer logs its own series under TRL's names (grpo: ``reward``,
``rewards/NAME/mean``, ``kl``, ``completions/*``; dpo: ``rewards/chosen``, ``rewards/accuracies``,
...). Each `CurveSet` picks the keys it draws from the log events, so a plot appears exactly
when its series were logged (an SFT run logs none of them and gets none of these plots) and a
plugin objective that logs the same keys gets the same plots. Nothing here asks which
objective ran. Torch-free and matplotlib-free (drawing is `plots.plot_curves`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Events = Sequence[dict[str, Any]]

# dpo logs the fraction of pairs whose chosen answer out-rewards the rejected one under the
# rewards/ prefix: a fraction, not a reward, so it gets its own plot.
REWARD_ACCURACY = "rewards/accuracies"


def logged(events: Events) -> list[str]:
    """Every key the events carry, in the order first logged."""
    return list(dict.fromkeys(key for event in events for key in event))


def reward_keys(events: Events) -> dict[str, str]:
    """The reward series a trainer logged, legend label -> key: TRL's ``reward`` (grpo's
    weighted sum) first, then each ``rewards/NAME/mean`` (grpo) or ``rewards/NAME`` (dpo's
    chosen, rejected, margins); not their standard deviations, nor dpo's accuracies."""
    keys = logged(events)
    shown = {"reward (weighted sum)": "reward"} if "reward" in keys else {}
    for key in keys:
        if key.startswith("rewards/") and not key.endswith("/std") and key != REWARD_ACCURACY:
            shown.setdefault(key.removeprefix("rewards/").removesuffix("/mean"), key)
    return shown


def _present(**labels: str) -> Callable[[Events], dict[str, str]]:
    """A selector of fixed keys (legend label -> key), keeping those the events logged."""

    def select(events: Events) -> dict[str, str]:
        keys = set(logged(events))
        return {label.replace("_", " "): key for label, key in labels.items() if key in keys}

    return select


@dataclass(frozen=True)
class Band:
    """A shaded range between two logged series (a batch's shortest and longest, say)."""

    label: str
    low: str
    high: str


@dataclass(frozen=True)
class Ratio:
    """A logged fraction drawn on a second, right-hand axis from 0 to 1."""

    label: str
    key: str


@dataclass(frozen=True)
class CurveSet:
    """One plot: the lines `select` finds in the events (none: no plot), an optional band
    and an optional ratio on a right-hand axis."""

    name: str  # the PNG's stem in the run directory: rewards -> rewards.png
    title: str
    ylabel: str
    select: Callable[[Events], dict[str, str]]  # the events -> legend label -> key
    band: Band | None = None
    ratio: Ratio | None = None


CURVE_SETS = (
    CurveSet("rewards", "rewards", "reward", reward_keys),
    CurveSet(
        "reward_accuracy",
        "preference accuracy (chosen rewarded above rejected)",
        "fraction of pairs",
        _present(accuracy=REWARD_ACCURACY),
    ),
    CurveSet("kl", "KL divergence from the reference", "KL", _present(kl="kl")),
    CurveSet(
        "completion_lengths",
        "completion length",
        "tokens",
        _present(mean_length="completions/mean_length"),
        band=Band("min to max", "completions/min_length", "completions/max_length"),
        ratio=Ratio("clipped at max length", "completions/clipped_ratio"),
    ),
)
