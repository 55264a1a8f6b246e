"""The session's ``rollout`` stage: GRPO's rollout phase measured against its prediction, by
``sftkit estimate-memory recipes/r1_gsm8k_grpo.yaml --measure --json`` on the session's
random model (`sftkit.training.measure_rollout`: on CUDA the rollout phase's three peaks
within 10%; everywhere the KV cache and the kept log-probabilities byte for byte).

This module builds the command and reads its JSON; `benchmarks.session` runs it in a process
of its own and `benchmarks.report.render_rollout` renders the line. Torch-free.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from sftkit.memory.terms import PHASE_LABELS

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "r1_gsm8k_grpo.yaml"
# Decoding is the slow part: 32 sequences through the NF4 8B model with transformers'
# generate, one token at a time. The recipe's 1,024-token completions would take several
# minutes of the session's budget; 256 should keep the whole measurement (load, a step, the
# rollout, a step) near a minute on an H100 (not yet timed on a GPU) and price the same
# terms, the KV cache a quarter as large. The rest of the recipe is kept.
COMPLETION_TOKENS = 256
# The tiny model's stand-ins: the 512-token prompt as 64 (as `session.TINY_SEQ`), 32 new tokens.
TINY_PROMPT_TOKENS, TINY_COMPLETION_TOKENS = 64, 32
FIGURES = ("allocated", "reserved", "device used")  # measure mode's rows per phase
PEAK_ROW = PHASE_LABELS["rollout"]  # "<label>: <figure>", the rollout phase's peaks (CUDA)
ROLLOUT_ROW = "rollout:"  # the rows of the rollout terms (KV cache, log-probabilities)


def overrides(model_dir: Path | str, gpu: str, *, tiny: bool) -> list[str]:
    """The recipe on the session's model, without the SFT adapter it starts from (no run
    made one here), priced for `gpu` (``hardware.gpu``) at the stage's completion length."""
    completion = TINY_COMPLETION_TOKENS if tiny else COMPLETION_TOKENS
    return [
        f"model.name_or_path={model_dir}",
        "~model.adapter",
        f"hardware.gpu={gpu}",
        f"training.objective_options.max_completion_length={completion}",
        *((f"training.max_seq_length={TINY_PROMPT_TOKENS}",) if tiny else ()),
    ]


def command(recipe_overrides: list[str]) -> list[str]:
    """``python -m sftkit estimate-memory RECIPE OVERRIDES --measure --json``."""
    return [sys.executable, "-m", "sftkit", "estimate-memory", str(RECIPE), *recipe_overrides,
            "--measure", "--json"]  # fmt: skip


def summarize(estimate: dict[str, Any]) -> dict[str, Any]:
    """What the report shows of one ``--measure --json`` object: the rollout phase's three
    predicted figures, the measured ones (None without CUDA: measure mode then compares
    tensors only), the rows of the rollout terms, and measure mode's verdict."""
    measured = estimate.get("measured") or {}
    rows = measured.get("rows") or []
    peaks = {
        r["what"].removeprefix(f"{PEAK_ROW}: "): r for r in rows if r["what"].startswith(PEAK_ROW)
    }
    figures = estimate.get("phase_figures", {}).get("rollout") or {}
    return {
        "setting": estimate.get("setting"),
        "device": measured.get("device"),
        "predicted": {f: figures.get(f.replace(" ", "_")) for f in FIGURES},
        "measured": {f: peaks[f]["measured_bytes"] for f in FIGURES} if peaks else None,
        "peak_ok": {f: peaks[f]["ok"] for f in FIGURES} if peaks else None,
        "peak_phase": estimate.get("peak_phase"),
        "rows": [r for r in rows if r["what"].startswith(ROLLOUT_ROW)],
        "ok": measured.get("ok"),
        "notes": [n for n in measured.get("notes") or [] if n.startswith(ROLLOUT_ROW)],
    }
