"""Turn benchmark result JSONs into the Markdown tables of docs/benchmarks.md.

    python -m benchmarks.report RESULTS_DIR [RESULTS_DIR ...] [--out table.md]

Reads every ``*.json`` below the given directories: grid points (`benchmarks.grid`) and speed
comparisons (`benchmarks.compare_speed`). For each grid point that ran, the estimate error is
``(predicted - measured peak device-used) / measured``: the estimator predicts what the card
must hold (tensors, allocator margin, CUDA context, workspaces), which is what the driver
reports as used; paged optimizer state is added to the prediction as far as it stays resident
(it lives in unified memory, outside the torch counters, but the driver counts it). The verdict is right when the predicted fit equals what happened
(ran, or ran out of memory), and for an out-of-memory point also names the phase. CPU smoke
results have no CUDA counters: their rows say so instead of showing an error.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POINT_SCHEMA = "sftkit-benchmark-point/1"
SPEED_SCHEMA = "sftkit-benchmark-speed/1"
# The phases a grid point goes through; it does not evaluate, so the estimator's evaluation
# phase is left out of the comparison.
TRAINING_PHASES = ("load", "forward_backward", "optimizer_step", "later_steps")
ERROR_TARGET_PCT = 10.0
SPEED_TARGET = 1.5


def load_results(paths: Iterable[Path]) -> tuple[list[dict], list[dict]]:
    """(grid points, speed comparisons) found below `paths`, sorted by name."""
    points: list[dict] = []
    speeds: list[dict] = []
    for root in paths:
        files = [root] if root.is_file() else sorted(root.rglob("*.json"))
        for path in files:
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if not isinstance(data, dict):
                continue
            if data.get("schema") == POINT_SCHEMA:
                points.append(data)
            elif data.get("schema") == SPEED_SCHEMA:
                speeds.append(data)
    points.sort(key=lambda d: str(d.get("name")))
    return points, speeds


def _gib(value: int | float | None) -> str:
    return "–" if value is None else f"{value / 2**30:.2f}"


@dataclass(frozen=True)
class Prediction:
    """The estimate over the phases a grid point runs (it does not evaluate)."""

    used_bytes: int  # device bytes + resident paged state, at the peak phase
    phase: str
    fits: bool
    first_over: str | None  # first phase whose device bytes exceed the budget


def prediction(predicted: dict) -> Prediction | None:
    """Device bytes per phase plus the paged optimizer state as far as it stays resident on
    the card (unified memory spills only what does not fit), over the training phases."""
    phases = predicted.get("phases") or {}
    budget = predicted.get("budget_bytes")
    if not budget or not all(p in phases for p in TRAINING_PHASES):
        return None
    paged = predicted.get("paged_bytes") or {}
    used = {
        p: phases[p] + min(paged.get(p, 0), max(0, budget - phases[p])) for p in TRAINING_PHASES
    }
    phase = max(TRAINING_PHASES, key=lambda p: (used[p], -TRAINING_PHASES.index(p)))
    first_over = next((p for p in TRAINING_PHASES if phases[p] > budget), None)
    return Prediction(used[phase], phase, first_over is None, first_over)


def judge(point: dict) -> dict[str, Any]:
    """Estimate error and verdict of one grid point."""
    measured = point.get("measured") or {}
    cuda = (point.get("device") or {}).get("type") == "cuda"
    out: dict[str, Any] = {"cuda": cuda, "error_pct": None, "verdict": None, "phase_right": None}
    pred = prediction(point.get("predicted") or {})
    out["prediction"] = pred
    if pred is None:
        out["verdict"] = "no estimate"
        return out
    if not cuda:
        out["verdict"] = "n/a (CPU)"
        return out
    ran = bool(measured.get("completed")) and not measured.get("oom")
    if not ran and not measured.get("oom"):
        out["verdict"] = "failed"
        return out
    out["verdict"] = "right" if pred.fits == ran else "wrong"
    if measured.get("oom"):
        out["phase_right"] = pred.first_over == measured.get("oom_phase")
    used = measured.get("peak_device_used")
    if ran and used:
        out["error_pct"] = 100.0 * (pred.used_bytes - used) / used
    return out


def _measured_cell(measured: dict) -> str:
    if measured.get("oom"):
        return f"OOM in {measured.get('oom_phase')}"
    if not measured.get("completed"):
        return "failed"
    return f"{_gib(measured.get('peak_device_used'))} ({measured.get('peak_phase') or '–'})"


def render_points(points: list[dict]) -> str:
    if not points:
        return "_No grid results._\n"
    header = (
        "| point | cap | predicted GiB (phase) | fits? | measured used GiB (phase) | "
        "alloc GiB | reserved GiB | error % | verdict | tok/s | MFU |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for point in points:
        p = point.get("point") or {}
        measured = point.get("measured") or {}
        j = judge(point)
        cap = f"{p['cap_gib']:g} GiB" if p.get("cap_gib") else "–"
        pr = j["prediction"]
        pred = "–" if pr is None else f"{_gib(pr.used_bytes)} ({pr.phase})"
        fits = "–" if pr is None else "fits" if pr.fits else f"OOM in {pr.first_over}"
        if not j["cuda"]:
            meas = f"CPU smoke, {'ran' if measured.get('completed') else _measured_cell(measured)}"
        else:
            meas = _measured_cell(measured)
        error = "–" if j["error_pct"] is None else f"{j['error_pct']:+.1f}"
        verdict = j["verdict"]
        if j["phase_right"] is False:
            verdict += " (phase wrong)"
        tps = measured.get("tokens_per_second")
        mfu = measured.get("mfu")
        rows.append(
            f"| {point.get('name')} | {cap} | {pred} | {fits} | {meas} | "
            f"{_gib(measured.get('peak_allocated'))} | {_gib(measured.get('peak_reserved'))} | "
            f"{error} | {verdict} | {'–' if tps is None else f'{tps:,.0f}'} | "
            f"{'–' if mfu is None else f'{100 * mfu:.1f}%'} |"
        )
    note = ""
    if any((p.get("point") or {}).get("cap_gib") for p in points):
        note = (
            "\nCapped points: `torch.cuda.set_per_process_memory_fraction` caps the torch "
            "allocator only; the CUDA context and paged optimizer state are outside the cap "
            "(on a real card of that size they are not).\n"
        )
    return header + "\n".join(rows) + "\n" + note


def _predicted_bytes(predicted: dict, category: str, phase: str) -> int | None:
    terms = [t for t in predicted.get("terms") or [] if t.get("phase") == phase]
    if not terms:
        return None
    return sum(t["bytes"] for t in terms if t.get("category") == category)


def render_census(points: list[dict]) -> str:
    """Tensors that exist at the first optimizer step, counted byte for byte in the run,
    against the estimator's terms for them: the static part of the estimate, exact on any
    device (a CPU included)."""
    rows = []
    for point in points:
        census = (point.get("measured") or {}).get("census") or {}
        if "gradients" not in census or "optimizer_state" not in census:
            continue
        predicted = point.get("predicted") or {}
        grads = _predicted_bytes(predicted, "gradients", "optimizer_step")
        state = _predicted_bytes(predicted, "optimizer", "later_steps")
        measured_state = sum(census["optimizer_state"].values())

        def cell(measured: int, expected: int | None) -> str:
            if expected is None:
                return f"{measured:,} / –"
            mark = "=" if measured == expected else f"{measured - expected:+,}"
            return f"{measured:,} / {expected:,} ({mark})"

        rows.append(
            f"| {point.get('name')} | {cell(census['gradients'], grads)} | "
            f"{cell(measured_state, state)} |"
        )
    if not rows:
        return ""
    return (
        "| point | gradient bytes: measured / predicted | optimizer state bytes: measured / "
        "predicted |\n|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def summarize_points(points: list[dict]) -> str:
    judged = [judge(p) for p in points]
    gpu = [j for j in judged if j["cuda"]]
    if not gpu:
        return f"{len(points)} point(s), all CPU smoke runs: no GPU figure, no estimator verdict.\n"
    errors = [abs(j["error_pct"]) for j in gpu if j["error_pct"] is not None]
    within = sum(1 for e in errors if e <= ERROR_TARGET_PCT)
    right = sum(1 for j in gpu if j["verdict"] == "right")
    verdicts = sum(1 for j in gpu if j["verdict"] in ("right", "wrong"))
    worst = f", worst {max(errors):.1f}%" if errors else ""
    return (
        f"{len(gpu)} GPU point(s): verdict right for {right} of {verdicts}; "
        f"estimate within {ERROR_TARGET_PCT:g}% of the measured peak for {within} of "
        f"{len(errors)} that ran{worst}.\n"
    )


def render_speed(speed: dict) -> str:
    runs = speed.get("runs") or []
    if not runs:
        return "_No speed runs._\n"
    base = next((r for r in runs if r.get("role") == "baseline"), None)
    base_tps = base.get("tokens_per_second") if base else None
    base_used = base.get("peak_device_used") if base else None
    lines = [
        "| run | tok/s | vs baseline | peak used GiB | alloc GiB | mean tokens/example | "
        "tokens/micro-step | steps measured |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        tps = run.get("tokens_per_second")
        ratio = f"{tps / base_tps:.2f}x" if tps and base_tps else "–"
        lines.append(
            f"| {run.get('name')} | {'–' if tps is None else f'{tps:,.0f}'} | {ratio} | "
            f"{_gib(run.get('peak_device_used'))} | {_gib(run.get('peak_allocated'))} | "
            f"{run.get('mean_tokens_per_example') or '–'} | "
            f"{run.get('tokens_per_micro_step') or '–'} | {run.get('measured_steps') or '–'} |"
        )
    cuda = (speed.get("device") or {}).get("type") == "cuda"
    verdicts = []
    for run in runs:
        if run.get("role") != "sftkit" or not base_tps or not run.get("tokens_per_second"):
            continue
        speedup = run["tokens_per_second"] / base_tps
        memory_ok = None
        if cuda and base_used and run.get("peak_device_used"):
            memory_ok = run["peak_device_used"] <= base_used
        if not cuda:
            verdicts.append(f"- {run['name']}: {speedup:.2f}x on CPU (smoke run, not the target).")
            continue
        met = speedup >= SPEED_TARGET and memory_ok is True
        verdicts.append(
            f"- {run['name']}: {speedup:.2f}x the baseline's tokens/s, peak "
            f"{'not above' if memory_ok else 'above'} the baseline's: target "
            f"(>= {SPEED_TARGET}x at no more memory) {'met' if met else 'NOT met'}."
        )
    return "\n".join(lines) + "\n" + ("\n" + "\n".join(verdicts) + "\n" if verdicts else "")


def describe_device(results: list[dict]) -> str:
    devices = sorted(
        {
            f"{(r.get('device') or {}).get('name')} ({(r.get('device') or {}).get('type')})"
            for r in results
        }
    )
    return ", ".join(devices) if devices else "–"


def render(paths: Iterable[Path]) -> str:
    points, speeds = load_results(list(paths))
    out = [f"Device: {describe_device(points + speeds)}\n"]
    versions = next((r.get("versions") for r in points + speeds if r.get("versions")), None)
    if versions:
        out.append("Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) + "\n")
    out.append("\n### Estimator against measured peaks\n\n")
    out.append(summarize_points(points) + "\n")
    out.append(render_points(points))
    census = render_census(points)
    if census:
        out.append("\nTensors at the first optimizer step, counted in the run:\n\n" + census)
    for speed in speeds:
        out.append(f"\n### Speed: {speed.get('name', 'comparison')}\n\n")
        data = speed.get("data")
        if data:
            out.append(f"Data: {data}\n\n")
        out.append(render_speed(speed))
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Markdown tables from benchmark result JSONs.")
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    text = render(args.paths)
    if args.out:
        args.out.write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
