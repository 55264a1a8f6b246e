"""Evaluation: evaluator plugins (``gsm8k``, ``eval-loss``), answer extraction, accuracy with
a confidence interval, and the stored results under ``<run>/eval/<stage>-<evaluator>/``.

This package and its torch-free modules (extract, stats, base, runner, display) import no
torch; ``generate``, ``gsm8k`` and ``loss`` do, and are imported only when an evaluator runs.
"""

from __future__ import annotations

from sftkit.evaluation.base import (
    EvalResult,
    EvalTask,
    Evaluator,
    StoredEval,
    read_result,
    read_run_evals,
    write_result,
)
from sftkit.evaluation.extract import Extraction, extract_answer, normalize_number
from sftkit.evaluation.stats import Accuracy, accuracy, wilson_interval

__all__ = [
    "Accuracy",
    "EvalResult",
    "EvalTask",
    "Evaluator",
    "Extraction",
    "StoredEval",
    "accuracy",
    "extract_answer",
    "normalize_number",
    "read_result",
    "read_run_evals",
    "wilson_interval",
    "write_result",
]
