"""The one file a GPU session brings back: ``points.jsonl``, one JSON object per line, each
appended the moment its piece of work has finished (`benchmarks.session`).

Every line has the envelope ``schema``, ``kind``, ``name``, ``session`` (the call's id,
device and mode), ``started_s`` (seconds into the call when the work started) and
``wall_seconds``. The kinds, in the order a session writes them:

* ``setup``: versions (nvidia-smi, Python packages), the offline install of the carried
  wheels, the size of what the call carries;
* ``model``: the random-weight model directory (parameters, bytes, seconds) and the
  architecture config it was built from;
* ``cap`` and ``grid``: one measured point (`benchmarks.point`): the prediction of
  ``sftkit estimate-memory --json``, the measurement per phase, out of memory and where,
  tokens per second, MFU, versions, device, the resolved recipe and the model config;
* ``speed``: one run of the speed comparison (`benchmarks.compare_speed`);
* ``fast``: one fast or long-context point, as ``grid`` plus the ``kernels`` it ran with;
* ``eval``: the GSM8K test evaluation, per variant (`benchmarks.eval_point`);
* ``rollout``: GRPO's rollout phase (`benchmarks.rollout`): ``predicted`` (the estimate),
  ``measured`` (measure mode's comparison, every row), ``rollout`` (the rollout phase's
  predicted and measured figures and the rows of its terms), ``returncode``;
* ``tests``: ``pytest -m gpu``;
* ``end``: what the budget left unstarted (absent when the call was killed).

A piece of work that died (crashed, timed out) still gets its line, ``failed`` saying why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LINE_SCHEMA = "sftkit-benchmark-line/1"
STAGES = ("setup", "model", "cap", "speed", "fast", "eval", "rollout", "grid", "tests")
KINDS = (*STAGES, "end")
POINTS_FILE, LOG_FILE, REPORT_FILE = "points.jsonl", "run.log", "report.md"
OUT_FILES = (POINTS_FILE, LOG_FILE, REPORT_FILE)
MAX_OUT_FILES = 8  # what one device call brings back from $OUT
PHASE_KEYS = ("peak_allocated", "peak_reserved", "peak_device_used", "host_max_rss", "seconds")

_NUMBER = (int, float)
_ENVELOPE: dict[str, Any] = {
    "schema": str,
    "kind": str,
    "name": str,
    "session": dict,
    "started_s": _NUMBER,
    "wall_seconds": _NUMBER,
}
_POINT = {"point": dict, "device": dict, "versions": dict, "predicted": dict, "measured": dict}
_BY_KIND: dict[str, dict[str, Any]] = {
    "setup": {"versions": dict, "install": dict, "carry": dict, "device": dict},
    "model": {"model": dict},
    "cap": _POINT,
    "grid": _POINT,
    "fast": {**_POINT, "kernels": dict},
    "speed": {"role": str, "device": dict, "versions": dict},
    "eval": {"eval_schema": str, "device": dict},
    "rollout": {"device": dict, "returncode": int, "predicted": dict, "measured": dict},
    "tests": {"returncode": int, "summary": str},
    "end": {"not_started": list, "budget_s": _NUMBER},
}


def _typed(line: dict[str, Any], keys: dict[str, Any], where: str) -> list[str]:
    problems = []
    for key, kind in keys.items():
        if key not in line:
            problems.append(f"{where}: no {key!r}")
        elif not isinstance(line[key], kind) or (isinstance(line[key], bool) and kind is _NUMBER):
            problems.append(f"{where}: {key!r} is {type(line[key]).__name__}")
    return problems


def validate_line(line: Any) -> list[str]:
    """What is wrong with one line (empty when nothing is)."""
    if not isinstance(line, dict):
        return [f"a line is {type(line).__name__}, not an object"]
    name = f"{line.get('kind')} {line.get('name')!r}"
    problems = _typed(line, _ENVELOPE, name)
    if line.get("schema") != LINE_SCHEMA:
        problems.append(f"{name}: schema {line.get('schema')!r}, expected {LINE_SCHEMA!r}")
    kind = line.get("kind")
    if kind not in KINDS:
        return [*problems, f"{name}: unknown kind (one of {', '.join(KINDS)})"]
    problems += _typed(line, _BY_KIND[kind], name)
    if kind in ("cap", "grid", "fast") and not line.get("failed") and not problems:
        problems += _point_problems(line, name)
    if kind == "rollout" and not line.get("failed") and not isinstance(line.get("rollout"), dict):
        problems.append(f"{name}: no 'rollout' (a line that measured summarizes it)")
    return problems


def _point_problems(line: dict[str, Any], name: str) -> list[str]:
    predicted, measured = line["predicted"], line["measured"]
    problems = []
    if "error" in predicted or not isinstance(predicted.get("phases"), dict):
        problems.append(f"{name}: no prediction ({predicted.get('error', 'no phases')})")
    for key in ("completed", "oom", "oom_phase", "tokens_per_second", "mfu", "phases"):
        if key not in measured:
            problems.append(f"{name}: measured has no {key!r}")
    for phase, record in (measured.get("phases") or {}).items():
        missing = [k for k in PHASE_KEYS if k not in record]
        if missing:
            problems.append(f"{name}: measured phase {phase} lacks {', '.join(missing)}")
    if measured.get("oom") and not measured.get("oom_phase"):
        problems.append(f"{name}: out of memory without a phase")
    for key in ("recipe_resolved", "model"):
        if not isinstance(line.get(key), dict):
            problems.append(f"{name}: no {key!r} (needed to re-estimate it later)")
    return problems


def append_line(path: Path, line: dict[str, Any]) -> None:
    """Append one line and flush it to disk: a call killed a moment later keeps it."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(line, default=str, separators=(",", ":")) + "\n")
        handle.flush()


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a points file (a line cut short by a kill is dropped)."""
    out = []
    for text in path.read_text(encoding="utf-8").splitlines():
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out
