"""Data preparation: formats, row validation (file:line), skipping bad rows, the seeded dev
split, the test-in-train leak check and the manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from sftkit.cli import run_cli
from sftkit.data.example import Example
from sftkit.data.formats import final_answer
from sftkit.data.prepare import load_split, prepare_data, split_dev
from sftkit.data.readers import RowError
from sftkit.data.synthetic import generate, generate_splits
from sftkit.errors import DataError
from sftkit.recipe.load import load_recipe_text

SHARED_GSM8K = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "gsm8k"


def gsm_row(i: int, answer: int | None = None) -> str:
    answer = i * 3 if answer is None else answer
    return json.dumps(
        {
            "question": f"Sam has {i} boxes of 3 pens. How many pens?",
            "answer": f"Sam has {i} * 3 = <<{i}*3={answer}>>{answer} pens.\n#### {answer:,}",
        }
    )


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


def recipe(registry, tmp_path: Path, fmt: str, **options) -> object:
    opts = json.dumps(options)
    text = f"""
model: {{name_or_path: "builtin:tiny-llama"}}
strategy: {{name: full-sft}}
optimizer: {{name: adamw}}
data:
  format: {{name: {fmt}, options: {opts}}}
output_dir: {tmp_path / "run"}
"""
    return load_recipe_text(text, registry=registry)


def test_gsm8k_local_prepares_splits_and_manifest(registry, tmp_path, gsm_dir):
    resolved = recipe(registry, tmp_path, "gsm8k", source=str(gsm_dir), dev_size=4)
    prepared = prepare_data(resolved)
    assert prepared.counts == {"train": 16, "dev": 4, "test": 5}
    manifest = json.loads((prepared.directory / "manifest.json").read_text())
    for name, info in manifest["files"].items():
        digest = hashlib.sha256((prepared.directory / name).read_bytes()).hexdigest()
        assert info["sha256"] == digest
    sources = {s["split"]: s for s in manifest["sources"]}
    assert (
        sources["train"]["sha256"]
        == hashlib.sha256((gsm_dir / "train.jsonl").read_bytes()).hexdigest()
    )
    test = load_split(resolved, "test")
    assert (
        test[0]
        == Example(
            "test-00000",
            "Sam has 100 boxes of 3 pens. How many pens?",
            "Sam has 100 * 3 = 300 pens.\n#### 300",  # calculator annotation stripped, 1,000-style commas dropped
            "300",
        )
    )
    ids = {e.id for e in load_split(resolved, "train")} | {
        e.id for e in load_split(resolved, "dev")
    }
    assert len(ids) == 20


def test_prepare_reuses_and_refuses_other_options(registry, tmp_path, gsm_dir):
    first = prepare_data(recipe(registry, tmp_path, "gsm8k", source=str(gsm_dir), dev_size=4))
    again = prepare_data(recipe(registry, tmp_path, "gsm8k", source=str(gsm_dir), dev_size=4))
    assert again.reused and again.manifest["fingerprint"] == first.manifest["fingerprint"]
    other = recipe(registry, tmp_path, "gsm8k", source=str(gsm_dir), dev_size=5)
    with pytest.raises(DataError, match="other format options"):
        prepare_data(other)
    assert prepare_data(other, force=True).counts["dev"] == 5


def test_malformed_rows_are_reported_with_file_and_line(registry, tmp_path, gsm_dir):
    lines = [gsm_row(1), "{not json", json.dumps({"question": "q?"}), gsm_row(2)]
    lines.append(json.dumps({"question": "q?", "answer": "no final line"}))
    train = write_lines(gsm_dir / "train.jsonl", lines)
    resolved = recipe(registry, tmp_path, "gsm8k", source=str(gsm_dir), dev_size=0)
    with pytest.raises(DataError) as info:
        prepare_data(resolved)
    message = str(info.value)
    assert "3 malformed rows" in message
    assert f"{train}:2: not valid JSON" in message
    assert f"{train}:3: missing key 'answer'" in message
    assert f"{train}:5: 'answer' does not end with a line '#### <number>'" in message
    assert "--skip-bad-rows" in message


def test_skip_bad_rows_counts_them(registry, tmp_path, gsm_dir):
    write_lines(gsm_dir / "train.jsonl", [gsm_row(1), "[1, 2]", gsm_row(2), "", gsm_row(3)])
    resolved = recipe(registry, tmp_path, "gsm8k", source=str(gsm_dir), dev_size=1)
    prepared = prepare_data(resolved, skip_bad_rows=True)
    assert prepared.counts["train"] + prepared.counts["dev"] == 3
    assert prepared.manifest["skipped_rows"] == 1
    assert prepared.manifest["skipped"][0].endswith(":2: expected a JSON object, found list")
    assert any("skipped 1 malformed row" in w for w in prepared.warnings)


def test_prepare_data_cli_exit_codes(tmp_path, gsm_dir, capsys):
    write_lines(gsm_dir / "train.jsonl", [gsm_row(i) for i in range(1, 6)] + ["oops"])
    path = tmp_path / "r.yaml"
    path.write_text(
        "model: {name_or_path: 'builtin:tiny-llama'}\nstrategy: {name: full-sft}\n"
        "optimizer: {name: adamw}\n"
        f"data: {{format: {{name: gsm8k, options: {{source: '{gsm_dir}', dev_size: 1}}}}}}\n"
        f"output_dir: {tmp_path / 'run'}\n"
    )
    assert run_cli(["prepare-data", str(path)]) == 2
    assert "train.jsonl:6: not valid JSON" in capsys.readouterr().err
    assert run_cli(["prepare-data", str(path), "--skip-bad-rows"]) == 0
    out = capsys.readouterr().out
    assert "prepared:" in out and "train 4, dev 1, test 5" in out and "skipped 1" in out


def test_leak_warning_when_test_question_is_in_train(registry, tmp_path, gsm_dir):
    write_lines(gsm_dir / "test.jsonl", [gsm_row(3), gsm_row(200)])
    resolved = recipe(registry, tmp_path, "gsm8k", source=str(gsm_dir), dev_size=2)
    prepared = prepare_data(resolved)
    assert prepared.manifest["test_in_train"] == 1
    assert any("1 test question also appears in train/dev" in w for w in prepared.warnings)


def test_dev_split_is_seeded_and_reproducible():
    rows = [Example(f"train-{i:05d}", f"q{i}", f"a{i}") for i in range(50)]
    train_a, dev_a = split_dev(rows, dev_size=10, seed=7)
    train_b, dev_b = split_dev(rows, dev_size=10, seed=7)
    _, dev_c = split_dev(rows, dev_size=10, seed=8)
    assert dev_a == dev_b and train_a == train_b
    assert dev_a != dev_c
    assert len(train_a) == 40 and not {e.id for e in dev_a} & {e.id for e in train_a}
    with pytest.raises(DataError, match="dev_size=50"):
        split_dev(rows, dev_size=50, seed=0)


def test_parquet_source(registry, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    directory = tmp_path / "pq" / "main"
    directory.mkdir(parents=True)
    rows = [json.loads(gsm_row(i)) for i in range(1, 6)]
    pq.write_table(pa.Table.from_pylist(rows), directory / "train-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(rows[:2]), directory / "test-00000-of-00001.parquet")
    resolved = recipe(registry, tmp_path, "gsm8k", source=str(tmp_path / "pq"), dev_size=1)
    assert prepare_data(resolved).counts == {"train": 4, "dev": 1, "test": 2}


def test_prompt_completion_and_chat_formats(registry, tmp_path):
    pc = write_lines(
        tmp_path / "pc.jsonl",
        [json.dumps({"prompt": f"2+{i}?", "completion": f"#### {2 + i}"}) for i in range(5)],
    )
    resolved = recipe(registry, tmp_path, "prompt-completion", train_file=str(pc), dev_size=1)
    prepare_data(resolved)
    train = load_split(resolved, "train")
    # generic formats know nothing of '#### N': the gsm8k evaluator reads it off the answer
    from sftkit.evaluation.gsm8k import _gold

    assert train[0].prompt == "2+0?" and train[0].reference_answer is None
    assert _gold(train[0]) == "2"
    assert load_split(resolved, "test") == []

    chat_lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": f"3*{i}?"},
                    {"role": "assistant", "content": f"#### {3 * i}"},
                ]
            }
        )
        for i in range(4)
    ]
    chat_lines.append(json.dumps({"messages": [{"role": "user", "content": "hi"}]}))
    chat = write_lines(tmp_path / "chat.jsonl", chat_lines)
    bad = recipe(registry, tmp_path / "c1", "chat", train_file=str(chat), dev_size=0)
    with pytest.raises(DataError, match=r"chat.jsonl:5: .messages. has no assistant message"):
        prepare_data(bad)
    ok = recipe(
        registry, tmp_path / "c2", "chat", train_file=str(chat), dev_size=0, skip_bad_rows=True
    )
    prepare_data(ok)
    example = load_split(ok, "train")[1]
    assert example.prompt == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "3*1?"},
    ]
    assert example.completion == "#### 3" and example.reference_answer is None
    assert _gold(example) == "3"


def test_missing_file_is_a_data_error(registry, tmp_path):
    resolved = recipe(
        registry, tmp_path, "prompt-completion", train_file=str(tmp_path / "no.jsonl")
    )
    with pytest.raises(DataError, match="does not exist"):
        prepare_data(resolved)


def test_hub_id_offline_is_a_clear_error(registry, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    resolved = recipe(registry, tmp_path, "gsm8k", source="nobody/no-such-dataset")
    with pytest.raises(DataError, match="cannot load 'nobody/no-such-dataset'"):
        prepare_data(resolved)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("a\n#### 72", ("a", "72")), ("#### -3", ("", "-3")), ("x\n#### 1,234", ("x", "1234"))],
)
def test_final_answer(answer, expected):
    assert final_answer(answer) == expected


def test_final_answer_rejects_missing_marker():
    with pytest.raises(RowError):
        final_answer("the answer is 4")


def test_synthetic_is_deterministic_and_test_is_held_out():
    train, test = generate_splits(train_size=300, test_size=50, max_operand=10, seed=3)
    again, _ = generate_splits(train_size=300, test_size=50, max_operand=10, seed=3)
    assert train == again
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    for row in train + test:
        reasoning, number = final_answer(row["answer"])
        left, _, result = reasoning.partition(" = ")
        assert int(eval(left)) == int(result) == int(number)  # the arithmetic is right
    assert {r["answer"].split()[1] for r in generate(200, seed=1, operations=("mul",))} == {"*"}


def test_synthetic_format_through_prepare(registry, tmp_path):
    resolved = recipe(
        registry, tmp_path, "synthetic-arithmetic", train_size=40, test_size=10, dev_size=5
    )
    prepared = prepare_data(resolved)
    assert prepared.counts == {"train": 35, "dev": 5, "test": 10}
    assert prepared.manifest["test_in_train"] == 0


@pytest.mark.skipif(not SHARED_GSM8K.is_dir(), reason="no local GSM8K copy")
def test_real_gsm8k_local_copy(registry, tmp_path):
    resolved = recipe(registry, tmp_path, "gsm8k", source=str(SHARED_GSM8K), dev_size=200)
    prepared = prepare_data(resolved)
    assert prepared.counts == {"train": 7273, "dev": 200, "test": 1319}
    assert prepared.manifest["skipped_rows"] == 0
    digests = {s["split"]: s["sha256"] for s in prepared.manifest["sources"]}
    assert digests["train"].startswith("17f347dc51477c50")  # as published in its README
    assert digests["test"].startswith("3730d312f6e3440")
    for example in load_split(resolved, "test")[:50]:
        assert example.completion.endswith(f"#### {example.reference_answer}")
        assert "<<" not in example.completion
