"""``data.mixture``: several dataset formats trained together.

Each dataset is read by its own format (hub, files, ...), then its train split is sampled:
``samples: N`` takes N rows (every row again as often as needed when it has fewer), weights
share the mixture's ``total`` (default: as many rows as the weights allow without repeating
any) by largest remainder. Sampling is seeded (``seed``); sftkit then splits dev off the
mixed train as for one format, and the test splits are concatenated. Every example's id is
prefixed with its dataset (``1.sharegpt/train-00042``), so ids stay unique.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sftkit.data.example import Example
from sftkit.data.formats import RawSplits
from sftkit.data.readers import ReadReport
from sftkit.errors import DataError
from sftkit.specs import load_factory

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe


def counts(
    sizes: Sequence[int],
    *,
    weights: Sequence[float] | None,
    samples: Sequence[int] | None,
    total: int | None,
) -> list[int]:
    """Rows taken from each dataset of `sizes` rows."""
    if samples is not None:
        return list(samples)
    assert weights is not None
    shares = [w / sum(weights) for w in weights]
    if total is None:  # the most rows with no dataset repeated
        total = min(math.floor(n / p) for n, p in zip(sizes, shares, strict=True))
    exact = [p * total for p in shares]
    taken = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: exact[i] - taken[i], reverse=True)
    for i in by_remainder[: total - sum(taken)]:
        taken[i] += 1
    return taken


def sample(rows: list[Example], n: int, rng: random.Random) -> list[Example]:
    """`n` rows: without replacement when there are enough, else whole passes then a sample
    of the rest; repeats get a ``#k`` id suffix."""
    if not rows:
        return []
    passes, rest = divmod(n, len(rows))
    out = [replace(ex, id=f"{ex.id}#{k}") if k else ex for k in range(passes) for ex in rows]
    picked = sorted(rng.sample(range(len(rows)), rest))
    out += [replace(rows[i], id=f"{rows[i].id}#{passes}") if passes else rows[i] for i in picked]
    return out


def read_mixture(
    resolved: ResolvedRecipe, *, skip_bad_rows: bool
) -> tuple[RawSplits, list[dict[str, Any]]]:
    """The mixed train and test examples, and per dataset what was read and taken (for the
    manifest)."""
    section = resolved.recipe.data.mixture
    assert section is not None and len(section.datasets) == len(resolved.mixture)
    report = ReadReport()
    read: list[RawSplits] = []
    for component in resolved.mixture:
        fmt = load_factory(component.spec.factory)(component.options)
        got = fmt.read(skip_bad_rows=skip_bad_rows)
        report.sources.extend(got.report.sources)
        report.skipped.extend(got.report.skipped)
        read.append(got)
    sizes = [len(r.train) for r in read]
    by_weight = section.datasets[0].weight is not None
    for source, size in zip(section.datasets, sizes, strict=True):
        if size == 0:
            raise DataError(f"mixture dataset {source.format.name!r} has no train rows.")
    taken = counts(
        sizes,
        weights=[d.weight or 0.0 for d in section.datasets] if by_weight else None,
        samples=None if by_weight else [d.samples or 0 for d in section.datasets],
        total=section.total,
    )
    rng = random.Random(section.seed)
    train: list[Example] = []
    test: list[Example] = []
    summary = []
    for i, (component, got, n) in enumerate(zip(resolved.mixture, read, taken, strict=True)):
        prefix = f"{i}.{component.spec.name}/"
        train += [replace(ex, id=prefix + ex.id) for ex in sample(got.train, n, rng)]
        test += [replace(ex, id=prefix + ex.id) for ex in got.test or []]
        summary.append(
            {
                "format": component.spec.name,
                "train_rows": len(got.train),
                "taken": n,
                "test_rows": len(got.test or []),
            }
        )
    return RawSplits(train, test or None, report), summary
