"""Training curves as PNG files, drawn with matplotlib's Agg backend.

A `Figure` with an Agg canvas is used directly instead of `pyplot`, so plotting never picks
an interactive backend, never touches global state, and works on a headless machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _figure() -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 3.6), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _whole_steps(axes: Any) -> None:
    """Ticks on whole steps only: a short run's axis would otherwise read 0.5, 1.5, ..."""
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def _series(events: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for event in events:
        value, step = event.get(key), event.get("step")
        if isinstance(value, int | float) and isinstance(step, int | float):
            xs.append(float(step))
            ys.append(float(value))
    return xs, ys


def plot_loss(
    series: Sequence[tuple[str, Sequence[dict[str, Any]]]], path: Path, *, title: str
) -> Path | None:
    """Training loss (and eval/loss points) per step for one or more runs; None if no data."""
    figure, axes = _figure()
    values: list[float] = []
    for label, events in series:
        xs, ys = _series([e for e in events if not any(k.startswith("eval/") for k in e)], "loss")
        if xs:
            axes.plot(xs, ys, linewidth=1.4, label=f"{label} train" if label else "train")
        exs, eys = _series(events, "eval/loss")
        if exs:
            axes.plot(exs, eys, "o--", markersize=4, label=f"{label} eval" if label else "eval")
        values += ys + eys
    if not values:
        return None
    if min(values) > 0 and max(values) / min(values) > 30:
        axes.set_yscale("log")  # a loss falling 100x is a flat line at the bottom otherwise
        axes.grid(alpha=0.15, which="minor")
    _whole_steps(axes)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss (log scale)" if axes.get_yscale() == "log" else "loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(path)
    return path


def plot_learning_rate(
    series: Sequence[tuple[str, Sequence[dict[str, Any]]]], path: Path, *, title: str
) -> Path | None:
    figure, axes = _figure()
    drawn = False
    for label, events in series:
        xs, ys = _series(events, "learning_rate")
        if xs:
            axes.plot(xs, ys, linewidth=1.4, label=label or None)
            drawn = True
    if not drawn:
        return None
    _whole_steps(axes)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("learning rate")
    axes.set_title(title)
    axes.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    axes.grid(alpha=0.3)
    if any(label for label, _ in series):
        axes.legend()
    figure.savefig(path)
    return path


def plot_eval_metrics(
    events: Sequence[dict[str, Any]], keys: dict[str, str], path: Path, *, title: str
) -> Path | None:
    """Each evaluator's headline score per step (`keys`: legend label -> metrics key, e.g.
    ``"gsm8k accuracy" -> "eval/gsm8k/accuracy"``); None if nothing was logged."""
    figure, axes = _figure()
    drawn = False
    for label, key in keys.items():
        xs, ys = _series(events, key)
        if xs:
            axes.plot(xs, ys, "o-", markersize=4, linewidth=1.4, label=label)
            drawn = True
    if not drawn:
        return None
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("score on dev")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(path)
    return path


def reward_keys(events: Sequence[dict[str, Any]]) -> dict[str, str]:
    """The reward series a trainer logged, legend label -> key: TRL's ``reward`` (grpo's
    weighted sum), each ``rewards/NAME/mean`` (grpo) or ``rewards/NAME`` (dpo's chosen,
    rejected, margins); not their standard deviations."""
    keys: dict[str, str] = {}
    for event in events:
        for key in event:
            if key == "reward" or (key.startswith("rewards/") and not key.endswith("/std")):
                label = key.removeprefix("rewards/").removesuffix("/mean")
                keys.setdefault(label if key != "reward" else "reward (weighted sum)", key)
    return keys


def plot_rewards(events: Sequence[dict[str, Any]], path: Path, *, title: str) -> Path | None:
    """Every reward series per step (`reward_keys`); None for a run that logs none (sft)."""
    keys = reward_keys(events)
    figure, axes = _figure()
    drawn = False
    for label, key in keys.items():
        xs, ys = _series(events, key)
        if xs:
            axes.plot(xs, ys, linewidth=1.4, label=label)
            drawn = True
    if not drawn:
        return None
    _whole_steps(axes)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("reward")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(path)
    return path
