"""GSM8K rows for the speed comparison: the real files when present, else synthetic rows of
GSM8K's length.

Throughput depends on how many tokens each example has, not on what they say, so when the
GSM8K files are not on the machine the benchmark uses generated rows whose question and answer
lengths follow GSM8K's train split (mean 235 and 287 characters, standard deviations 94 and
144, measured on the 7,473 rows of ``../shared/data/gsm8k/train.jsonl``). Every result
records which data it used and the mean tokens per example.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

# GSM8K train split, characters per field (see the module docstring).
QUESTION_CHARS = (235.0, 94.0)
ANSWER_CHARS = (287.0, 144.0)

_WORD_TEXT = (
    "Natalia sold clips to her friends in April and then half as many in May . "
    "Weng earns dollars an hour for babysitting . Yesterday she did minutes of work . "
    "Betty is saving money for a new wallet which costs . Her parents give her twice as much . "
    "James writes a page letter to different friends twice a week . How many pages does he "
    "write a year ? Mark has a garden with flowers . He planted plants of three colors . "
    "Albert is wondering how much pizza he can eat in one day . each large pizza has slices "
    "and each small pizza has slices . How many total apples did they pick altogether ?"
)
WORDS = tuple(_WORD_TEXT.split(" "))


def _length(rng: random.Random, mean_sd: tuple[float, float], low: int) -> int:
    mean, sd = mean_sd
    return max(low, round(rng.gauss(mean, sd)))


def _text(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        word = str(rng.randint(2, 999)) if rng.random() < 0.12 else rng.choice(WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)


def synthetic_rows(count: int, *, seed: int = 0) -> list[dict[str, str]]:
    """`count` rows {question, answer} with GSM8K's length distribution; deterministic."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        question = _text(rng, _length(rng, QUESTION_CHARS, 40)).rstrip(" ?.") + "?"
        answer_number = rng.randint(1, 500)
        steps = _text(rng, _length(rng, ANSWER_CHARS, 50) - 40)
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        answer = f"{steps} {a}+{b} = <<{a}+{b}={a + b}>>{a + b}.\n#### {answer_number}"
        rows.append({"question": question, "answer": answer})
    return rows


def long_rows(count: int, *, min_words: int, seed: int = 0) -> list[dict[str, str]]:
    """Rows whose answers run past `min_words` words (each word is at least one token), so
    that truncation to the sequence length makes every example exactly that long: the grid
    measures fixed shapes, the worst case the estimator prices."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        words = [rng.choice(WORDS) for _ in range(min_words)]
        rows.append(
            {
                "question": f"Problem {index}?",
                "answer": " ".join(words) + "\n#### 1",
            }
        )
    return rows


def load_rows(gsm8k_dir: Path | None, count: int, *, seed: int = 0) -> tuple[list[dict], str]:
    """The first `count` train rows of GSM8K from `gsm8k_dir` (train.jsonl), or synthetic
    rows when the directory is None or lacks the file. Returns (rows, description)."""
    if gsm8k_dir is not None and (gsm8k_dir / "train.jsonl").is_file():
        rows: list[dict] = []
        with (gsm8k_dir / "train.jsonl").open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    rows.append({"question": row["question"], "answer": row["answer"]})
                if len(rows) == count:
                    break
        return rows, f"gsm8k train.jsonl from {gsm8k_dir} (first {len(rows)} rows)"
    return synthetic_rows(count, seed=seed), f"synthetic GSM8K-length rows (seed {seed})"


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path
