"""Accuracy and its Wilson score interval."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sftkit.evaluation.stats import accuracy, wilson_interval


@pytest.mark.parametrize(
    ("correct", "total", "low", "high"),
    [
        # Roots of (k/n - p)^2 = z^2 p (1 - p) / n, solved with mpmath at 30 digits.
        (50, 100, 0.403832, 0.596168),
        (0, 10, 0.0, 0.277533),
        (10, 10, 0.722467, 1.0),
        (1, 1, 0.206549, 1.0),
        (81, 263, 0.255289, 0.366210),
    ],
)
def test_wilson_reference_values(correct: int, total: int, low: float, high: float) -> None:
    lo, hi = wilson_interval(correct, total)
    assert lo == pytest.approx(low, abs=1e-6)
    assert hi == pytest.approx(high, abs=1e-6)


def test_accuracy_record() -> None:
    acc = accuracy(41, 100)
    assert acc.value == 0.41
    data = acc.to_dict()
    assert data["accuracy"] == 0.41 and data["correct"] == 41 and data["n"] == 100
    assert data["ci_low"] < 0.41 < data["ci_high"]
    assert data["confidence"] == 0.95


def test_wider_confidence_gives_a_wider_interval() -> None:
    lo95, hi95 = wilson_interval(30, 80, 0.95)
    lo99, hi99 = wilson_interval(30, 80, 0.99)
    assert lo99 < lo95 and hi99 > hi95


@pytest.mark.parametrize(("correct", "total"), [(-1, 5), (6, 5), (0, 0)])
def test_impossible_counts_are_rejected(correct: int, total: int) -> None:
    with pytest.raises(ValueError):
        wilson_interval(correct, total)


@given(total=st.integers(1, 5000), data=st.data())
def test_interval_contains_the_estimate_and_stays_in_bounds(total: int, data) -> None:
    correct = data.draw(st.integers(0, total))
    lo, hi = wilson_interval(correct, total)
    assert 0.0 <= lo <= correct / total <= hi <= 1.0
    assert hi - lo > 0
    # Mirror symmetry: k successes and n-k failures give the mirrored interval.
    mlo, mhi = wilson_interval(total - correct, total)
    assert math.isclose(lo, 1 - mhi, abs_tol=1e-12) and math.isclose(hi, 1 - mlo, abs_tol=1e-12)


@given(k=st.integers(1, 50), scale=st.integers(2, 20))
def test_more_data_at_the_same_rate_narrows_the_interval(k: int, scale: int) -> None:
    n = 2 * k
    lo, hi = wilson_interval(k, n)
    lo2, hi2 = wilson_interval(k * scale, n * scale)
    assert hi2 - lo2 < hi - lo
