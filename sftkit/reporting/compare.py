"""Two runs side by side: what differs in their recipes, and how they did."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sftkit.evaluation.display import delta, headline, interval
from sftkit.reporting.document import Document, Heading, Image, Paragraph, Table
from sftkit.reporting.plots import plot_key, plot_learning_rate, plot_loss
from sftkit.reporting.record import RunRecord
from sftkit.reporting.summary import HEADLINES, duration, gib, last_logged, number

# Recipe keys that never matter for a comparison.
IGNORED_KEYS = ("output_dir", "description")


@dataclass(frozen=True)
class Comparison:
    a: RunRecord
    b: RunRecord
    recipe_diff: list[tuple[str, str, str]]  # key, a, b
    results: list[tuple[str, str, str, str]]  # what, a, b, change


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"training.micro_batch_size": 4, ...}``; lists of mappings are indexed."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(data, list) and any(isinstance(v, dict) for v in data):
        for i, value in enumerate(data):
            out.update(flatten(value, f"{prefix}{i}."))
    else:
        out[prefix.rstrip(".")] = data
    return out


def compare(a: RunRecord, b: RunRecord) -> Comparison:
    fa, fb = flatten(a.recipe), flatten(b.recipe)
    diff = [
        (key, str(fa.get(key, "(unset)")), str(fb.get(key, "(unset)")))
        for key in sorted(set(fa) | set(fb))
        if fa.get(key, "(unset)") != fb.get(key, "(unset)") and not key.startswith(IGNORED_KEYS)
    ]
    results: list[tuple[str, str, str, str]] = []

    def row(what: str, va: Any, vb: Any, fmt: Any = number, lower_is_better: bool = False) -> None:
        change = ""
        if isinstance(va, int | float) and isinstance(vb, int | float) and va:
            change = f"{100 * (vb - va) / abs(va):+.1f}%"
            if lower_is_better:
                change += " (lower is better)"
        results.append((what, fmt(va), fmt(vb), change))

    ra, rb = a.run, b.run
    results.append(("status", str(ra.get("status", "-")), str(rb.get("status", "-")), ""))
    row("steps", ra.get("steps"), rb.get("steps"))
    row("runtime", ra.get("train_runtime_s"), rb.get("train_runtime_s"), duration, True)
    row("tokens/s", ra.get("tokens_per_second"), rb.get("tokens_per_second"))
    row("final loss", ra.get("final_loss"), rb.get("final_loss"), number, True)
    for series, label in HEADLINES:  # an objective's own headline (grpo's reward), if logged
        la, lb = last_logged(a.train_events, series), last_logged(b.train_events, series)
        if la is not None or lb is not None:
            row(label, la and la[series], lb and lb[series])
    ma, mb = a.memory or {}, b.memory or {}
    row("estimated peak", ma.get("peak_bytes"), mb.get("peak_bytes"), gib, True)
    row("measured peak", ra.get("peak_memory_bytes"), rb.get("peak_memory_bytes"), gib, True)
    evals_a = {e.key: e for e in a.evals}
    evals_b = {e.key: e for e in b.evals}
    for key in sorted(set(evals_a) | set(evals_b), key=str):
        ea, eb = evals_a.get(key), evals_b.get(key)
        shown = ea or eb
        primary = shown.primary  # type: ignore[union-attr]
        change = delta(primary, ea.value, eb.value) if ea and eb else ""
        results.append(
            (
                f"{key[1]} {primary} ({key[0]}, {shown.scope})",  # type: ignore[union-attr]
                _eval_cell(ea),
                _eval_cell(eb),
                change,
            )
        )
    return Comparison(a, b, diff, results)


def _eval_cell(stored: Any) -> str:
    if stored is None:
        return "-"
    ci = interval(stored.metrics)
    return f"{headline(stored.primary, stored.metrics)} n={stored.n}" + (
        f" {ci}" if ci != "-" else ""
    )


def comparison_document(comparison: Comparison, plots: list[Path]) -> Document:
    a, b = comparison.a, comparison.b
    doc = Document(f"Comparison: {a.name} vs {b.name}")
    doc.add(Paragraph(f"A = `{a.path}`, B = `{b.path}`."))
    doc.add(Heading("Results"), Table(("", "A", "B", "B vs A"), tuple(comparison.results)))
    doc.add(Heading("Recipe differences"))
    if comparison.recipe_diff:
        doc.add(Table(("key", "A", "B"), tuple(comparison.recipe_diff)))
    else:
        doc.add(Paragraph("The recipes are identical (output_dir aside)."))
    doc.add(*(Image(p, p.stem) for p in plots))
    return doc


def write_comparison(comparison: Comparison, out_dir: Path) -> Path:
    """compare.md, compare.html and overlaid loss / learning-rate plots in `out_dir`, and
    the objective's headline series (grpo's reward) where either run logged it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    series = [(comparison.a.name, comparison.a.events), (comparison.b.name, comparison.b.events)]
    if series[0][0] == series[1][0]:
        series = [("A", comparison.a.events), ("B", comparison.b.events)]
    plots = [
        p
        for p in (
            plot_loss(series, out_dir / "compare_loss.png", title="training loss"),
            plot_learning_rate(series, out_dir / "compare_lr.png", title="learning rate"),
            # an objective's headline series (grpo's reward, dpo's reward accuracy), if logged
            *(
                plot_key(
                    series,
                    key,
                    out_dir / f"compare_{key.replace('/', '_')}.png",
                    title=what.removeprefix("final "),
                    ylabel=what.removeprefix("final "),
                )
                for key, what in HEADLINES
            ),
        )
        if p is not None
    ]
    doc = comparison_document(comparison, plots)
    (out_dir / "compare.md").write_text(doc.to_markdown(), encoding="utf-8")
    (out_dir / "compare.html").write_text(doc.to_html(), encoding="utf-8")
    return out_dir / "compare.md"
