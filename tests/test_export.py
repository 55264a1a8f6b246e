"""`sftkit export` on run directories: merged models load in plain transformers and compute
what base + adapter computed; adapter exports load with PEFT; nothing is overwritten."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")

from sftkit.cli import run_cli  # noqa: E402
from sftkit.errors import RunDirectoryError  # noqa: E402
from sftkit.export import export_run  # noqa: E402
from sftkit.recipe.load import load_recipe_text  # noqa: E402
from sftkit.testing import fresh_registry  # noqa: E402

TEXT = "<s>Question: Ann has 3 pens. Ann gets 4 more. How many pens does Ann have?\nAnswer:\n"

RECIPE = """
model:
  name_or_path: "{config}"
  tokenizer: "builtin:tiny-llama"
  dtype: float32
  random_init: true
strategy: {{name: {strategy}, options: {{rank: 4, alpha: 8, dropout: 0.0 {extra}}}}}
optimizer: {{name: adamw}}
data:
  format: {{name: synthetic-arithmetic, options: {{train_size: 16, test_size: 8, dev_size: 4}}}}
  template: {{name: tutor, options: {{instruction: ""}}}}
hardware: {{gpu: cpu}}
evaluation:
  evaluators: [{{name: gsm8k, options: {{max_new_tokens: 8}}}}]
output_dir: {out}
"""


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(root: Path) -> Path:
    """The bundled tiny Llama with an MLP width that is a multiple of 64: bitsandbytes' CPU
    4-bit inference kernel (used in eval mode) cannot repack rows of 352 = 5.5 blocks."""
    from sftkit.modeling import resolve_model_path

    config = json.loads(
        (Path(resolve_model_path("builtin:tiny-llama")) / "config.json").read_text()
    )
    config["intermediate_size"] = 384
    path = root / "tiny-llama-384"
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    return path


def make_run(root: Path, strategy: str, extra: str = "") -> Path:
    """A finished run directory as `sftkit run` leaves it, without spending time training:
    the strategy's model is built, its LoRA B matrices (zero at init) are randomized so the
    adapter really changes the output, and final/ is saved the way the runner saves it."""
    from sftkit.modeling import build_model, load_tokenizer
    from sftkit.runpaths import RunPaths
    from sftkit.training.runfiles import write_recipe

    out = root / strategy
    resolved = load_recipe_text(
        RECIPE.format(strategy=strategy, extra=extra, out=out, config=tiny_config(root)),
        registry=fresh_registry(),
    )
    paths = RunPaths(out)
    out.mkdir(parents=True)
    write_recipe(paths, resolved)
    tokenizer = load_tokenizer(resolved.recipe)
    model = build_model(resolved, tokenizer, base_dir=paths.base)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    model.save_pretrained(paths.final)
    tokenizer.save_pretrained(paths.final)
    (out / "run.json").write_text(json.dumps({"status": "completed", "steps": 0}))
    eval_dir = out / "eval" / "after-gsm8k"
    eval_dir.mkdir(parents=True)
    (eval_dir / "metrics.json").write_text(
        json.dumps(
            {
                "stage": "after",
                "evaluator": "gsm8k",
                "model": "fine-tuned",
                "split": "test",
                "n": 8,
                "primary": "accuracy",
                "metrics": {"accuracy": 0.25, "ci_low": 0.07, "ci_high": 0.59, "correct": 2},
            }
        )
    )
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        "lora": make_run(root, "lora"),
        "qlora-nf4": make_run(root, "qlora-nf4", ", compute_dtype: bfloat16"),
    }


def logits(model: Any, tokenizer: Any) -> Any:
    ids = tokenizer(TEXT, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(ids.to(model.device)).logits.float().cpu()


def trained_logits(run: Path, dtype: str = "float32") -> tuple[Any, Any]:
    """Logits of base + adapter as the run computes them (a quantized base computes in its
    compute dtype) and how far the adapter moves them. With `dtype` bfloat16 a dense model is
    cast first, so a bf16 export is compared with bf16 arithmetic, not with fp32."""
    from sftkit.export.merge import describe_quantization
    from sftkit.modeling import load_trained

    model, tokenizer = load_trained(run)
    if describe_quantization(model) is None:
        model = model.to(getattr(torch, dtype))
    expected = logits(model, tokenizer)
    with model.disable_adapter():
        effect = (logits(model, tokenizer) - expected).abs().max()
    return expected, effect


@pytest.mark.parametrize(
    ("strategy", "dtype", "tolerance"),
    # Tolerances relative to the largest logit: fp32 is exact up to summation order; bf16
    # keeps 8 bits of mantissa (0.4% per rounding) through 4 layers.
    [("lora", "float32", 1e-5), ("lora", "bfloat16", 0.03), ("qlora-nf4", "bfloat16", 0.03)],
)
def test_merged_export_loads_in_transformers_and_matches_base_plus_adapter(
    runs: dict[str, Path], tmp_path: Path, strategy: str, dtype: str, tolerance: float
) -> None:
    run = runs[strategy]
    expected, adapter_effect = trained_logits(run, dtype)
    result = export_run(run, merge=True, output_dir=tmp_path / "merged", dtype=dtype)
    assert result.merged and result.adapter and result.dtype == dtype
    assert result.quantized_base == ("4-bit NF4" if strategy == "qlora-nf4" else None)
    out = result.output_dir
    assert (out / "config.json").is_file() and list(out.glob("*.safetensors"))
    assert (out / "tokenizer.json").is_file()
    assert not (out / "adapter_config.json").exists()
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config

    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert model.dtype == getattr(torch, dtype)
    assert not any("lora" in name for name, _ in model.named_parameters())
    got = logits(model, tokenizer)
    error = (got - expected).abs().max()
    scale = expected.abs().max()
    assert error <= tolerance * scale, f"merged logits differ by {error} (max |logit| {scale})"
    assert error < adapter_effect / 5
    # "Answers the same": the same greedy next token at every position.
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.95

    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: transformers" in card
    assert "AutoModelForCausalLM.from_pretrained" in card
    assert "gsm8k" in card and "25.0%" in card  # the run's evaluation results
    assert "tokenizer: builtin:tiny-llama" in card  # the recipe
    if strategy == "qlora-nf4":
        assert "dequantize" in card and "4-bit NF4" in card


def test_adapter_export_loads_with_peft(runs: dict[str, Path], tmp_path: Path) -> None:
    from sftkit.modeling import load_base

    run = runs["lora"]
    expected, _ = trained_logits(run)
    result = export_run(run, output_dir=tmp_path / "adapter")
    assert not result.merged and result.adapter
    names = set(result.files)
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "README.md",
    } <= names
    assert "training_args.bin" not in names and "config.json" not in names
    assert "sftkit_recipe.yaml" in names
    assert "library_name: peft" in (result.output_dir / "README.md").read_text()
    base, tokenizer = load_base(run)
    model = peft.PeftModel.from_pretrained(base, result.output_dir).eval()
    assert torch.equal(logits(model, tokenizer), expected)


def test_an_existing_output_directory_is_never_overwritten(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(RunDirectoryError, match="never writes over"):
        export_run(runs["lora"], output_dir=target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert run_cli(["export", str(runs["lora"]), "--output-dir", str(target)]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no partial left behind


def test_export_command_and_hub_push_without_network(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    class FakeApi:
        def create_repo(self, repo_id: str, **kwargs: Any) -> str:
            calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, **kwargs: Any) -> None:
            calls.append(("upload_folder", kwargs))

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    out = tmp_path / "pushed"
    code = run_cli(
        ["export", str(runs["lora"]), "--output-dir", str(out), "--push-to-hub", "me/tiny"]
    )
    assert code == 0
    assert "wrote adapter" in capsys.readouterr().out
    assert calls[0] == (
        "create_repo",
        {"repo_id": "me/tiny", "repo_type": "model", "private": True, "exist_ok": True},
    )
    assert calls[1][1]["folder_path"] == str(out) and calls[1][1]["repo_id"] == "me/tiny"
    assert "# me/tiny" in (out / "README.md").read_text()


def test_a_run_without_a_final_model_cannot_be_exported(tmp_path: Path) -> None:
    run = tmp_path / "unfinished"
    run.mkdir()
    (run / "recipe.yaml").write_text("model: {name_or_path: x}\n")
    (run / "run.json").write_text(json.dumps({"status": "failed"}))
    with pytest.raises(RunDirectoryError, match="did not complete"):
        export_run(run)
