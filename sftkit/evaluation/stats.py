"""Accuracy with a Wilson score interval (pure arithmetic, no torch).

The Wilson interval, unlike the textbook normal approximation p ± z·sqrt(p(1-p)/n), stays
inside [0, 1] and does not collapse to a zero-width interval at 0% or 100% accuracy, which
matters for the small evaluation sets a quick run uses (100 problems: ±9 points at 50%).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist


@dataclass(frozen=True)
class Accuracy:
    correct: int
    total: int
    confidence: float
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.correct / self.total

    def to_dict(self) -> dict[str, float | int]:
        return {
            "accuracy": self.value,
            "correct": self.correct,
            "n": self.total,
            "ci_low": self.low,
            "ci_high": self.high,
            "confidence": self.confidence,
        }


def wilson_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for `correct` successes out of `total` trials."""
    if total <= 0:
        raise ValueError("an interval needs at least one trial")
    if not 0 <= correct <= total:
        raise ValueError(f"correct={correct} is outside 0..{total}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = correct / total
    z2n = z * z / total
    center = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / total + z2n / (4 * total))
    # Clamp float noise at the edges: at p=0 the lower bound is exactly 0.
    low = 0.0 if correct == 0 else max(0.0, center - half)
    high = 1.0 if correct == total else min(1.0, center + half)
    return low, high


def accuracy(correct: int, total: int, confidence: float = 0.95) -> Accuracy:
    low, high = wilson_interval(correct, total, confidence)
    return Accuracy(correct, total, confidence, low, high)
