"""Short human summaries of a run's recipe, memory and training (shared by the report, the
comparison and the model card)."""

from __future__ import annotations

from typing import Any

from sftkit.devices import is_cpu
from sftkit.evaluation.base import StoredEval
from sftkit.evaluation.display import delta, details, headline, interval
from sftkit.reporting.curves import REWARD_ACCURACY, reward_keys
from sftkit.reporting.record import RunRecord

GiB = 1024**3


def gib(value: Any) -> str:
    """Bytes as GiB, or MiB below one GiB (a tiny model's 0.03 GiB says little)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    if abs(value) < GiB:
        return f"{float(value) / 1024**2:.1f} MiB"
    return f"{float(value) / GiB:.2f} GiB"


def duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    seconds = float(seconds)
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def number(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-" if value is None else str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}g}"


def component(ref: Any) -> str:
    """``qlora-nf4 (rank=16, alpha=32)`` from a recipe's {name, options}."""
    if not isinstance(ref, dict):
        return "-"
    options = ref.get("options") or {}
    shown = ", ".join(f"{k}={_short(v)}" for k, v in options.items())
    return f"{ref.get('name', '?')}" + (f" ({shown})" if shown else "")


def _short(value: Any) -> str:
    if value == "":
        return '""'  # `instruction=""`, not `instruction=`
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def recipe_rows(record: RunRecord) -> list[tuple[str, str]]:
    r = record.section
    model = r("model") or {}
    training = r("training") or {}
    hardware = r("hardware") or {}
    data = r("data") or {}
    micro = training.get("micro_batch_size", 1)
    accum = training.get("gradient_accumulation_steps", 1)
    gpus = hardware.get("num_gpus", 1)
    on_cpu = is_cpu(str(hardware.get("gpu", "")))
    if on_cpu:
        devices = f" x {gpus} processes" if gpus > 1 else ""
        where = f"{gpus} CPU processes" if gpus > 1 else "CPU"
    else:
        devices = f" x {gpus} GPU{'s' if gpus != 1 else ''}"
        where = f"{gpus} x {hardware.get('gpu', '?')}"
    length = f"{training.get('max_steps')} steps" if training.get("max_steps") else None
    rows = [
        (
            "model",
            f"{model.get('name_or_path', '?')} ({model.get('dtype', '?')}, "
            f"{model.get('attn_implementation', '?')})",
        ),
        ("strategy", component(r("strategy"))),
        ("optimizer", component(r("optimizer"))),
        (
            "data",
            f"{component(data.get('format'))}, template {component(data.get('template'))}, "
            f"{'completion-only' if data.get('completion_only_loss', True) else 'full-sequence'} loss",
        ),
        (
            "batch",
            f"{micro} x {accum} accumulation{devices} = {micro * accum * gpus} sequences per "
            f"step, max length {training.get('max_seq_length', '?')}",
        ),
        (
            "schedule",
            f"{length or str(training.get('epochs', '?')) + ' epoch(s)'}, "
            f"{training.get('lr_scheduler', '?')}, warmup {training.get('warmup_ratio', '?')}, "
            f"seed {training.get('seed', '?')}",
        ),
        (
            "precision",
            f"{training.get('precision', '?')}, gradient checkpointing "
            f"{'on' if training.get('gradient_checkpointing') else 'off'}",
        ),
        ("hardware", where),
    ]
    return rows


def memory_rows(record: RunRecord) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    memory = record.memory or {}
    estimated = memory.get("peak_bytes")
    if memory.get("unavailable"):
        rows.append(("estimate", f"none: {memory['unavailable']}"))
    elif memory:
        phase = memory.get("peak_phase")
        rows.append(("estimated peak", gib(estimated) + (f" ({phase})" if phase else "")))
        phases = memory.get("phases")
        if isinstance(phases, dict) and phases:
            rows.append(("by phase", ", ".join(f"{k} {gib(v)}" for k, v in phases.items())))
        if memory.get("budget_bytes") is not None:
            fits = memory.get("fits")
            verdict = "" if fits is None else (" (fits)" if fits else " (does not fit)")
            rows.append(("budget", f"{gib(memory.get('budget_bytes'))}{verdict}"))
        if memory.get("setting"):
            rows.append(("estimated for", str(memory["setting"])))
    measured = record.run.get("peak_memory_bytes")
    if isinstance(measured, int | float) and measured > 0:
        text = gib(measured)
        if isinstance(estimated, int | float) and estimated > 0:
            text += f" (estimate {100 * (estimated - measured) / measured:+.1f}% off)"
        rows.append(("measured peak (CUDA)", text))
    elif record.run:
        rows.append(("measured peak", "not measured (no CUDA device)"))
    return rows


def training_rows(record: RunRecord) -> list[tuple[str, str]]:
    run = record.run
    events = record.train_events
    rows = [
        ("status", str(run.get("status", "unknown"))),
        ("steps", number(run.get("steps", events[-1]["step"] if events else None))),
        ("runtime", duration(run.get("train_runtime_s"))),
        ("throughput", f"{number(run.get('tokens_per_second'), 5)} tokens/s"),
        ("final loss", number(run.get("final_loss", events[-1]["loss"] if events else None))),
    ]
    if events:
        best = min(events, key=lambda e: float(e["loss"]))
        rows.append(("lowest logged loss", f"{number(best['loss'])} at step {best['step']}"))
    rows.extend(objective_rows(events))
    rows.extend(evaluation_rows(record))
    for key in ("started", "finished"):
        if run.get(key):
            rows.append((key, str(run[key])))
    if run.get("error"):
        rows.append(("error", str(run["error"])))
    return rows


# An objective's headline series, by TRL's key: the mean reward (grpo) and the fraction of
# pairs whose chosen answer out-rewards the rejected one (dpo). The report's training table,
# `sftkit compare` and `sftkit run`'s last line show the final value of those a run logged.
HEADLINES = (("reward", "final reward"), (REWARD_ACCURACY, "final reward accuracy"))


def last_logged(events: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """The last event that logged a number under `key`."""
    for event in reversed(events):
        if isinstance(event.get(key), int | float):
            return event
    return None


def objective_rows(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Final values of the series an objective logs beyond the loss (grpo's reward, KL and
    completion lengths; dpo's reward accuracy and rewards), each where the run logged it."""
    rows = []
    for key, label in HEADLINES:
        last = last_logged(events, key)
        if last is None:
            continue
        parts = ", ".join(
            f"{name} {number(last[k])}" for name, k in reward_keys([last]).items() if k != key
        )
        first = next(e for e in events if isinstance(e.get(key), int | float))
        text = f"{number(last[key])} at step {last.get('step')}" + (f" ({parts})" if parts else "")
        rows.append((label, f"{text}; {number(first[key])} at step {first.get('step')}"))
    kl = last_logged(events, "kl")
    if kl is not None:
        rows.append(("final KL", f"{number(kl['kl'])} at step {kl.get('step')}"))
    lengths = last_logged(events, "completions/mean_length")
    if lengths is not None:
        text = f"{number(lengths['completions/mean_length'])} tokens mean"
        low, high = lengths.get("completions/min_length"), lengths.get("completions/max_length")
        if low is not None and high is not None:
            text += f" (min {number(low)}, max {number(high)})"
        clipped = lengths.get("completions/clipped_ratio")
        if isinstance(clipped, int | float):
            text += f", {100 * clipped:.0f}% clipped at the maximum length"
        rows.append(("final completion length", f"{text}, at step {lengths.get('step')}"))
    return rows


def evaluation_rows(record: RunRecord) -> list[tuple[str, str]]:
    """Evaluation while training: how often, the best evaluation and its checkpoint, early
    stopping (from run.json and the eval/ events of metrics.jsonl)."""
    run = record.run
    evals = [e for e in record.events if isinstance(e.get("eval/loss"), int | float)]
    if not run.get("eval_steps") and not evals:
        return []
    rows = [("evaluated", f"every {run.get('eval_steps', '?')} steps on dev, {len(evals)} times")]
    if evals:
        last = evals[-1]
        rows.append(("last eval loss", f"{number(last['eval/loss'])} at step {last.get('step')}"))
    name = run.get("best_metric_name") or "loss"
    if run.get("best_metric") is not None:
        checkpoint = run.get("best_checkpoint")
        where = f" ({str(checkpoint).rstrip('/').rpartition('/')[2]})" if checkpoint else ""
        rows.append(
            (
                f"best eval {name}",
                f"{number(run['best_metric'])} at step {run.get('best_step')}{where}",
            )
        )
    stop = run.get("early_stopping")
    if isinstance(stop, dict):
        if stop.get("stopped_early"):
            text = f"stopped at step {run.get('steps')} of {run.get('max_steps')}"
        else:
            text = "did not stop early"
        final = "; final/ is the best checkpoint" if stop.get("final_is_best") else ""
        rows.append(("early stopping", f"{text} (patience {stop.get('patience')}){final}"))
    return rows


EVAL_HEADERS = ("stage", "model", "evaluator", "split", "n", "metric", "value", "95% CI", "details")


def eval_rows(evals: list[StoredEval]) -> list[tuple[str, ...]]:
    return [
        (
            e.stage,
            e.model,
            e.evaluator,
            e.scope,  # the split and any limit: which evaluation this is
            str(e.n),
            e.primary,
            headline(e.primary, e.metrics),
            interval(e.metrics),
            details(e.primary, e.metrics),
        )
        for e in evals
    ]


def before_after(evals: list[StoredEval]) -> list[str]:
    """One line per evaluator scored both before and after training on the same split."""
    lines = []
    by_key = {e.key: e for e in evals}
    for (stage, name, split, limit), after in by_key.items():
        if stage != "after":
            continue
        before = by_key.get(("before", name, split, limit))
        if before is None:
            continue
        lines.append(
            f"{name} on {after.scope}: {headline(before.primary, before.metrics)} before, "
            f"{headline(after.primary, after.metrics)} after "
            f"({delta(after.primary, before.value, after.value)})"
        )
    return lines
