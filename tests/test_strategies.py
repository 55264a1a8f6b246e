"""Strategies and optimizers on a tiny Llama, without the trainer: what trains, how the base
is stored, and that each optimizer plugin's object lowers the loss on a repeated batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")

from tiny_models import recipe_text, saved_model_dir  # noqa: E402

from sftkit.builtin.optimizers import AdafactorOptions  # noqa: E402
from sftkit.data.char_tokenizer import build_char_tokenizer  # noqa: E402
from sftkit.modeling import build_model  # noqa: E402
from sftkit.recipe.load import load_recipe_text  # noqa: E402
from sftkit.training.optimizer import build_optimizer, param_groups  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return saved_model_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return build_char_tokenizer()


def resolve(registry, model_dir: Path, tmp_path: Path, **kwargs: Any) -> Any:
    text = recipe_text(model_dir, tmp_path / "run", random_init=False, **kwargs)
    return load_recipe_text(text, registry=registry)


def batch(tokenizer: Any) -> dict[str, Any]:
    texts = ["<s>Question: 2 + 3?\nAnswer:\n2 + 3 = 5\n#### 5</s>", "<s>7 - 4 = 3\n#### 3</s>"]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, ids))
    input_ids = torch.zeros(len(ids), width, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    labels = input_ids.masked_fill(mask == 0, -100)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def losses_on_repeated_batch(
    model: Any, optimizer: Any, inputs: dict[str, Any], steps: int
) -> list[float]:
    model.train()
    out = []
    for _ in range(steps):
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        out.append(loss.item())
    return out


CASES = [
    ("full-sft", {}, "adamw", {"lr": 3e-3}, "AdamW"),
    ("full-sft", {}, "sgd", {"lr": 0.1, "momentum": 0.9}, "SGD"),
    ("full-sft", {}, "adafactor", {"lr": 3e-3}, "Adafactor"),
    ("lora", {"rank": 8, "alpha": 16}, "adamw", {"lr": 1e-2, "fused": False}, "AdamW"),
    (
        "lora",
        {"rank": 8, "alpha": 8, "use_rslora": True, "use_dora": True},
        "paged-adamw-32bit",
        {"lr": 1e-2},
        "PagedAdamW32bit",
    ),
    (
        "qlora-nf4",
        {"rank": 8, "alpha": 16, "compute_dtype": "float32"},
        "paged-adamw-8bit",
        {"lr": 1e-2, "min_8bit_size": 256},
        "PagedAdamW8bit",
    ),
    (
        "lora-8bit",
        {"rank": 8, "alpha": 16},
        "adamw-8bit",
        {"lr": 1e-2, "min_8bit_size": 256},
        "AdamW8bit",
    ),
]


@pytest.mark.parametrize(
    ("strategy", "s_opts", "optimizer", "o_opts", "cls"),
    CASES,
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_strategy_and_optimizer_lower_the_loss(
    registry, model_dir, tokenizer, tmp_path, strategy, s_opts, optimizer, o_opts, cls
):
    resolved = resolve(
        registry,
        model_dir,
        tmp_path,
        strategy=strategy,
        strategy_options=s_opts,
        optimizer=optimizer,
        optimizer_options=o_opts,
    )
    model = build_model(resolved, tokenizer)
    opt = build_optimizer(resolved, model)
    assert type(opt).__name__ == cls
    losses = losses_on_repeated_batch(model, opt, batch(tokenizer), steps=12)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.9 * losses[0], losses
    if "8bit" in optimizer:  # the moments really are 8-bit for tensors above min_8bit_size
        dtypes = {s["state1"].dtype for s in opt.state.values() if "state1" in s}
        assert torch.uint8 in dtypes


def test_full_sft_trains_everything(registry, model_dir, tokenizer, tmp_path):
    model = build_model(resolve(registry, model_dir, tmp_path), tokenizer)
    assert all(p.requires_grad for p in model.parameters())
    groups = param_groups(model)
    assert [g.get("weight_decay") for g in groups] == [None, 0.0]
    no_decay = {id(p) for p in groups[1]["params"]}
    for name, param in model.named_parameters():
        assert (id(param) in no_decay) == (param.ndim < 2), name


def test_lora_freezes_the_base_and_follows_options(registry, model_dir, tokenizer, tmp_path):
    options = {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    model = build_model(
        resolve(registry, model_dir, tmp_path, strategy="lora", strategy_options=options),
        tokenizer,
    )
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "v_proj"}
    config = model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.use_rslora) == (4, 8, False)


def test_lora_all_linear_skips_the_lm_head(registry, model_dir, tokenizer, tmp_path):
    model = build_model(resolve(registry, model_dir, tmp_path, strategy="lora"), tokenizer)
    targets = {n.split(".")[-4] for n, p in model.named_parameters() if p.requires_grad}
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_qlora_base_is_nf4_with_double_quant(registry, model_dir, tokenizer, tmp_path):
    import bitsandbytes as bnb

    resolved = resolve(
        registry,
        model_dir,
        tmp_path,
        strategy="qlora-nf4",
        strategy_options={"compute_dtype": "float32"},
    )
    model = build_model(resolved, tokenizer)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer
    assert isinstance(layer, bnb.nn.Linear4bit)
    state = layer.weight.quant_state
    assert state.quant_type == "nf4" and state.nested  # double quantization
    # prepare_model_for_kbit_training: the non-quantized weights are fp32, the base frozen.
    norm = model.base_model.model.model.norm.weight
    assert norm.dtype == torch.float32 and not norm.requires_grad


def test_lora_8bit_base_is_int8(registry, model_dir, tokenizer, tmp_path):
    import bitsandbytes as bnb

    model = build_model(resolve(registry, model_dir, tmp_path, strategy="lora-8bit"), tokenizer)
    layer = model.base_model.model.model.layers[0].mlp.down_proj.base_layer
    assert isinstance(layer, bnb.nn.Linear8bitLt) and layer.weight.dtype == torch.int8


def test_adafactor_options_validate():
    assert AdafactorOptions().lr == 1e-3
    AdafactorOptions(lr=None)  # relative step
    with pytest.raises(ValueError, match="lr is required"):
        AdafactorOptions(lr=None, relative_step=False)
    with pytest.raises(ValueError, match="set lr to null"):
        AdafactorOptions(lr=1e-3, relative_step=True)
