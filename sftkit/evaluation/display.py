"""How evaluation numbers are shown (terminal tables, reports, model cards)."""

from __future__ import annotations

from collections.abc import Mapping


def headline(primary: str, metrics: Mapping[str, float]) -> str:
    """The headline metric as text: ``41.0%`` for an accuracy, ``1.234`` for a loss."""
    value = metrics.get(primary)
    if value is None:
        return "-"
    if primary == "accuracy":
        return f"{100 * value:.1f}%"
    return f"{value:.4g}"


def interval(metrics: Mapping[str, float]) -> str:
    """The confidence interval as ``[32.1, 51.0]`` (percent) if the metrics carry one."""
    low, high = metrics.get("ci_low"), metrics.get("ci_high")
    if low is None or high is None:
        return "-"
    return f"[{100 * low:.1f}, {100 * high:.1f}]"


def details(primary: str, metrics: Mapping[str, float]) -> str:
    """Secondary numbers worth a glance (correct/n, perplexity, answers not found)."""
    parts = []
    if "correct" in metrics and "n" in metrics:
        parts.append(f"{int(metrics['correct'])}/{int(metrics['n'])} correct")
    if "strict_match" in metrics and "flexible_extract" in metrics:
        parts.append(
            f"lm-eval strict-match {100 * metrics['strict_match']:.1f}%, "
            f"flexible-extract {100 * metrics['flexible_extract']:.1f}%"
        )
    if metrics.get("no_answer"):
        parts.append(f"{int(metrics['no_answer'])} without an answer")
    if metrics.get("hit_token_limit"):
        parts.append(f"{int(metrics['hit_token_limit'])} hit max_new_tokens")
    if "perplexity" in metrics and primary != "perplexity":
        parts.append(f"perplexity {metrics['perplexity']:.4g}")
    if "tokens" in metrics:
        parts.append(f"{int(metrics['tokens'])} tokens")
    return ", ".join(parts)


def delta(primary: str, before: float, after: float) -> str:
    """``+12.0 pts`` for accuracies, ``-0.31`` for other metrics."""
    if primary == "accuracy":
        return f"{100 * (after - before):+.1f} pts"
    return f"{after - before:+.4g}"
