"""`sftkit run` end to end on a CPU with a tiny Llama: every strategy with a matching
optimizer, the run directory, reloading the result, resuming, refusing to overwrite, the
memory pre-flight, and the lifecycle hooks."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")

from tiny_models import config_dir, recipe_text, saved_model_dir  # noqa: E402

from sftkit.cli import run_cli  # noqa: E402
from sftkit.data.char_tokenizer import build_char_tokenizer  # noqa: E402
from sftkit.hookspecs import hookimpl  # noqa: E402
from sftkit.modeling import load_trained  # noqa: E402
from sftkit.recipe.load import load_recipe_text  # noqa: E402
from sftkit.testing import registered  # noqa: E402
from sftkit.training.runner import run_recipe  # noqa: E402

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
PROMPT = "<s>Question: Ann has 3 pens. Ann gets 4 more. How many pens does Ann have?\nAnswer:\n"


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"config": config_dir(root / "config"), "saved": saved_model_dir(root / "saved")}


def events(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def losses(run_dir: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in events(run_dir) if "loss" in e}


def logits(model: Any, tokenizer: Any) -> Any:
    ids = tokenizer(PROMPT, add_special_tokens=False, return_tensors="pt")["input_ids"]
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


STRATEGIES = [
    # (strategy, its options, optimizer, its options, model: random_init from a config, or a
    # saved directory loaded like a hub download)
    ("full-sft", {}, "adamw", {"lr": 3e-3}, "config"),
    ("lora", {"rank": 8, "alpha": 16}, "adamw-8bit", {"lr": 1e-2, "min_8bit_size": 256}, "config"),
    (
        "qlora-nf4",
        {"rank": 8, "alpha": 16, "compute_dtype": "float32"},
        "paged-adamw-8bit",
        {"lr": 1e-2, "min_8bit_size": 256},
        "saved",
    ),
    ("lora-8bit", {"rank": 8, "alpha": 16}, "adamw", {"lr": 1e-2}, "saved"),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("strategy", "s_opts", "optimizer", "o_opts", "model"),
    STRATEGIES,
    ids=[s[0] for s in STRATEGIES],
)
def test_run_every_strategy(registry, models, tmp_path, strategy, s_opts, optimizer, o_opts, model):
    run_dir = tmp_path / "run"
    text = recipe_text(
        models[model],
        run_dir,
        strategy=strategy,
        strategy_options=s_opts,
        optimizer=optimizer,
        optimizer_options=o_opts,
        random_init=model == "config",
        max_steps=4,
        save_steps=2,
    )
    result = run_recipe(load_recipe_text(text, registry=registry))
    assert result.status == "completed"

    # Loss: finite and falling on the repeated batch (8 train rows, micro-batch 8).
    by_step = losses(run_dir)
    assert sorted(by_step) == [1, 2, 3, 4]
    assert all(math.isfinite(v) for v in by_step.values())
    assert by_step[4] < by_step[1]
    train_events = [e for e in events(run_dir) if "loss" in e]
    assert all(e["tokens_per_second"] > 0 and "learning_rate" in e for e in train_events)

    # The run directory, as documented.
    for name in ("recipe.yaml", "memory.json", "environment.json", "run.json"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert {p.name for p in (run_dir / "checkpoints").glob("checkpoint-*")} == {
        "checkpoint-2",
        "checkpoint-4",
    }
    adapters = strategy != "full-sft"
    for directory in (run_dir / "checkpoints" / "checkpoint-4", run_dir / "final"):
        assert (directory / "adapter_config.json").is_file() == adapters
        assert (directory / "model.safetensors").is_file() == (not adapters)
    assert (run_dir / "final" / "tokenizer.json").is_file()
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "completed" and run["steps"] == 4
    assert run["strategy"] == strategy and run["optimizer"] == optimizer
    assert math.isclose(run["final_loss"], by_step[4])
    environment = json.loads((run_dir / "environment.json").read_text())
    assert environment["device"] == "cpu" and environment["trl"]
    memory = json.loads((run_dir / "memory.json").read_text())
    assert memory["peak_bytes"] > 0

    # The trained optimizer is the plugin's object, not one the trainer chose by name.
    assert (
        type(result.context.trainer.optimizer.optimizer).__name__
        == {
            "adamw": "AdamW",
            "adamw-8bit": "AdamW8bit",
            "paged-adamw-8bit": "PagedAdamW8bit",
        }[optimizer]
    )

    # Reloading: base (rebuilt from the run directory) + final adapter computes what the
    # trained model computed.
    trained = result.context.trainer.model
    tokenizer = result.context.tokenizer
    expected = logits(trained, tokenizer)
    model_, tokenizer_ = load_trained(run_dir)
    assert not model_.training
    assert tokenizer_.eos_token == "</s>"
    got = logits(model_, tokenizer_)
    # Quantized runs train bf16 adapters (TRL's QLoRA recipe); reloaded ones compute in fp32.
    tolerance = 5e-2 if strategy in ("qlora-nf4", "lora-8bit") else 1e-4
    assert torch.allclose(got, expected, atol=tolerance), (got - expected).abs().max()


@pytest.mark.slow
def test_batches_train_only_the_completions(registry, models, tmp_path):
    """Through TRL's dataset preparation and collator: prompt and padding carry -100."""
    text = recipe_text(models["config"], tmp_path / "run", max_steps=1, micro_batch_size=4)
    result = run_recipe(load_recipe_text(text, registry=registry))
    trainer, tokenizer = result.context.trainer, result.context.tokenizer
    batch = next(iter(trainer.get_train_dataloader()))
    for ids, labels, mask in zip(
        batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True
    ):
        length = int(mask.sum())
        trained = (labels != -100).nonzero().flatten().tolist()
        assert trained and trained == list(range(trained[0], length))  # one suffix, no pad
        answer = tokenizer.decode(ids[trained[0] : length])
        assert answer.endswith("</s>") and "####" in answer
        assert tokenizer.decode(ids[: trained[0]]).endswith("Answer:\n")


class Recorder:
    def __init__(self, stop_at: int | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.stop_at = stop_at

    @hookimpl
    def on_train_start(self, run: Any) -> None:
        self.calls.append(("start", run.run_dir))

    @hookimpl
    def on_log(self, run: Any, logs: dict[str, float]) -> None:
        self.calls.append(("log", dict(logs)))
        if self.stop_at is not None and run.state.global_step >= self.stop_at:
            raise KeyboardInterrupt("stopped by the test")

    @hookimpl
    def on_train_end(self, run: Any, metrics: dict[str, float]) -> None:
        self.calls.append(("end", dict(metrics)))


def final_weights(run_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "final" / "model.safetensors"))


@pytest.mark.slow
def test_resume_continues_where_it_stopped(models, tmp_path, monkeypatch):
    def recipe(run_dir: Path, registry: Any) -> Any:
        text = recipe_text(models["config"], run_dir, max_steps=4, save_steps=2, micro_batch_size=4)
        return load_recipe_text(text, registry=registry)

    # Reference: four uninterrupted steps, with a plugin recording the lifecycle hooks.
    recorder = Recorder()
    with registered(recorder) as registry:
        run_recipe(recipe(tmp_path / "ref", registry))
    kinds = [kind for kind, _ in recorder.calls]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("log") >= 4
    assert recorder.calls[0][1] == tmp_path / "ref"
    assert "train_loss" in recorder.calls[-1][1]
    reference = losses(tmp_path / "ref")

    # Interrupted after step 3 (checkpoint-2 is the last one saved) ...
    stopper = Recorder(stop_at=3)
    with registered(stopper) as registry, pytest.raises(KeyboardInterrupt):
        run_recipe(recipe(tmp_path / "cut", registry))
    cut = tmp_path / "cut"
    assert json.loads((cut / "run.json").read_text())["status"] == "interrupted"
    # Same seed, same first steps: seeded runs reproduce on CPU.
    assert [losses(cut)[s] for s in (1, 2)] == [reference[1], reference[2]]

    # ... then resumed: same data order and optimizer state, so the same steps 3 and 4; the
    # tokenized train split is the one the run stored, not tokenized again
    import sftkit.data.tokenized

    def no_tokenizing(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the resumed run tokenized its data again")

    monkeypatch.setattr(sftkit.data.tokenized, "_encode_batch", no_tokenizing)
    with registered() as registry:
        run_recipe(recipe(cut, registry), resume=True)
    run = json.loads((cut / "run.json").read_text())
    assert run["status"] == "completed" and run["steps"] == 4
    assert run["resumed_from"].endswith("checkpoint-2")
    resumed = [e for e in events(cut) if "loss" in e][-2:]
    assert [e["step"] for e in resumed] == [3, 4]
    for event in resumed:
        assert event["loss"] == pytest.approx(reference[event["step"]], rel=1e-5)
    ref_weights, cut_weights = final_weights(tmp_path / "ref"), final_weights(cut)
    for name, tensor in ref_weights.items():
        assert torch.allclose(cut_weights[name], tensor, atol=1e-6), name


def test_refuses_to_overwrite_a_run(models, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "recipe.yaml").write_text("model: {}\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(models["config"], run_dir))
    assert run_cli(["run", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err
    assert (run_dir / "recipe.yaml").read_text() == "model: {}\n"
    # Nothing to resume in a directory without checkpoints.
    assert run_cli(["run", str(recipe), "--output-dir", str(tmp_path / "new"), "--resume"]) == 2
    assert "cannot resume" in capsys.readouterr().err


def test_resume_refuses_another_recipe(registry, models, tmp_path):
    from sftkit.errors import RunDirectoryError
    from sftkit.runpaths import RunPaths
    from sftkit.training.runfiles import check_run_dir, write_recipe

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    write_recipe(
        RunPaths(run_dir),
        load_recipe_text(recipe_text(models["config"], run_dir), registry=registry),
    )
    longer = load_recipe_text(
        recipe_text(models["config"], run_dir, max_steps=9), registry=registry
    )
    check_run_dir(RunPaths(run_dir), longer, resume=True)  # training longer is allowed
    other = load_recipe_text(
        recipe_text(models["config"], run_dir, optimizer_options={"lr": 1e-4}), registry=registry
    )
    with pytest.raises(RunDirectoryError, match=r"optimizer\.options\.lr"):
        check_run_dir(RunPaths(run_dir), other, resume=True)


def test_memory_preflight_rejects_before_loading(tmp_path, capsys):
    out = tmp_path / "full"
    code = run_cli(["run", str(RECIPES / "r1_gsm8k_full.yaml"), "--output-dir", str(out)])
    assert code == 3
    assert "does not fit" in capsys.readouterr().err.lower()
    assert not out.exists()  # nothing written, nothing loaded
    if not torch.cuda.is_available():
        # --force gets past the estimate; without a GPU the run then stops with a clear error.
        code = run_cli(
            ["run", str(RECIPES / "r1_gsm8k_full.yaml"), "--output-dir", str(out), "--force"]
        )
        assert code == 2
        assert "no CUDA device" in capsys.readouterr().err


def test_preview_marks_trained_tokens(models, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(models["config"], tmp_path / "run"))
    assert run_cli(["preview", str(recipe), "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert "train-" in out and "token lengths" in out and "over max length" in out
    # Plain-text output marks the trained span: the answer and its EOS, not the prompt.
    example = out[out.index("train-") :]
    start, end = example.index("\u27e6"), example.index("\u27e7")
    assert example[start - len("Answer:\u23ce\n") : start] == "Answer:\u23ce\n"
    assert "####" in example[start:end] and example[start:end].endswith("</s>")


def test_tokenizer_round_trip_of_the_bundled_model():
    tokenizer = build_char_tokenizer()
    text = "Ann has 3 pens.\n#### 7"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    assert tokenizer(text)["input_ids"][0] == tokenizer.bos_token_id  # BOS by default, as Llama


def test_bundled_tokenizer_files_are_what_the_builder_writes(tmp_path):
    from sftkit.data.char_tokenizer import main

    assert main([str(tmp_path)]) == 0
    asset = Path(__file__).resolve().parent.parent / "sftkit" / "assets" / "models" / "tiny-llama"
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert json_or_text(tmp_path / name) == json_or_text(asset / name), name


def json_or_text(path: Path) -> Any:
    text = path.read_text()
    return json.loads(text) if path.suffix == ".json" else text


@pytest.mark.slow
def test_packing_keeps_examples_apart(registry, models, tmp_path):
    """data.packing: TRL packs several examples per row (padding-free, position ids restart
    per example); each example must still see only itself, as if it were alone."""
    text = recipe_text(models["config"], tmp_path / "run", max_steps=2, micro_batch_size=4)
    resolved = load_recipe_text(text, ["data.packing=true"], registry=registry)
    result = run_recipe(resolved)
    trainer = result.context.trainer
    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert len(starts) >= 2  # several examples in the row
    model = trainer.model.eval()
    with torch.no_grad():
        packed = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits[0]
        begin, end = starts[1], starts[2] if len(starts) > 2 else batch["input_ids"].shape[1]
        alone = model(input_ids=batch["input_ids"][:, begin:end], use_cache=False).logits[0]
    assert torch.allclose(packed[begin:end], alone, atol=1e-4)


@pytest.mark.slow
def test_a_terminated_run_stops_with_a_checkpoint(models, tmp_path):
    """SIGTERM (a scheduler stopping the job) stops at the next step with a checkpoint:
    exit 143, run.json says interrupted and where a resume continues (tests/test_faults.py
    resumes such runs exactly)."""
    import signal
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "run"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(models["config"], run_dir, max_steps=10_000))
    process = subprocess.Popen(
        [sys.executable, "-c", "from sftkit.cli import main; main()", "run", str(recipe)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if (run_dir / "metrics.jsonl").is_file():
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "interrupted" and run["signal"] == "SIGTERM"
    step = run["stopped_at_step"]
    assert run["checkpoint"] == f"checkpoint-{step}"
    assert (run_dir / "checkpoints" / f"checkpoint-{step}" / "sftkit_complete.json").is_file()
    assert f"--output-dir {run_dir} --resume" in err


@pytest.mark.slow
def test_load_base_is_the_untrained_seeded_base(registry, models, tmp_path):
    from sftkit.modeling import load_base

    run_dir = tmp_path / "run"
    resolved = load_recipe_text(
        recipe_text(models["config"], run_dir, max_steps=2), registry=registry
    )
    run_recipe(resolved)
    from_run, _ = load_base(run_dir)  # the weights saved in <run>/base
    regenerated, _ = load_base(resolved)  # rebuilt from the recipe's seed, no run directory
    trained, _ = load_trained(run_dir)
    base_state, trained_state = from_run.state_dict(), trained.state_dict()
    for name, tensor in regenerated.state_dict().items():
        assert torch.equal(tensor, base_state[name]), name
    assert not torch.equal(base_state["lm_head.weight"], trained_state["lm_head.weight"])
