"""Fault injection on the data and the recipe: preparing into the source, a source changed
after preparing, a prepared file edited, every row duplicated, an enormous row, a source that
is /dev/zero or a FIFO, a file over the size limit, and values that used to pass validation
and fail later. Each ends in a `DataError`/`RecipeError` (exit 2) that says what to do, with
nothing written over, or in a warning."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from sftkit.cli import run_cli
from sftkit.data.prepare import prepare_data
from sftkit.errors import DataError, RecipeError
from sftkit.recipe.load import load_recipe_text


def gsm_row(i: int, question: str | None = None) -> str:
    q = question or f"Sam has {i} boxes of 3 pens. How many pens?"
    return json.dumps({"question": q, "answer": f"Sam has {i * 3} pens.\n#### {i * 3}"})


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def gsm_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "gsm8k"
    directory.mkdir()
    write_lines(directory / "train.jsonl", [gsm_row(i) for i in range(1, 21)])
    write_lines(directory / "test.jsonl", [gsm_row(i) for i in range(100, 105)])
    return directory


def recipe(registry: Any, tmp_path: Path, source: Path, **data: Any) -> Any:
    extra = "".join(f"\n  {key}: {json.dumps(value)}" for key, value in data.items())
    text = f"""
model: {{name_or_path: "builtin:tiny-llama"}}
strategy: {{name: full-sft}}
optimizer: {{name: adamw}}
data:
  format: {{name: gsm8k, options: {{source: "{source}", dev_size: 2}}}}{extra}
output_dir: {tmp_path / "run"}
"""
    return load_recipe_text(text, registry=registry)


def digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


@pytest.fixture
def deadline() -> Any:
    """Fail instead of hanging if a read blocks (a FIFO) or never ends (/dev/zero)."""

    def expired(signum: int, frame: Any) -> None:
        raise AssertionError("reading the source did not stop")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_preparing_into_the_source_directory_is_refused(registry, tmp_path, gsm_dir):
    before = digests(gsm_dir)
    with pytest.raises(DataError, match=r"where the source .* lives") as info:
        prepare_data(recipe(registry, tmp_path, gsm_dir, prepared_dir=str(gsm_dir)))
    assert "data.prepared_dir" in str(info.value)  # what to do
    assert digests(gsm_dir) == before  # the raw files are untouched


def test_a_source_changed_after_preparing_is_not_reused(registry, tmp_path, gsm_dir):
    resolved = recipe(registry, tmp_path, gsm_dir)
    assert prepare_data(resolved).counts["train"] == 18
    write_lines(gsm_dir / "train.jsonl", [gsm_row(i) for i in range(1, 11)])  # shrunk
    with pytest.raises(DataError, match=r"has changed since .* prepared") as info:
        prepare_data(resolved)
    assert "--force" in str(info.value)
    assert prepare_data(resolved, force=True).counts["train"] == 8
    assert prepare_data(resolved).reused  # up to date again


def test_an_edited_prepared_file_is_not_reused(registry, tmp_path, gsm_dir):
    resolved = recipe(registry, tmp_path, gsm_dir)
    prepared = prepare_data(resolved)
    train = prepared.split_path("train")
    train.write_text(train.read_text().replace("Sam", "Pam"))
    with pytest.raises(DataError, match=r"train\.jsonl has changed since it was prepared"):
        prepare_data(resolved)


def test_duplicates_and_dev_in_train_are_counted_and_warned(registry, tmp_path, gsm_dir):
    rows = [gsm_row(i) for i in range(1, 11)]
    write_lines(gsm_dir / "train.jsonl", rows + rows)  # every row twice
    prepared = prepare_data(recipe(registry, tmp_path, gsm_dir))
    assert prepared.manifest["duplicates_in_train"] == 8  # 18 train rows, 10 questions
    assert prepared.manifest["dev_in_train"] == 2  # every dev question is also in train
    assert any("8 train questions are a repeat" in w for w in prepared.warnings)
    assert any("2 of 2 dev questions also appear in train" in w for w in prepared.warnings)


def test_an_enormous_row_is_refused_before_it_is_read_whole(registry, tmp_path, gsm_dir):
    huge = gsm_row(1, question="How many? " * 600_000)  # a 6 MB question, over the 4 MiB default
    write_lines(gsm_dir / "train.jsonl", [gsm_row(i) for i in range(1, 6)] + [huge])
    with pytest.raises(
        DataError, match=r"train.jsonl:6: a row of more than 4,194,304 bytes"
    ) as info:
        prepare_data(recipe(registry, tmp_path, gsm_dir))
    assert "data.max_row_bytes" in str(info.value)
    # The limit is the recipe's to set.
    small = recipe(registry, tmp_path, gsm_dir, max_row_bytes=60)
    with pytest.raises(DataError, match=r"train.jsonl:1: a row of more than 60 bytes"):
        prepare_data(small)


def test_a_file_over_the_size_limit_is_refused(registry, tmp_path, gsm_dir):
    with pytest.raises(DataError, match=r"over data\.max_file_bytes"):
        prepare_data(recipe(registry, tmp_path, gsm_dir, max_file_bytes=1000))


def test_dev_zero_as_a_source_is_refused(registry, tmp_path, gsm_dir, deadline):
    (gsm_dir / "train.jsonl").unlink()
    (gsm_dir / "train.jsonl").symlink_to("/dev/zero")
    with pytest.raises(DataError, match="is a character device, not a regular file"):
        prepare_data(recipe(registry, tmp_path, gsm_dir))


def test_a_fifo_as_a_source_is_refused_without_blocking(registry, tmp_path, deadline):
    source = tmp_path / "pc.jsonl"
    os.mkfifo(source)
    text = f"""
model: {{name_or_path: "builtin:tiny-llama"}}
strategy: {{name: full-sft}}
optimizer: {{name: adamw}}
data:
  format: {{name: prompt-completion, options: {{train_file: "{source}", dev_size: 1}}}}
output_dir: {tmp_path / "run"}
"""
    with pytest.raises(DataError, match=r"is a FIFO \(named pipe\), not a regular file"):
        prepare_data(load_recipe_text(text, registry=registry))


def test_prepare_data_cli_exits_2_and_says_what_to_do(tmp_path, gsm_dir, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(
        "model: {name_or_path: 'builtin:tiny-llama'}\nstrategy: {name: full-sft}\n"
        "optimizer: {name: adamw}\n"
        f"data: {{format: {{name: gsm8k, options: {{source: '{gsm_dir}', dev_size: 1}}}}, "
        f"prepared_dir: '{gsm_dir}'}}\n"
        f"output_dir: {tmp_path / 'run'}\n"
    )
    assert run_cli(["prepare-data", str(path)]) == 2
    assert "Set data.prepared_dir to another directory" in capsys.readouterr().err


def test_values_that_used_to_pass_validation(registry, tmp_path):
    text = (Path(__file__).resolve().parent.parent / "recipes" / "quickstart.yaml").read_text()
    bad = [
        "optimizer.options.lr=.inf",  # trained to NaN and ended "completed"
        "training.seed=-1",
        "training.max_steps=true",  # taken as 1
        "training.warmup_ratio=.nan",
        "optimizer.options.weight_decay=false",
    ]
    with pytest.raises(RecipeError) as info:
        load_recipe_text(text, bad, registry=registry)
    paths = {p.path for p in info.value.problems}
    assert paths == {
        "optimizer.options.lr",
        "training.seed",
        "training.max_steps",
        "training.warmup_ratio",
        "optimizer.options.weight_decay",
    }
    messages = str(info.value)
    assert "finite number" in messages and "not true or false" in messages
    # Booleans still go where booleans belong; large valid seeds pass.
    load_recipe_text(text, ["data.packing=true", "training.seed=4294967295"], registry=registry)
    with pytest.raises(RecipeError, match=r"training\.seed"):
        load_recipe_text(text, ["training.seed=4294967296"], registry=registry)
