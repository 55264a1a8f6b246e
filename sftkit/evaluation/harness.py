"""lm-evaluation-harness's GSM8K scoring, applied to sftkit's generations.

Published GSM8K figures are mostly lm-evaluation-harness's ``gsm8k`` task (version 3), which
reports two exact-match scores of the same generations:

- **strict-match**: the first ``#### N`` of the output (regex ``#### (\\-?[0-9\\.\\,]+)``);
- **flexible-extract**: the last number-like run of the output (regex
  ``(-?[$0-9.,]{2,})|(-?[0-9]+)``, its last match);

each compared, after removing ``,``, ``$``, everything up to ``#### `` and a final ``.`` from
both sides and lower-casing, with the reference answer; an output without a match scores
``[invalid]``. The regexes and normalisation here are the task's (lm_eval/tasks/gsm8k/
gsm8k.yaml and lm_eval/filters/extraction.py), so the two scores are what the harness would
give these outputs. The prompts, few-shot examples and stop sequences are sftkit's, not the
harness's: the scores say how sftkit's answers fare under the harness's scoring.
"""

from __future__ import annotations

import re

STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
IGNORED = tuple(re.compile(p) for p in (",", r"\$", r"(?s).*#### ", r"\.$"))
INVALID = "[invalid]"


def extract(text: str, mode: str) -> str:
    """What the harness's filter keeps of an output (``strict`` or ``flexible``)."""
    pattern, select = (STRICT, 0) if mode == "strict" else (FLEXIBLE, -1)
    found = pattern.findall(text)
    if not found:
        return INVALID
    match = found[select]
    if isinstance(match, tuple):  # alternation: the group that matched
        groups = [g for g in match if g]
        match = groups[0] if groups else INVALID
    return match.strip()


def normalise(text: str) -> str:
    for pattern in IGNORED:
        text = pattern.sub("", text)
    return text.lower()


def matches(text: str, reference: str, mode: str) -> bool:
    """Does `text` score as `reference` (the number, or GSM8K's whole '... #### N' answer)?"""
    return normalise(extract(text, mode)) == normalise(reference)
