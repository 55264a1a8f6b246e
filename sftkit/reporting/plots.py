"""Training curves as PNG files, drawn with matplotlib's Agg backend.

A `Figure` with an Agg canvas is used directly instead of `pyplot`, so plotting never picks
an interactive backend, never touches global state, and works on a headless machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sftkit.reporting.curves import CurveSet


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
    return plot_key(series, "learning_rate", path, title=title, ylabel="learning rate", sci=True)


def plot_key(
    series: Sequence[tuple[str, Sequence[dict[str, Any]]]],
    key: str,
    path: Path,
    *,
    title: str,
    ylabel: str,
    sci: bool = False,
) -> Path | None:
    """One logged series per step for one or more runs (label, events); None if no run
    logged it."""
    figure, axes = _figure()
    drawn = False
    for label, events in series:
        xs, ys = _series(events, key)
        if xs:
            axes.plot(xs, ys, linewidth=1.4, label=label or None)
            drawn = True
    if not drawn:
        return None
    _whole_steps(axes)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    if sci:
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


def plot_curves(curves: CurveSet, events: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """The lines `curves` selects from the events, with its band and ratio where logged;
    None when the run logged none of its lines."""
    lines = curves.select(events)
    if not lines:  # not logged (an sft run's rewards): no figure
        return None
    figure, axes = _figure()
    drawn = False
    for label, key in lines.items():
        xs, ys = _series(events, key)
        if xs:
            axes.plot(xs, ys, linewidth=1.4, label=label)
            drawn = True
    if not drawn:
        return None
    if curves.band is not None:
        steps, lows, highs = _band(events, curves.band.low, curves.band.high)
        if steps:
            color = axes.get_lines()[0].get_color()  # the band of the (first) line it spans
            axes.fill_between(steps, lows, highs, alpha=0.2, color=color, label=curves.band.label)
    handles, labels = axes.get_legend_handles_labels()
    if curves.ratio is not None:
        xs, ys = _series(events, curves.ratio.key)
        if xs:
            right = axes.twinx()
            right.plot(xs, ys, "--", linewidth=1.2, color="tab:red", label=curves.ratio.label)
            right.set_ylim(-0.02, 1.02)
            right.set_ylabel(curves.ratio.label)
            more, more_labels = right.get_legend_handles_labels()
            handles, labels = handles + more, labels + more_labels
    _whole_steps(axes)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel(curves.ylabel)
    axes.set_title(curves.title)
    axes.grid(alpha=0.3)
    if len(figure.axes) > 1:  # two y axes: a legend inside would hide one's lines
        figure.legend(handles, labels, loc="outside lower center", ncols=len(labels))
    else:
        axes.legend(handles, labels)
    figure.savefig(path)
    return path


def _band(
    events: Sequence[dict[str, Any]], low: str, high: str
) -> tuple[list[float], list[float], list[float]]:
    """Steps, lows and highs of the events that logged both ends of a band."""
    steps, lows, highs = [], [], []
    for event in events:
        a, b, step = event.get(low), event.get(high), event.get("step")
        if (
            isinstance(a, int | float)
            and isinstance(b, int | float)
            and isinstance(step, int | float)
        ):
            steps.append(float(step))
            lows.append(float(a))
            highs.append(float(b))
    return steps, lows, highs
