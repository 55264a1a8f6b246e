"""Committed measurements as a regression test of the estimator: every measured point under
``benchmarks/results/<device>-<date>/points.jsonl`` is estimated again with the current
estimator and judged against what was measured (tests/test_benchmarks.py runs it on every CI
run; a new results folder is picked up as soon as it is committed).

    python -m benchmarks.regression [POINTS.jsonl ...]     # prints every check; exit 1 on a miss

A point is re-estimated from what it recorded, so no GPU, model weights or data are needed:
the recipe exactly as it ran (``recipe_resolved``, the run directory's ``recipe.yaml``, which
holds the cap as ``hardware.gpu``) and the architecture it ran (``model.config``). Judged:

* a point measured on CUDA: the fit verdict (predicted fit = it ran; for a point that ran out
  of memory, the estimator's first phase over budget = the phase it died in) and, for a point
  that ran, the error against the measured peak device-used, within 10%
  (`benchmarks.report.judge`: the same rule as the tables of docs/benchmarks.md);
* a point measured on a CPU (the rehearsal), which has no device counters: what a CPU run
  measures exactly, the trainable parameters (equal) and the gradient and optimizer-state
  bytes counted in the run (within 10%), and the verdict against host RAM (it ran, so it
  must be predicted to fit).

A point that failed for another reason than memory (crashed, timed out) is not judged; the
check says so.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.lines import read_lines
from benchmarks.report import ERROR_TARGET_PCT, judge, predicted_bytes

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
JUDGED_KINDS = ("cap", "grid", "fast")


def result_files(root: Path = RESULTS) -> list[Path]:
    """Every committed session's points file, GPU and CPU alike."""
    return sorted(root.glob("*/points.jsonl"))


def measured_points(path: Path) -> list[dict[str, Any]]:
    return [line for line in read_lines(path) if line.get("kind") in JUDGED_KINDS]


def reestimate(line: dict[str, Any]) -> dict[str, Any]:
    """``sftkit estimate-memory --json`` of the recipe that ran, with the current estimator."""
    import yaml

    from sftkit.memory import estimate
    from sftkit.recipe.load import load_recipe_text
    from sftkit.registry import default_registry

    recipe = line.get("recipe_resolved")
    config = (line.get("model") or {}).get("config")
    if not isinstance(recipe, dict) or not isinstance(config, dict):
        raise ValueError(f"{line.get('name')}: no recipe_resolved or model.config to estimate")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(config))
        resolved = load_recipe_text(
            yaml.safe_dump(recipe), registry=default_registry(), source=str(line.get("name"))
        )
        return estimate(resolved, model=str(path), advise=False).to_dict()


@dataclass
class Check:
    name: str
    device: str
    judged: bool = True
    error_pct: float | None = None
    verdict: str | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _within(measured: int, predicted: int | None) -> float | None:
    """Relative error in percent, or None when there is nothing predicted."""
    if predicted is None or not measured:
        return None
    return 100.0 * (predicted - measured) / measured


def check_line(line: dict[str, Any], fresh: dict[str, Any]) -> Check:
    """Judge one measured point against `fresh`, the current estimator's JSON for it."""
    measured = line.get("measured") or {}
    device = (line.get("device") or {}).get("type") or "unknown"
    check = Check(str(line.get("name")), device)
    ran = bool(measured.get("completed")) and not measured.get("oom")
    if not ran and not measured.get("oom"):
        check.judged = False
        check.notes.append(f"not judged: the point failed ({measured.get('error')})")
        return check
    verdict = judge({**line, "predicted": fresh})
    prediction = verdict["prediction"]
    if prediction is None:
        check.problems.append("the current estimate has no training phases or no budget")
        return check
    said = "fits" if prediction.fits else f"does not fit (first over: {prediction.first_over})"
    happened = "ran" if ran else f"ran out of memory in {measured.get('oom_phase')}"
    if device == "cuda":
        check.verdict = verdict["verdict"]
        check.error_pct = verdict["error_pct"]
        if verdict["verdict"] == "wrong":
            check.problems.append(f"verdict wrong: the estimate {said}, the point {happened}")
        if verdict["phase_right"] is False:
            check.problems.append(
                f"out-of-memory phase wrong: predicted {prediction.first_over}, measured "
                f"{measured.get('oom_phase')}"
            )
        if check.error_pct is not None and abs(check.error_pct) > ERROR_TARGET_PCT:
            check.problems.append(
                f"estimate {prediction.used_bytes / 2**30:.2f} GiB ({prediction.phase}) is "
                f"{check.error_pct:+.1f}% off the measured peak device-used "
                f"{measured['peak_device_used'] / 2**30:.2f} GiB (tolerance "
                f"{ERROR_TARGET_PCT:g}%)"
            )
        return check
    # A CPU run: exact tensor bytes and the host-RAM verdict, no device peaks.
    check.verdict = "right" if prediction.fits == ran else "wrong"
    if check.verdict == "wrong":
        check.problems.append(f"verdict wrong against host RAM: the estimate {said}, it {happened}")
    if measured.get("trainable_parameters") != fresh.get("trainable_parameters"):
        check.problems.append(
            f"trainable parameters: measured {measured.get('trainable_parameters')}, "
            f"estimated {fresh.get('trainable_parameters')}"
        )
    census = measured.get("census") or {}
    pairs = (
        ("gradient bytes", census.get("gradients"), "gradients", "optimizer_step"),
        (
            "optimizer-state bytes",
            sum((census.get("optimizer_state") or {}).values()) or None,
            "optimizer",
            "later_steps",
        ),
    )
    errors = []
    for label, counted, category, phase in pairs:
        if counted is None:
            continue
        error = _within(counted, predicted_bytes(fresh, category, phase))
        if error is None:
            check.problems.append(f"{label}: counted {counted:,}, no {category} term estimated")
            continue
        errors.append(error)
        if abs(error) > ERROR_TARGET_PCT:
            check.problems.append(
                f"{label}: counted {counted:,} in the run, estimated "
                f"{predicted_bytes(fresh, category, phase):,} ({error:+.1f}%)"
            )
    check.error_pct = max(errors, key=abs) if errors else None
    check.notes.append("CPU: census and verdict only (no device counters)")
    return check


def check_file(path: Path) -> list[Check]:
    checks = []
    for line in measured_points(path):
        try:
            fresh = reestimate(line)
        except Exception as exc:  # a point the current code cannot estimate is a failure
            check = Check(str(line.get("name")), (line.get("device") or {}).get("type", "?"))
            check.problems.append(f"cannot re-estimate: {type(exc).__name__}: {exc}")
            checks.append(check)
            continue
        checks.append(check_line(line, fresh))
    return checks


def render(path: Path, checks: list[Check]) -> str:
    rows = [f"{path.parent.name}: {len(checks)} point(s)"]
    for c in checks:
        error = "–" if c.error_pct is None else f"{c.error_pct:+.1f}%"
        status = "ok" if c.ok else "FAIL"
        detail = "; ".join(c.problems or c.notes)
        rows.append(f"  {status:4} {c.name} [{c.device}] {c.verdict or '–'} {error} {detail}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    files = [Path(a) for a in args] or result_files()
    failed = False
    for path in files:
        checks = check_file(path)
        print(render(path, checks))
        failed = failed or not all(c.ok for c in checks)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
