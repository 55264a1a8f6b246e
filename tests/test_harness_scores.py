"""lm-evaluation-harness's GSM8K scores (strict-match, flexible-extract) beside sftkit's: the
task's regexes and normalisation on known outputs, and the evaluator reporting both."""

from __future__ import annotations

import pytest

from sftkit.evaluation.harness import INVALID, extract, matches

GSM8K_ANSWER = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"


@pytest.mark.parametrize(
    ("output", "strict", "flexible"),
    [
        ("She sold 72 clips.\n#### 72", "72", "72"),
        ("#### 1,234.\nThe answer is 99", "1,234.", "99"),  # strict: first ####; flexible: last
        ("The total is $18.", INVALID, "$18."),
        ("x = 7", INVALID, "7"),  # a single digit only by the second alternative
        ("no numbers", INVALID, INVALID),
        ("#### -5 and #### 6", "-5", "6"),
    ],
)
def test_extraction_is_the_harness_filters(output, strict, flexible):
    assert extract(output, "strict") == strict
    assert extract(output, "flexible") == flexible


def test_exact_match_normalises_both_sides_as_the_harness():
    assert matches("#### 72", GSM8K_ANSWER, "strict")
    assert matches("so $1,234.", "1234", "flexible")  # ',', '$' and a final '.' removed
    assert not matches("#### 72.5", "72", "strict")
    assert not matches("The answer: 72", GSM8K_ANSWER, "strict")  # no '#### ': invalid
    assert matches("The answer: 72", GSM8K_ANSWER, "flexible")


def test_the_gsm8k_evaluator_reports_both_beside_its_own(monkeypatch):
    from types import SimpleNamespace

    import sftkit.evaluation.gsm8k as gsm8k
    from sftkit.builtin.evaluators import Gsm8kEvalOptions
    from sftkit.data.example import Example
    from sftkit.evaluation.base import EvalTask
    from sftkit.evaluation.display import details

    outputs = ["12 + 3 = 15\n#### 15", "The answer is 15", "#### 14"]
    monkeypatch.setattr(
        gsm8k,
        "greedy_generate",
        lambda model, tokenizer, prompts, **kw: [
            SimpleNamespace(text=o, new_tokens=5, finished=True) for o in outputs
        ],
    )
    template = SimpleNamespace(prompt_text=lambda example, tokenizer: f"Q: {example.prompt}\n")
    examples = [Example(f"test-{i}", "12 + 3?", "12 + 3 = 15\n#### 15", "15") for i in range(3)]
    task = EvalTask(model=None, tokenizer=None, examples=examples, template=template, split="test")
    result = gsm8k.Gsm8kEvaluator(Gsm8kEvalOptions()).evaluate(task)
    assert result.metrics["accuracy"] == pytest.approx(2 / 3)  # sftkit finds "15" in output 2
    assert result.metrics["strict_match"] == pytest.approx(1 / 3)
    assert result.metrics["flexible_extract"] == pytest.approx(2 / 3)
    assert result.predictions[1]["strict_match"] == INVALID
    assert "lm-eval strict-match 33.3%, flexible-extract 66.7%" in details(
        "accuracy", result.metrics
    )
