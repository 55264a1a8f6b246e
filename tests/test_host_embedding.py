"""strategy.options.embeddings_on_host: the frozen input embedding table in host memory.
Exact: the same loss and gradients with and without (measured on CPU); the static bytes are
the real tensors' (the table counted once, as host memory after loading); refused where the
table trains, is tied to lm_head, or more than one process would look it up."""

from __future__ import annotations

import json

import pytest

from sftkit.errors import RecipeError, SftkitError
from sftkit.memory import estimate
from sftkit.recipe.load import load_recipe, load_recipe_text
from sftkit.testing import fresh_registry

QLORA = "recipes/r1_gsm8k_qlora.yaml"
ON_HOST = "strategy.options.embeddings_on_host=true"


def test_the_table_is_host_memory_after_loading():
    reg = fresh_registry()
    plain = estimate(load_recipe(QLORA, registry=reg), advise=False)
    hosted = estimate(load_recipe(QLORA, [ON_HOST], registry=reg), advise=False)
    table = 128256 * 4096 * 4  # fp32 after k-bit preparation
    assert hosted.host["later_steps"] == table
    assert hosted.phases["load"] == plain.phases["load"]  # loaded onto the device first
    drop = plain.phases["later_steps"] - hosted.phases["later_steps"]
    assert table <= drop <= table * 1.06  # and the 5% allocator margin on it


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ([ON_HOST, "hardware.num_gpus=2", "distributed.engine=ddp"], "one process"),
    ],
)
def test_multi_gpu_is_refused(overrides, says):
    with pytest.raises(RecipeError, match=says):
        load_recipe(QLORA, overrides, registry=fresh_registry())


def test_a_tied_table_is_refused_by_the_estimate():
    resolved = load_recipe(
        QLORA, [ON_HOST, "model.name_or_path=Qwen/Qwen2.5-0.5B"], registry=fresh_registry()
    )
    with pytest.raises(SftkitError, match="tied to lm_head"):
        estimate(resolved)


torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")

LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 256,
    "tie_word_embeddings": False,
    "max_position_embeddings": 256,
}


def _run(tmp_path, strategy, options):
    from sftkit.memory.estimator import shape_for
    from sftkit.memory.phases import static_bytes
    from sftkit.memory.setup import setup_from_recipe
    from sftkit.modeling import build_model
    from sftkit.training.measure import (
        autocast_context,
        measured_static,
        prepare_for_training,
        random_batch,
    )
    from sftkit.training.optimizer import build_optimizer

    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(LLAMA))
    text = f"""
model: {{name_or_path: {tmp_path}, dtype: bfloat16, random_init: true}}
strategy: {{name: {strategy}, options: {json.dumps({"rank": 4, "dropout": 0.0, **options})}}}
optimizer: {{name: adamw}}
training: {{micro_batch_size: 2, max_seq_length: 16, gradient_checkpointing: true, precision: bf16}}
hardware: {{gpu: cpu}}
"""
    resolved = load_recipe_text(text, registry=fresh_registry())
    setup = setup_from_recipe(resolved, shape_for(resolved), on_gpu=False)
    torch.manual_seed(0)
    model = build_model(resolved, None, base_dir=tmp_path / "base")
    optimizer = build_optimizer(resolved, model)
    prepare_for_training(model, setup)
    torch.manual_seed(5)
    with autocast_context(setup, "cpu"):
        out = model(**random_batch(setup, "cpu"))
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    optimizer.step()
    assert static_bytes(setup).as_dict() == measured_static(model, optimizer).as_dict()
    return model, out.loss.detach(), grads


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("strategy", ["qlora-nf4", "lora-8bit"])
@pytest.mark.parametrize("upcast", [True, False])
def test_same_loss_and_gradients_and_the_real_bytes(tmp_path, strategy, upcast):
    torch.set_num_threads(1)
    policy = {"upcast_non_quantized": upcast}
    _, loss, grads = _run(tmp_path / "a", strategy, policy)
    model, loss_host, grads_host = _run(
        tmp_path / "b", strategy, {**policy, "embeddings_on_host": True}
    )
    from sftkit.strategies.host_embedding import HostEmbedding

    assert isinstance(model.get_input_embeddings(), HostEmbedding)
    # the effect on the loss of keeping the table in host memory: none, bit for bit
    assert torch.equal(loss, loss_host)
    assert grads.keys() == grads_host.keys()
    for name, g in grads.items():
        assert torch.equal(g, grads_host[name]), name
