"""``<run>/report.md`` and ``report.html``: what a person wants to see about a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sftkit.extras import missing
from sftkit.reporting.curves import CURVE_SETS
from sftkit.reporting.document import Code, Document, Heading, Image, Paragraph, Table
from sftkit.reporting.plots import plot_curves, plot_eval_metrics, plot_learning_rate, plot_loss
from sftkit.reporting.record import RunRecord, load_run
from sftkit.reporting.summary import (
    EVAL_HEADERS,
    before_after,
    eval_rows,
    memory_rows,
    recipe_rows,
    training_rows,
)
from sftkit.runpaths import RECIPE_FILE, RunPaths

ENVIRONMENT_KEYS = (
    "python",
    "torch",
    "transformers",
    "peft",
    "trl",
    "bitsandbytes",
    "accelerate",
    "datasets",
    "tokenizers",
    "safetensors",
    "sftkit",
    "platform",
    "device",
)


@dataclass
class ReportFiles:
    markdown: Path
    html: Path
    plots: list[Path] = field(default_factory=list)
    # Without matplotlib (the light core) the plots are not redrawn: these, drawn before,
    # are linked as they are.
    kept_plots: list[Path] = field(default_factory=list)


def write_report(run_dir: Path) -> ReportFiles:
    """(Re)build the run's report and plots from what is in the run directory."""
    record = load_run(run_dir)
    paths = RunPaths(run_dir)
    if missing(["matplotlib"]):
        drawn_before = (paths.loss_plot, paths.lr_plot, paths.eval_plot)
        curves = tuple(paths.curve_plot(c.name) for c in CURVE_SETS)
        kept = [p for p in (*drawn_before, *curves) if p.is_file()]
        return _write(record, ReportFiles(paths.report_markdown, paths.report_html, [], kept))
    evaluated = any("eval/loss" in e for e in record.events)
    primaries = record.run.get("eval_primaries")
    scores = (
        {f"{name} {metric}": f"eval/{name}/{metric}" for name, metric in primaries.items()}
        if isinstance(primaries, dict)
        else {}
    )
    drawn = (
        plot_loss(
            [("", record.events)],
            paths.loss_plot,
            title="training and eval loss" if evaluated else "training loss",
        ),
        plot_learning_rate([("", record.events)], paths.lr_plot, title="learning rate"),
        plot_eval_metrics(
            record.events, scores, paths.eval_plot, title="evaluators during training"
        ),
        # the objective's own series (rewards, KL, ...), each where the run logged it
        *(plot_curves(c, record.train_events, paths.curve_plot(c.name)) for c in CURVE_SETS),
    )
    plots = [p for p in drawn if p is not None]
    return _write(record, ReportFiles(paths.report_markdown, paths.report_html, plots))


def _write(record: RunRecord, files: ReportFiles) -> ReportFiles:
    document = build_document(record, files.plots or files.kept_plots)
    files.markdown.write_text(document.to_markdown(), encoding="utf-8")
    files.html.write_text(document.to_html(), encoding="utf-8")
    return files


def build_document(record: RunRecord, plots: list[Path]) -> Document:
    doc = Document(f"Run report: {record.name}")
    description = record.section("description")
    if description:
        doc.add(Paragraph(str(description)))
    doc.add(
        Heading("Recipe"),
        _table(recipe_rows(record)),
        Paragraph(f"The resolved recipe, every default filled in, is `{RECIPE_FILE}`."),
    )
    memory = memory_rows(record)
    if memory:
        doc.add(Heading("Memory"), _table(memory))
    doc.add(Heading("Training"), _table(training_rows(record)))
    if plots:
        doc.add(*(Image(p, p.stem) for p in plots))
    elif not record.train_events:
        doc.add(Paragraph("No training steps were logged (metrics.jsonl is missing or empty)."))
    doc.add(Heading("Evaluation"))
    if record.evals:
        for line in before_after(record.evals):
            doc.add(Paragraph(line))
        doc.add(Table(EVAL_HEADERS, tuple(eval_rows(record.evals))))
        doc.add(
            Paragraph(
                "Predictions (question, gold, extracted answer, raw output, correct) are in "
                "`eval/<stage>-<evaluator>[-<split>][-first<N>]/predictions.jsonl`, one folder per "
                "stage, split and limit. Stages: before/after = the base and fine-tuned model "
                "scored by `sftkit run`; base/manual = by `sftkit eval`."
            )
        )
    else:
        doc.add(
            Paragraph(
                "No evaluation yet. Run `sftkit eval RUN_DIR` (and `--base` for the base model)."
            )
        )
    env = record.environment or {}
    shown = [(k, str(env[k])) for k in ENVIRONMENT_KEYS if env.get(k) is not None]
    cuda = env.get("cuda")
    if isinstance(cuda, dict) and cuda.get("device_name"):
        shown.append(("GPU", f"{cuda.get('device_count', 1)} x {cuda['device_name']}"))
    if shown:
        doc.add(Heading("Environment"), _table(shown))
    if record.warnings:
        doc.add(Heading("Warnings"), Code("\n".join(record.warnings)))
    doc.add(Paragraph(f"Rebuild this report with `sftkit report {record.path}`."))
    return doc


def _table(rows: list[tuple[str, str]]) -> Table:
    return Table(("", ""), tuple(rows))
