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
# The sections of a session's report.md, in order (`render_session`).
SESSION_SECTIONS = (
    "## Setup",
    "## Model",
    "## The seed's case under a 40 GiB cap",
    "## Speed: the seed's script against sftkit",
    "## Fast and long-context points",
    "## GRPO's rollout phase",
    "## Estimator grid",
    "## pytest -m gpu",
    "## Not started",
)


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


def predicted_bytes(predicted: dict, category: str, phase: str) -> int | None:
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
        grads = predicted_bytes(predicted, "gradients", "optimizer_step")
        state = predicted_bytes(predicted, "optimizer", "later_steps")
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


# --------------------------------------------------------------------------- one session


def _mib(value: int | float | None) -> str:
    return "–" if value is None else f"{value / 2**20:.1f} MiB"


def seed_case_verdicts(points: list[dict]) -> list[str]:
    """What the seed's case must show under the cap: full SFT out of memory at the first
    optimizer step, QLoRA training."""
    out = []
    for point in points:
        p = point.get("point") or {}
        measured = point.get("measured") or {}
        cuda = (point.get("device") or {}).get("type") == "cuda"
        full = p.get("strategy") == "full-sft"
        expected = "run out of memory at optimizer_step" if full else "train"
        if not cuda:
            happened = "ran uncapped (CPU: no cap, not judged)"
            met = None
        elif measured.get("oom"):
            happened = f"out of memory at {measured.get('oom_phase')}"
            met = full and measured.get("oom_phase") == "optimizer_step"
        elif measured.get("completed"):
            happened = "trained"
            met = not full
        else:
            happened = f"failed ({measured.get('error')})"
            met = False
        mark = "" if met is None else " — met" if met else " — NOT met"
        out.append(f"- {point.get('name')}: must {expected}; {happened}{mark}.")
    return out


def render_session(lines: list[dict], *, not_started: list[str] | None = None) -> str:
    """`report.md` of one session (`benchmarks.session`), from its points.jsonl lines."""
    by_kind: dict[str, list[dict]] = {}
    for line in lines:
        by_kind.setdefault(str(line.get("kind")), []).append(line)
    setup = (by_kind.get("setup") or [{}])[0]
    session = (lines[0].get("session") if lines else None) or {}
    cuda = str(session.get("device", "")).startswith("cuda")
    device = setup.get("device") or {}
    title = (
        f"GPU measurements on {device.get('name') or 'cuda'}"
        if cuda
        else "CPU rehearsal with the tiny model (not GPU figures)"
    )
    out = [f"# {title}\n\n"]
    ended = by_kind.get("end")
    out.append(
        f"Session {session.get('id', '–')}: {len(lines)} line(s) in points.jsonl, budget "
        f"{session.get('budget_s', '–')} s, deadline {session.get('deadline_s', '–')} s; "
        + (
            f"ended on its own after {ended[0].get('elapsed_s')} s.\n"
            if ended
            else "still running, or killed before its end (the last point may be missing).\n"
        )
    )
    if session.get("results_dir"):
        out.append(f"Commit as `benchmarks/results/{session['results_dir']}/`.\n")
    if not cuda:
        out.append(
            "\nEvery figure below comes from a CPU with a tiny random model: it shows that "
            "the harness runs and records everything; none is a GPU memory or speed figure.\n"
        )

    out.append("\n## Setup\n\n")
    if setup:
        smi = setup.get("nvidia_smi") or {}
        out.append(
            f"- device: {device.get('name', '–')} ({device.get('type', '–')})"
            + (f", driver {smi['driver']}" if smi.get("driver") else "")
            + (f", {smi['memory_total_mib']} MiB" if smi.get("memory_total_mib") else "")
            + f"; Python {setup.get('python', '–')}\n"
        )
        versions = setup.get("versions") or {}
        out.append("- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "\n")
        install = setup.get("install") or {}
        if install.get("installed"):
            verb = f"installed offline (pip rc {install.get('rc')}, {install.get('seconds')} s)"
        elif install.get("checked_only"):
            verb = (
                f"already importable here; the wheels installed for Python 3.12 into a scratch "
                f"folder as a check (pip rc {install.get('rc')}, {install.get('seconds')} s)"
            )
        else:
            verb = f"not installed (needed: {', '.join(install.get('needed') or []) or 'none'})"
        out.append(f"- {install.get('wheels', 0)} carried wheel(s): {verb}\n")
        carry = setup.get("carry") or {}
        paths = ", ".join(f"{k} {_mib(v)}" for k, v in (carry.get("paths") or {}).items())
        out.append(
            f"- carried: {_mib(carry.get('total_bytes'))} of {_mib(carry.get('limit_bytes'))} "
            f"(working tree {_mib(carry.get('tree_bytes'))}, {paths})"
            + ("" if carry.get("ok") else f"; problems: {'; '.join(carry.get('problems') or [])}")
            + "\n"
        )
        if setup.get("missing_modules"):
            out.append(f"- missing modules: {', '.join(setup['missing_modules'])}\n")
    else:
        out.append("_Not run._\n")

    out.append("\n## Model\n\n")
    for line in by_kind.get("model") or []:
        model = line.get("model") or {}
        arch = line.get("architecture") or {}
        if line.get("failed"):
            out.append(f"- {line.get('name')}: failed ({line['failed']})\n")
            continue
        out.append(
            f"- {line.get('name')}: {model.get('parameters', 0):,} parameters, "
            f"{_gib(model.get('weight_bytes'))} GiB {model.get('dtype')} in "
            f"{model.get('shards')} shard(s), drawn on {model.get('built_on')}, "
            + ("reused" if model.get("reused") else f"built in {model.get('build_seconds')} s")
            + f"; tokenizer trained on {model.get('tokenizer_trained_on')}\n"
        )
        if arch.get("parameters"):
            out.append(
                f"- carried 8B config {Path(str(arch.get('config'))).name}: "
                f"{arch['parameters']:,} parameters (sftkit's census)\n"
            )
        elif arch:
            out.append(f"- carried 8B config: {arch.get('error') or 'missing'}\n")
    if not by_kind.get("model"):
        out.append("_Not run._\n")

    out.append("\n## The seed's case under a 40 GiB cap\n\n")
    cap = by_kind.get("cap") or []
    if cap:
        out.append(render_points(cap) + "\n" + "\n".join(seed_case_verdicts(cap)) + "\n")
    else:
        out.append("_Not run._\n")

    out.append(render_eval(by_kind.get("eval") or []))
    out.append("\n## Speed: the seed's script against sftkit\n\n")
    speed = by_kind.get("speed") or []
    if speed:
        data = speed[0].get("data")
        if data:
            out.append(f"Data: {data}.\n\n")
        out.append(render_speed({"runs": speed, "device": speed[0].get("device")}))
        for run in speed:
            if run.get("failed"):
                out.append(f"- {run.get('name')}: failed ({run['failed']})\n")
    else:
        out.append("_Not run._\n")

    out.append("\n## Fast and long-context points\n\n")
    fast = by_kind.get("fast") or []
    if fast:
        out.append(render_points(fast) + "\n" + render_kernels(fast))
    else:
        out.append("_Not run._\n")

    out.append(render_rollout(by_kind.get("rollout") or []))

    out.append("\n## Estimator grid\n\n")
    grid = by_kind.get("grid") or []
    if grid:
        out.append(summarize_points(grid) + "\n" + render_points(grid))
        census = render_census(cap + grid)
        if census:
            out.append("\nTensors at the first optimizer step, counted in the run:\n\n" + census)
    else:
        out.append("_Not run._\n")

    out.append("\n## pytest -m gpu\n\n")
    tests = by_kind.get("tests") or []
    for line in tests:
        out.append(f"`{line.get('summary') or '–'}` (exit code {line.get('returncode')})\n")
    if not tests:
        out.append("_Not run._\n")

    pending = list(not_started or [])
    if ended:
        pending = list(dict.fromkeys(pending + list(ended[0].get("not_started") or [])))
    out.append("\n## Not started\n\n")
    out.append(
        ("Stopped by the budget or the deadline: " + ", ".join(pending) + ".\n")
        if pending
        else "Nothing: every planned piece of work started.\n"
    )
    return "".join(out)


def render_kernels(lines: list[dict]) -> str:
    """What each point computed with (attention, loss head, layer kernels) and its speed."""
    out = ["| point | attention | loss head | layer kernels | tokens/s | ran |\n",
           "|---|---|---|---|---:|---|\n"]  # fmt: skip
    for line in lines:
        k, m = line.get("kernels") or {}, line.get("measured") or {}
        ran = "OOM" if m.get("oom") else "yes" if m.get("completed") else "no"
        tps = m.get("tokens_per_second")
        out.append(
            f"| {line.get('name')} | {k.get('attention', '?')} | {k.get('loss_head', '?')} | "
            f"{', '.join(k.get('layer_kernels') or []) or '-'} | "
            f"{'-' if tps is None else f'{tps:.0f}'} | {ran} |\n"
        )
    return "".join(out)


def render_eval(lines: list[dict]) -> str:
    """The GSM8K test evaluation: today's settings against the new path, per variant."""
    out = ["\n## Evaluation: the GSM8K test with today's settings and the new path\n\n"]
    if not lines:
        return out[0] + "_Not run._\n"
    for line in lines:
        spec = line.get("spec") or {}
        out.append(
            f"{spec.get('limit', '?')} problems per variant, {spec.get('max_new_tokens', '?')} "
            f"new tokens each (random weights: no output stops early; accuracy means nothing), "
            f"model loaded in {line.get('load_seconds', '?')} s.\n\n"
            "| variant | batch | merged copy | problems/s | seconds | 1,319 problems "
            "(extrapolated) | accuracy |\n"
            "|---|---:|---|---:|---:|---:|---:|\n"
        )
        variants = line.get("variants") or {}
        today = (variants.get("today") or {}).get("problems_per_second")
        for name, v in variants.items():
            ratio = (
                f" ({v['problems_per_second'] / today:.2f}x today)"
                if today and name != "today"
                else ""
            )
            out.append(
                f"| {name} | {v.get('batch_size_used')} | "
                f"{'yes' if v.get('merged_copy_used') else 'no'} | {v.get('problems_per_second')}{ratio} "
                f"| {v.get('seconds')} | {v.get('gsm8k_test_seconds')} s | {v.get('accuracy')} |\n"
            )
        if line.get("failed"):
            out.append(f"\n- failed: {line['failed']}\n")
    return "".join(out)


def render_rollout(lines: list[dict]) -> str:
    """GRPO's rollout phase (`benchmarks.rollout`): its predicted peak against the measured
    one (CUDA only), and the KV cache and log-probability tensors against their terms, byte
    for byte (any device)."""
    from benchmarks.rollout import PEAK_ROW

    out = ["\n## GRPO's rollout phase: predicted against measured\n\n"]
    if not lines:
        return out[0] + "_Not run._\n"
    for line in lines:
        summary = line.get("rollout")
        if line.get("failed") or not isinstance(summary, dict):
            out.append(
                f"- {line.get('recipe_file')}: failed ({line.get('failed')}); measure mode "
                "printed no result (run.log has its output).\n"
            )
            continue
        cuda = (line.get("device") or {}).get("type") == "cuda"
        verdict = "ok" if summary.get("ok") else "MISMATCH"
        out.append(
            f"`{line.get('recipe_file')}` ({' '.join(line.get('overrides') or [])}): "
            f"{summary.get('setting')}. Measure mode on {summary.get('device')}: **{verdict}** "
            f"(exit code {line.get('returncode')}).\n\n"
        )
        predicted, measured = summary.get("predicted") or {}, summary.get("measured")
        if measured and cuda:
            out.append("| rollout peak | predicted GiB | measured GiB | error % | |\n"
                       "|---|---:|---:|---:|---|\n")  # fmt: skip
            for figure, ok in (summary.get("peak_ok") or {}).items():
                want, got = predicted.get(figure), measured.get(figure)
                error = f"{100 * (want - got) / got:+.1f}" if want is not None and got else "–"
                out.append(
                    f"| {figure} | {_gib(want)} | {_gib(got)} | {error} | "
                    f"{'ok' if ok else 'OFF'} |\n"
                )
        else:
            out.append(
                f"Rollout peak: {_gib(predicted.get('device used'))} GiB predicted, not measured "
                + (
                    "(a generation engine generates: measure mode does not start it).\n"
                    if cuda
                    else "(CPU smoke: no CUDA counters, and no figure here is a GPU figure).\n"
                )
            )
        rows = summary.get("rows") or []
        if rows:
            out.append("\n| rollout term | predicted bytes | measured bytes | |\n"
                       "|---|---:|---:|---|\n")  # fmt: skip
            for row in rows:
                mark = "ok" if row.get("ok") else "MISMATCH" if row.get("exact") else "OFF"
                out.append(
                    f"| {row.get('what')} | {row.get('predicted_bytes'):,} | "
                    f"{row.get('measured_bytes'):,} | {mark} |\n"
                )
        others = [
            r
            for r in (line.get("measured") or {}).get("rows") or []
            if r not in rows and not str(r.get("what")).startswith(PEAK_ROW)
        ]
        if others:
            off = [r["what"] for r in others if not r.get("ok")]
            out.append(
                f"\nMeasure mode's other rows (the static terms; on CUDA each phase's peaks): "
                f"{len(others) - len(off)} of {len(others)} ok"
                + (f"; off: {', '.join(off)}" if off else "")
                + ".\n"
            )
        for note in summary.get("notes") or []:
            out.append(f"\n- {note}\n")
    return "".join(out)
