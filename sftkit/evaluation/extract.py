"""Final-answer extraction for GSM8K-style outputs (pure text, no torch).

Order of preference, after removing reasoning blocks:

1. the first ``#### N`` line (GSM8K's own answer format; the first one, because a model that
   does not stop at EOS keeps writing new problems with their own ``####`` lines);
2. the last ``\\boxed{N}`` (what R1-style models write after their reasoning);
3. the last number anywhere in the text.

Numbers are normalized so that formatting never decides correctness: thousands separators,
currency signs, a trailing period or percent sign, a Unicode minus, and trailing decimal zeros
("42.0" == "42", "3.50" == "3.5") are all ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

Method = Literal["####", "boxed", "last-number"]

# A number as people and models write it: optional sign and currency (either order),
# digits with or without thousands separators, an optional decimal part.
_NUMBER = re.compile(
    r"""
    (?<![\w.])                      # not the tail of a word or of another number
    (?P<sign1>[-−]?)
    (?P<cur>[$€£¥])?\s?
    (?P<sign2>[-−]?)
    (?P<int>\d{1,3}(?:,\d{3})+|\d+)?
    (?P<frac>\.\d+)?
    (?![\d])
    """,
    re.VERBOSE,
)
_ANSWER_LINE = re.compile(r"####[ \t]*(?P<rest>[^\n]*)")
_BOXED = re.compile(r"\\boxed\s*\{(?P<body>[^{}]*)\}")


@dataclass(frozen=True)
class Extraction:
    """The normalized answer found in a text (None if none), and which rule found it."""

    answer: str | None
    method: Method | None


def strip_reasoning(text: str, *, starts_in_think: bool = False) -> str:
    """Remove ``<think>...</think>`` blocks.

    A ``<think>`` that is never closed means the generation ran out inside its reasoning, so
    the rest of the text is removed too: numbers in unfinished reasoning are not answers. A
    ``</think>`` with no opening tag (R1-distill chat templates put ``<think>`` in the prompt)
    closes reasoning that started before the text; ``starts_in_think=True`` says the prompt
    opened such a block, so a text with no ``</think>`` at all is still all reasoning.
    """
    first_close = text.find(THINK_CLOSE)
    first_open = text.find(THINK_OPEN)
    if first_close != -1 and (first_open == -1 or first_close < first_open):
        text = text[first_close + len(THINK_CLOSE) :]
    elif starts_in_think:
        return ""
    out: list[str] = []
    pos = 0
    while True:
        start = text.find(THINK_OPEN, pos)
        if start == -1:
            out.append(text[pos:])
            break
        out.append(text[pos:start])
        end = text.find(THINK_CLOSE, start + len(THINK_OPEN))
        if end == -1:
            break  # unterminated: everything after it is reasoning
        pos = end + len(THINK_CLOSE)
    return "".join(out)


def unclosed_think(text: str, *, starts_in_think: bool = False) -> bool:
    """Did the output stop inside its reasoning (a ``<think>`` never closed, or no
    ``</think>`` after a prompt that opened one)? Such an output has no answer: it ran out of
    tokens while thinking, and is reported as such rather than as a wrong number."""
    if starts_in_think and THINK_CLOSE not in text:
        return True
    return text.rfind(THINK_OPEN) > text.rfind(THINK_CLOSE)


def normalize_number(text: str) -> str | None:
    """The canonical form of one written number, or None if `text` is not one.

    >>> normalize_number("$1,234.50.")
    '1234.5'
    """
    candidate = text.strip().rstrip(".").rstrip("%").strip()
    match = _NUMBER.fullmatch(candidate)
    if match is None:
        return None
    return _canonical(match)


def find_numbers(text: str) -> list[str]:
    """Every number in `text`, normalized, in order of appearance."""
    found = []
    for match in _NUMBER.finditer(text):
        value = _canonical(match)
        if value is not None:
            found.append(value)
    return found


def extract_answer(text: str, *, starts_in_think: bool = False) -> Extraction:
    """The model's final answer in `text` (see the module docstring for the rules)."""
    visible = strip_reasoning(text, starts_in_think=starts_in_think)
    for line in _ANSWER_LINE.finditer(visible):
        numbers = find_numbers(line.group("rest"))
        if numbers:
            return Extraction(numbers[0], "####")
    for boxed in reversed(list(_BOXED.finditer(visible))):
        numbers = find_numbers(boxed.group("body"))
        if numbers:
            return Extraction(numbers[-1], "boxed")
    numbers = find_numbers(visible)
    if numbers:
        return Extraction(numbers[-1], "last-number")
    return Extraction(None, None)


def gold_answer(reference: str) -> str | None:
    """Normalize a reference answer: a bare number, or a GSM8K solution ending ``#### N``."""
    direct = normalize_number(reference)
    if direct is not None:
        return direct
    return extract_answer(reference).answer


def prompt_opens_think(prompt: str) -> bool:
    """Does the prompt end inside an open ``<think>`` block (R1-distill chat templates)?"""
    return prompt.rfind(THINK_OPEN) > prompt.rfind(THINK_CLOSE)


def _canonical(match: re.Match[str]) -> str | None:
    integer = match.group("int")
    frac = match.group("frac")
    if integer is None and frac is None:
        return None
    negative = bool(match.group("sign1") or match.group("sign2"))
    digits = (integer or "0").replace(",", "") + (frac or "")
    try:
        value = Decimal(digits)
    except InvalidOperation:  # pragma: no cover - the regex only lets digits through
        return None
    if negative:
        value = -value
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")
