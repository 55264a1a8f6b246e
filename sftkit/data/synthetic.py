"""A generated GSM8K-style data set of short arithmetic word problems.

It exists so the offline quickstart can prove, in minutes on a CPU, that a model trained with
sftkit learns: a randomly initialised tiny model scores ~0% exact match before training and
far above after, which only happens when masking, EOS and generation are all right.

Rows look like GSM8K's: ``{"question": ..., "answer": "... 12 + 7 = 19\\n#### 19"}``. Test
questions never appear in train (exact text), so accuracy is measured on held-out problems.
"""

from __future__ import annotations

import random
from collections.abc import Callable

NAMES = (
    "Ann", "Ben", "Cal", "Dee", "Eva", "Finn", "Gus", "Hal", "Ivy", "Jo",
    "Kim", "Lea", "Max", "Ned", "Oli", "Pam", "Ray", "Sue", "Tom", "Uma",
)  # fmt: skip
OBJECTS = (
    "apples", "pens", "books", "cards", "eggs", "shells", "coins", "cups", "hats", "toys",
)  # fmt: skip

Problem = tuple[str, str]  # (question, answer)


def _add(rng: random.Random, max_operand: int) -> Problem:
    name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    a, b = rng.randint(1, max_operand), rng.randint(1, max_operand)
    question = f"{name} has {a} {obj}. {name} gets {b} more. How many {obj} does {name} have?"
    return question, f"{a} + {b} = {a + b}\n#### {a + b}"


def _sub(rng: random.Random, max_operand: int) -> Problem:
    name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    a = rng.randint(2, max_operand)
    b = rng.randint(1, a - 1)
    question = f"{name} has {a} {obj}. {name} gives away {b}. How many {obj} are left?"
    return question, f"{a} - {b} = {a - b}\n#### {a - b}"


def _mul(rng: random.Random, max_operand: int) -> Problem:
    name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    # Keep products small: a times table, not long multiplication.
    top = max(2, min(max_operand, 10))
    a, b = rng.randint(2, top), rng.randint(2, top)
    question = f"{name} has {a} bags with {b} {obj} each. How many {obj} does {name} have?"
    return question, f"{a} * {b} = {a * b}\n#### {a * b}"


OPERATIONS: dict[str, Callable[[random.Random, int], Problem]] = {
    "add": _add,
    "sub": _sub,
    "mul": _mul,
}


def generate(
    count: int,
    *,
    seed: int,
    max_operand: int = 20,
    operations: tuple[str, ...] = ("add", "sub"),
    exclude: set[str] | None = None,
) -> list[dict[str, str]]:
    """`count` distinct problems as {question, answer} rows, none of whose question is in
    `exclude`. Deterministic for a given seed and arguments."""
    unknown = sorted(set(operations) - set(OPERATIONS))
    if unknown or not operations:
        raise ValueError(f"unknown operations {unknown}; known: {sorted(OPERATIONS)}")
    rng = random.Random(seed)
    seen = set(exclude or ())
    rows: list[dict[str, str]] = []
    attempts = 0
    while len(rows) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise ValueError(
                f"cannot generate {count} distinct problems with max_operand={max_operand}; "
                "raise max_operand or ask for fewer"
            )
        question, answer = OPERATIONS[rng.choice(operations)](rng, max_operand)
        if question in seen:
            continue
        seen.add(question)
        rows.append({"question": question, "answer": answer})
    return rows


def generate_splits(
    *,
    train_size: int,
    test_size: int,
    max_operand: int,
    seed: int,
    operations: tuple[str, ...] = ("add", "sub"),
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Train and held-out test rows; test questions are disjoint from train questions."""
    train = generate(train_size, seed=seed, max_operand=max_operand, operations=operations)
    test = generate(
        test_size,
        seed=seed + 1_000_003,
        max_operand=max_operand,
        operations=operations,
        exclude={row["question"] for row in train},
    )
    return train, test


def preference_pairs(rows: list[dict[str, str]], *, seed: int) -> list[dict[str, str]]:
    """{prompt, chosen, rejected} rows (the ``preference`` format) from generated problems:
    the worked answer is chosen, the same working with a wrong result (off by 1 to 3) is
    rejected. Deterministic for a given seed."""
    rng = random.Random(seed)
    pairs = []
    for row in rows:
        working, number = row["answer"].rsplit("\n#### ", 1)
        wrong = str(int(number) + rng.choice((-3, -2, -1, 1, 2, 3)))
        head = working.rsplit("= ", 1)[0]
        pairs.append(
            {
                "prompt": row["question"],
                "chosen": row["answer"],
                "rejected": f"{head}= {wrong}\n#### {wrong}",
            }
        )
    return pairs
