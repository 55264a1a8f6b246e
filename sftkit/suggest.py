"""'Did you mean' suggestions, shared by the registry, recipe validation and the CLI."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, candidates: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """Return the candidate closest to `word`, or None when nothing is close enough."""
    pool = list(candidates)
    matches = difflib.get_close_matches(word, pool, n=1, cutoff=cutoff)
    if matches:
        return matches[0]
    # Prefix typos ("rnk" for "rank") score low on ratio; accept a unique prefix/subsequence match.
    lowered = word.lower()
    subseq = [c for c in pool if _is_subsequence(lowered, c.lower())]
    return subseq[0] if len(subseq) == 1 else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    match = closest(word, candidates)
    return f"Did you mean {match!r}?" if match else None


def _is_subsequence(small: str, big: str) -> bool:
    it = iter(big)
    return bool(small) and all(ch in it for ch in small)
