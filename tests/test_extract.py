"""Answer extraction: a table of real-looking model outputs, and properties of number formats."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sftkit.evaluation.extract import (
    extract_answer,
    find_numbers,
    gold_answer,
    normalize_number,
    prompt_opens_think,
    strip_reasoning,
)

# (model output, expected answer, rule that should find it)
OUTPUTS = [
    # GSM8K's own format, as a fine-tuned model writes it.
    (
        "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
        "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer's market.\n#### 18",
        "18",
        "####",
    ),
    ("He pays 1,200 + 300 = 1,500 dollars.\n#### 1,500", "1500", "####"),
    ("Total: $3.50 + $1.50 = $5.00\n#### $5.00", "5", "####"),
    ("#### 42.", "42", "####"),
    ("####42", "42", "####"),
    ("The temperature dropped to -7 degrees.\n#### -7", "-7", "####"),
    ("#### The answer is 64 marbles.", "64", "####"),
    # A model that does not stop: the first #### line is its answer to *this* problem.
    ("3 + 4 = 7\n#### 7\n\nQuestion: Tom has 5 apples...\n#### 5", "7", "####"),
    # An empty #### line falls through to the last number.
    ("So she has 12 left.\n####\n", "12", "last-number"),
    # R1-style: reasoning in <think>, answer after it, often boxed.
    (
        "<think>\nFirst 16 - 3 = 13, then 13 - 4 = 9. 9 * 2 = 18.\n</think>\n\n"
        "She makes \\boxed{18} dollars.",
        "18",
        "boxed",
    ),
    ("<think>maybe 100? no, 120</think>The answer is \\boxed{120.0}", "120", "boxed"),
    ("<think>13 apples</think>\n\n#### 13", "13", "####"),
    # No #### and no box: the last number.
    ("The answer is 25.", "25", "last-number"),
    ("She has 3 boxes of 4 pens, so 12 pens in total.", "12", "last-number"),
    ("It costs €1,234.50 in total", "1234.5", "last-number"),
    ("That is 50% of the class, i.e. 15 students.", "15", "last-number"),
    ("x = −4.50", "-4.5", "last-number"),
    ("10-3=7", "7", "last-number"),
    # Unterminated reasoning never reached an answer.
    ("<think>Let me compute 5 * 6 = 30 and then", None, None),
    ("I don't know.", None, None),
    ("", None, None),
]


@pytest.mark.parametrize(("output", "answer", "method"), OUTPUTS)
def test_extraction_table(output: str, answer: str | None, method: str | None) -> None:
    found = extract_answer(output)
    assert (found.answer, found.method) == (answer, method)


def test_output_that_starts_inside_a_think_block_opened_by_the_prompt() -> None:
    prompt = "<｜User｜>How many?<｜Assistant｜><think>\n"
    assert prompt_opens_think(prompt)
    assert not prompt_opens_think("<think>x</think> How many?")
    closed = "16 - 3 = 13 ...</think>\n\n#### 13"
    assert extract_answer(closed, starts_in_think=True).answer == "13"
    # Cut off while still reasoning: the numbers in the reasoning are not an answer.
    assert extract_answer("16 - 3 = 13, then 13 * 2", starts_in_think=True).answer is None
    # The same text without the prompt's open block is a plain answer.
    assert extract_answer("16 - 3 = 13, then 13 * 2").answer == "2"


def test_strip_reasoning() -> None:
    assert strip_reasoning("a<think>b</think>c<think>d</think>e") == "ace"
    assert strip_reasoning("a<think>b</think>c<think>never closed 5") == "ac"
    assert strip_reasoning("reasoning</think>answer") == "answer"
    assert strip_reasoning("no tags 5") == "no tags 5"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", "42"),
        ("42.0", "42"),
        ("42.000", "42"),
        ("3.50", "3.5"),
        ("0.5", "0.5"),
        (".5", "0.5"),
        ("1,000", "1000"),
        ("1,234,567.80", "1234567.8"),
        ("$18", "18"),
        ("$ 18", "18"),
        ("-$5", "-5"),
        ("$-5", "-5"),
        ("18.", "18"),
        ("25%", "25"),
        ("-0", "0"),
        ("−3", "-3"),
        ("seven", None),
        ("", None),
        ("1/2", None),
    ],
)
def test_normalize_number(text: str, expected: str | None) -> None:
    assert normalize_number(text) == expected


def test_gold_answer_from_a_solution_or_a_bare_number() -> None:
    assert gold_answer("72") == "72"
    assert gold_answer("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72") == "72"
    assert gold_answer("1,000") == "1000"


def _written(value: int, *, commas: bool, currency: str, decimals: int, period: bool) -> str:
    body = f"{abs(value):,}" if commas else str(abs(value))
    if decimals:
        body += "." + "0" * decimals
    sign = "-" if value < 0 else ""
    return f"{sign}{currency}{body}{'.' if period else ''}"


formats = st.fixed_dictionaries(
    {
        "commas": st.booleans(),
        "currency": st.sampled_from(["", "$", "€", "£"]),
        "decimals": st.integers(0, 3),
        "period": st.booleans(),
    }
)


@given(value=st.integers(-(10**9), 10**9), fmt=formats)
def test_every_way_of_writing_an_integer_normalizes_to_it(value: int, fmt: dict) -> None:
    assert normalize_number(_written(value, **fmt)) == str(value)


@given(
    value=st.integers(-(10**9), 10**9),
    fmt=formats,
    noise=st.lists(st.integers(0, 10**6), max_size=5),
)
def test_the_answer_line_wins_over_any_other_number(
    value: int, fmt: dict, noise: list[int]
) -> None:
    working = " ".join(f"{n} + 1 = {n + 1}." for n in noise)
    text = f"{working}\n#### {_written(value, **fmt)}\nafter 99999"
    assert extract_answer(text) == extract_answer(f"#### {value}")
    assert extract_answer(text).answer == str(value)


@given(
    whole=st.integers(0, 10**6),
    frac=st.integers(1, 999).filter(lambda f: f % 10),
    zeros=st.integers(0, 3),
)
def test_trailing_decimal_zeros_never_matter(whole: int, frac: int, zeros: int) -> None:
    text = f"{whole}.{frac:03d}"
    assert normalize_number(text + "0" * zeros) == normalize_number(text)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_extraction_never_crashes_and_answers_are_canonical(text: str) -> None:
    found = extract_answer(text)
    if found.answer is not None:
        assert normalize_number(found.answer) == found.answer
        assert found.answer in find_numbers(strip_reasoning(text)) or found.method == "####"
