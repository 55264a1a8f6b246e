"""Datasets from anywhere: every format reads local JSONL/JSON/Parquet/CSV files and globs
(with FILE:LINE errors and --skip-bad-rows), a `datasets` save_to_disk directory, a
dataset repository checked out locally and a hub id (through datasets.load_dataset, offline
here); Alpaca, ShareGPT and multi-turn chat rows; data.mixture; fingerprints of data
prepared before these options existed still match."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from sftkit.data.mixture import counts
from sftkit.data.prepare import fingerprint, load_split, prepare_data
from sftkit.errors import DataError, RecipeError
from sftkit.recipe.load import load_recipe_text


def recipe(registry, tmp_path: Path, fmt: str, **options):
    text = f"""
model: {{name_or_path: "builtin:tiny-llama"}}
strategy: {{name: full-sft}}
optimizer: {{name: adamw}}
data:
  format: {{name: {fmt}, options: {json.dumps(options)}}}
output_dir: {tmp_path / "run"}
"""
    return load_recipe_text(text, registry=registry)


def alpaca_rows(n: int, start: int = 0) -> list[dict]:
    return [
        {"instruction": f"Add {i} and 1.", "input": "" if i % 2 else f"x={i}", "output": f"{i + 1}"}
        for i in range(start, start + n)
    ]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- formats


def test_alpaca_input_is_part_of_the_prompt(registry, tmp_path):
    rows = alpaca_rows(4)
    rows[1]["system"] = "You are terse."
    path = write_jsonl(tmp_path / "alpaca.jsonl", rows)
    resolved = recipe(registry, tmp_path, "alpaca", train_file=str(path), dev_size=0)
    prepare_data(resolved)
    train = load_split(resolved, "train")
    assert train[0].prompt == "Add 0 and 1.\n\nx=0" and train[0].completion == "1"
    assert train[1].prompt == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Add 1 and 1."},  # empty input: the instruction alone
    ]


def test_sharegpt_speakers_become_roles_and_every_answer_trains(registry, tmp_path):
    row = {
        "system": "Be kind.",
        "conversations": [
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello!"},
            {"from": "human", "value": "Weather?"},
            {"from": "function_call", "value": '{"name": "weather"}'},
            {"from": "observation", "value": "sunny"},
            {"from": "gpt", "value": "Sunny."},
        ],
    }
    bad = {"conversations": [{"from": "narrator", "value": "x"}]}
    path = write_jsonl(tmp_path / "sg.jsonl", [row, bad])
    strict = recipe(registry, tmp_path, "sharegpt", train_file=str(path), dev_size=0)
    with pytest.raises(DataError, match=r"sg.jsonl:2: .*'narrator' is not a speaker"):
        prepare_data(strict)
    mapped = recipe(
        registry,
        tmp_path / "m",
        "sharegpt",
        train_file=str(path),
        dev_size=0,
        roles={"narrator": "user"},
        skip_bad_rows=True,
    )
    prepare_data(mapped)
    example = load_split(mapped, "train")[0]
    assert [m["role"] for m in example.prompt] == [
        "system", "user", "assistant", "user", "assistant", "tool"
    ]  # fmt: skip
    assert [m.get("train", False) for m in example.prompt] == [
        False, False, True, False, True, False
    ]  # fmt: skip
    assert example.completion == "Sunny." and example.trained_turns == 3


def test_chat_trains_every_turn_or_the_last_and_honours_train_false(registry, tmp_path):
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "B1", "train": False},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "C1"},
        {"role": "user", "content": "d"},
        {"role": "assistant", "content": "D1", "train": False},  # after the last trained turn
    ]
    path = write_jsonl(tmp_path / "c.jsonl", [{"messages": messages}])
    every = recipe(registry, tmp_path / "all", "chat", train_file=str(path), dev_size=0)
    prepare_data(every)
    example = load_split(every, "train")[0]
    assert example.completion == "C1" and len(example.prompt) == 5  # D1 and its question dropped
    assert [m.get("train", False) for m in example.prompt] == [False, True, False, False, False]
    last = recipe(
        registry, tmp_path / "last", "chat", train_file=str(path), dev_size=0, train_on="last"
    )
    with pytest.raises(DataError, match="every assistant message has train: false"):
        prepare_data(last)
    bad = write_jsonl(
        tmp_path / "bad.jsonl",
        [{"messages": [{"role": "user", "content": "x", "train": True}]}],
    )
    with pytest.raises(DataError, match=r"bad.jsonl:1: 'messages' has no assistant"):
        prepare_data(recipe(registry, tmp_path / "b", "chat", train_file=str(bad)))


def test_a_source_and_a_train_file_exclude_each_other(registry, tmp_path):
    with pytest.raises(RecipeError, match="set source or train_file, not both"):
        recipe(registry, tmp_path, "alpaca", source="a/b", train_file="x.jsonl")
    with pytest.raises(RecipeError, match="set source"):
        recipe(registry, tmp_path, "alpaca")


# --------------------------------------------------------------------------- local files


def test_json_csv_parquet_and_globs_keep_file_line_errors(registry, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    shards = tmp_path / "shards"
    shards.mkdir()
    write_jsonl(shards / "part-0.jsonl", alpaca_rows(3))
    (shards / "part-1.json").write_text(
        "[\n" + ",\n".join(json.dumps(r) for r in alpaca_rows(3, 3)) + "\n]\n"
    )
    with (shards / "part-2.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["instruction", "input", "output"])
        writer.writeheader()
        writer.writerows(alpaca_rows(3, 6))
    pq.write_table(pa.Table.from_pylist(alpaca_rows(3, 9)), shards / "part-3.parquet")
    resolved = recipe(registry, tmp_path, "alpaca", train_file=str(shards / "part-*"), dev_size=2)
    prepared = prepare_data(resolved)
    assert prepared.counts["train"] + prepared.counts["dev"] == 12
    assert len({e.id for e in load_split(resolved, "train")}) == 10  # unique across files
    assert len(prepared.manifest["sources"]) == 4

    # a bad row in the JSON array and in the CSV, each at its line
    rows = alpaca_rows(2)
    del rows[1]["output"]
    (shards / "part-1.json").write_text("[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n")
    (shards / "part-2.csv").write_text("instruction,input,output\nhi,,\n")
    again = recipe(
        registry, tmp_path / "b", "alpaca", train_file=str(shards / "part-*"), dev_size=0
    )
    with pytest.raises(DataError) as info:
        prepare_data(again)
    assert f"{shards / 'part-1.json'}:3: missing key 'output'" in str(info.value)
    assert f"{shards / 'part-2.csv'}:2: 'output' is empty" in str(info.value)
    skipped = prepare_data(again, skip_bad_rows=True)
    assert skipped.manifest["skipped_rows"] == 2
    with pytest.raises(DataError, match="no file matches"):
        prepare_data(recipe(registry, tmp_path / "c", "alpaca", train_file=str(tmp_path / "*.x")))


def test_a_source_file_is_the_train_split_and_test_file_the_test(registry, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", alpaca_rows(5))
    test = write_jsonl(tmp_path / "held.jsonl", alpaca_rows(2, 50))
    resolved = recipe(
        registry, tmp_path, "alpaca", source=str(train), test_file=str(test), dev_size=1
    )
    assert prepare_data(resolved).counts == {"train": 4, "dev": 1, "test": 2}


# --------------------------------------------------------------------------- datasets


def test_a_datasets_save_to_disk_directory(registry, tmp_path):
    datasets = pytest.importorskip("datasets")
    directory = tmp_path / "saved"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(alpaca_rows(6)),
            "test": datasets.Dataset.from_list(alpaca_rows(2, 100)),
        }
    ).save_to_disk(str(directory))
    resolved = recipe(registry, tmp_path, "alpaca", source=str(directory), dev_size=1)
    prepared = prepare_data(resolved)
    assert prepared.counts == {"train": 5, "dev": 1, "test": 2}
    assert prepared.manifest["sources"][0]["source"] == f"disk:{directory}[train]"


def test_a_dataset_repository_checked_out_locally(registry, tmp_path):
    """A hub-style repository (README.md and data files in its own layout) goes through
    datasets.load_dataset, as the hub id would; offline."""
    pytest.importorskip("datasets")
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "README.md").write_text("# a dataset\n")
    rows = [
        {"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}]}
        for i in range(5)
    ]
    write_jsonl(repo / "data" / "sharegpt.jsonl", rows)
    resolved = recipe(registry, tmp_path, "sharegpt", source=str(repo), dev_size=1)
    prepared = prepare_data(resolved)
    assert prepared.counts == {"train": 4, "dev": 1, "test": 0}
    assert prepared.manifest["sources"][0]["source"].startswith("hub:")


def test_a_hub_id_with_config_and_split(registry, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs.get("revision")))
        return datasets.DatasetDict(
            {
                "train_sft": datasets.Dataset.from_list(alpaca_rows(4)),
                "test_sft": datasets.Dataset.from_list(alpaca_rows(1, 9)),
            }
        )

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    resolved = recipe(
        registry,
        tmp_path,
        "alpaca",
        source="tatsu-lab/alpaca",
        config="default",
        train_split="train_sft",
        test_split="test_sft",
        dev_size=1,
    )
    prepared = prepare_data(resolved)
    assert calls == [("tatsu-lab/alpaca", "default", None)]  # loaded once for both splits
    assert prepared.counts == {"train": 3, "dev": 1, "test": 1}
    # a bad hub row is named by its dataset, split and row
    rows = alpaca_rows(3)
    rows[2]["output"] = 5
    monkeypatch.setattr(
        datasets,
        "load_dataset",
        lambda *a, **k: datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[2:])}),
    )
    bad = recipe(registry, tmp_path / "b", "alpaca", train_file="tatsu-lab/alpaca")
    with pytest.raises(
        DataError, match=r"tatsu-lab/alpaca\[train\]:row 1: 'output' must be a string"
    ):
        prepare_data(bad)


def test_a_missing_local_path_is_not_taken_for_a_hub_id(registry, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        prepare_data(recipe(registry, tmp_path, "alpaca", train_file="./nope/data.jsonl"))


# --------------------------------------------------------------------------- mixture


def test_mixture_counts():
    assert counts([100, 10], weights=[1, 1], samples=None, total=None) == [10, 10]
    assert counts([100, 10], weights=[3, 1], samples=None, total=None) == [30, 10]
    assert counts([100, 10], weights=[1, 2], samples=None, total=7) == [2, 5]
    assert counts([5, 5], weights=None, samples=[3, 12], total=None) == [3, 12]


def test_mixture_of_formats_by_samples_is_seeded(registry, tmp_path):
    alpaca = write_jsonl(tmp_path / "a.jsonl", alpaca_rows(10))
    chat = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": f"hi {i}"},
                    {"role": "assistant", "content": "yo"},
                ]
            }
            for i in range(3)
        ],
    )

    def mixed(seed: int, out: str):
        text = f"""
model: {{name_or_path: "builtin:tiny-llama"}}
strategy: {{name: full-sft}}
optimizer: {{name: adamw}}
data:
  mixture:
    seed: {seed}
    dev_size: 2
    datasets:
      - {{format: {{name: alpaca, options: {{train_file: "{alpaca}"}}}}, samples: 4}}
      - {{format: {{name: chat, options: {{train_file: "{chat}"}}}}, samples: 5}}
output_dir: {tmp_path / out}
"""
        return load_recipe_text(text, registry=registry)

    first = mixed(0, "r1")
    prepared = prepare_data(first)
    assert prepared.counts["train"] + prepared.counts["dev"] == 9
    assert prepared.manifest["format"] == "mixture"
    assert [m["taken"] for m in prepared.manifest["mixture"]] == [4, 5]
    ids = [e.id for e in load_split(first, "train") + load_split(first, "dev")]
    assert len(ids) == len(set(ids)) and sum(i.startswith("1.chat/") for i in ids) == 5
    assert any("#1" in i for i in ids)  # chat has 3 rows: 5 samples repeat some
    again = prepare_data(mixed(0, "r2"))
    assert again.manifest["fingerprint"] == prepared.manifest["fingerprint"]
    assert (again.directory / "train.jsonl").read_text() == (
        prepared.directory / "train.jsonl"
    ).read_text()
    assert fingerprint(mixed(1, "r3")) != fingerprint(first)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (
            "{format: {name: gsm8k}, mixture: {datasets: [{format: {name: gsm8k}, weight: 1}]}}",
            "set data.format or data.mixture, not both",
        ),
        (
            "{mixture: {datasets: [{format: {name: gsm8k}, weight: 1}, "
            "{format: {name: gsm8k}, samples: 3}]}}",
            "every one a sample count",
        ),
        ("{mixture: {datasets: [{format: {name: gsm8k}}]}}", "either a weight or a number"),
    ],
)
def test_mixture_problems(registry, data, problem):
    text = f"""
model: {{name_or_path: "builtin:tiny-llama"}}
strategy: {{name: full-sft}}
optimizer: {{name: adamw}}
data: {data}
"""
    with pytest.raises(RecipeError, match=problem):
        load_recipe_text(text, registry=registry)


# --------------------------------------------------------------------------- compatibility


def test_fingerprints_of_earlier_preparations_still_match(registry, tmp_path):
    """The values sftkit 0.1 (before sources) wrote to manifests for these recipes: a run
    resumed after the upgrade reuses its prepared data."""
    gsm = recipe(registry, Path("/r"), "gsm8k", source="/data/gsm8k", dev_size=4)
    assert fingerprint(gsm) == "695c25996c393c43"
    assert fingerprint(recipe(registry, Path("/r"), "gsm8k")) == "0a1f71dc6dd82b07"
    pc = recipe(registry, Path("/r"), "prompt-completion", train_file="/data/pc.jsonl")
    assert fingerprint(pc) == "7057491b6a80587d"
    pc = recipe(
        registry,
        Path("/r"),
        "prompt-completion",
        train_file="/data/pc.jsonl",
        test_file="/data/t.jsonl",
    )
    assert fingerprint(pc) == "d71b5e968d31fd1c"
