"""How evaluation numbers are shown (terminal tables, reports, model cards)."""

from __future__ import annotations

from collections.abc import Mapping

# Metrics that are fractions of problems, shown in percent: sftkit's accuracy and the
# harness's scores (``strict_match``, ``exact_match``, ``acc``, ..., or ``task/strict_match``).
PERCENT_METRICS = frozenset(
    {"accuracy", "strict_match", "flexible_extract", "exact_match", "acc", "acc_norm"}
)


def is_fraction(metric: str) -> bool:
    return metric.rpartition("/")[2] in PERCENT_METRICS


def headline(primary: str, metrics: Mapping[str, float]) -> str:
    """The headline metric as text: ``41.0%`` for an accuracy, ``1.234`` for a loss."""
    value = metrics.get(primary)
    if value is None:
        return "-"
    if is_fraction(primary):
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
    for name, value in metrics.items():  # the harness's other scores and their errors
        if name.endswith("_stderr") and name.removesuffix("_stderr") == primary:
            parts.append(
                f"stderr {100 * value:.1f} pts" if is_fraction(primary) else f"stderr {value:.3g}"
            )
    if metrics.get("unclosed_think"):
        parts.append(f"{int(metrics['unclosed_think'])} still thinking (no </think>)")
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
    if is_fraction(primary):
        return f"{100 * (after - before):+.1f} pts"
    return f"{after - before:+.4g}"
