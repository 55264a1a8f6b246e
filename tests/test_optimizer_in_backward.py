"""training.optimizer_in_backward: the same weights as the ordinary step (SGD, AdamW, no
accumulation), at most one gradient alive at any moment of backward, the gradient term priced
as that one tensor, the static terms equal to the real tensors, the learning-rate scheduler
and a checkpoint round trip honoured, and the combinations it cannot make refused before
anything loads."""

from __future__ import annotations

import json

import pytest

from sftkit.errors import RecipeError
from sftkit.memory import estimate
from sftkit.recipe.load import load_recipe, load_recipe_text
from sftkit.testing import fresh_registry

IN_BACKWARD = [
    "training.optimizer_in_backward=true",
    "training.gradient_accumulation_steps=1",
    "training.max_grad_norm=null",
]


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (IN_BACKWARD[:1] + IN_BACKWARD[2:], "gradient_accumulation_steps to 1"),
        (IN_BACKWARD[:2], "max_grad_norm to null"),
        ([*IN_BACKWARD, "distributed.engine=ddp", "hardware.num_gpus=2"], "one device"),
    ],
)
def test_combinations_it_cannot_make_are_refused(overrides, says):
    with pytest.raises(RecipeError, match=says):
        load_recipe("recipes/r1_gsm8k_qlora.yaml", overrides, registry=fresh_registry())


def test_the_gradient_term_is_one_tensor():
    reg = fresh_registry()
    base = ["training.gradient_accumulation_steps=1", "training.max_grad_norm=null"]
    plain = estimate(load_recipe("recipes/r1_gsm8k_full.yaml", base, registry=reg), advise=False)
    fused = estimate(
        load_recipe("recipes/r1_gsm8k_full.yaml", [*base, IN_BACKWARD[0]], registry=reg),
        advise=False,
    )
    grads = {t.name: t.bytes for t in fused.terms if t.category == "gradients"}
    # the largest trainable tensor of the 8B model: the 128256 x 4096 embedding, in bf16
    assert set(grads.values()) == {128256 * 4096 * 2}
    all_grads = max(t.bytes for t in plain.terms if t.category == "gradients")
    assert all_grads == 8_030_261_248 * 2
    assert fused.phases["later_steps"] < plain.phases["later_steps"]
    assert fused.phases["optimizer_step"] < plain.phases["optimizer_step"]


torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 200,
    "tie_word_embeddings": False,
    "max_position_embeddings": 128,
}


def _resolved(tmp_path, optimizer, options, in_backward, strategy="full-sft"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps(LLAMA))
    text = f"""
model: {{name_or_path: {tmp_path}, dtype: float32, random_init: true}}
strategy: {{name: {strategy}}}
optimizer: {{name: {optimizer}, options: {json.dumps(options)}}}
training: {{micro_batch_size: 2, max_seq_length: 12, gradient_checkpointing: false,
  precision: fp32, max_grad_norm: null, optimizer_in_backward: {str(in_backward).lower()}}}
hardware: {{gpu: cpu}}
"""
    return load_recipe_text(text, registry=fresh_registry())


def _train(tmp_path, optimizer, options, in_backward, steps=3, probe=None):
    from sftkit.modeling import build_model
    from sftkit.training.optimizer import build_optimizer

    resolved = _resolved(tmp_path, optimizer, options, in_backward)
    torch.manual_seed(0)
    model = build_model(resolved, None, base_dir=tmp_path / "base")
    model.train()
    if probe is not None:  # its hooks run before the optimizer's
        probe(model)
    opt = build_optimizer(resolved, model)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        ids = torch.randint(0, LLAMA["vocab_size"], (2, 12), generator=generator)
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return resolved, model, opt


@pytest.mark.parametrize(
    ("optimizer", "options"),
    [("sgd", {"lr": 0.1, "momentum": 0.9}), ("adamw", {"lr": 1e-2, "weight_decay": 0.1})],
)
def test_same_weights_as_the_ordinary_step(tmp_path, optimizer, options):
    torch.set_num_threads(1)
    _, ordinary, _ = _train(tmp_path / "a", optimizer, options, False)
    _, stepped, opt = _train(tmp_path / "b", optimizer, options, True)
    assert type(opt).__name__ == "OptimizerInBackward"
    want = dict(ordinary.named_parameters())
    for name, p in stepped.named_parameters():
        assert torch.allclose(p, want[name], rtol=1e-5, atol=1e-7), name
        assert p.grad is None


def test_at_most_one_gradient_lives_and_the_estimate_prices_it(tmp_path):
    from sftkit.memory.estimator import shape_for
    from sftkit.memory.phases import static_bytes
    from sftkit.memory.setup import setup_from_recipe
    from sftkit.training.measure import measured_static

    live: list[int] = []

    def probe(model):
        params = list(model.parameters())

        def record(_):
            live.append(sum(p.grad.nbytes for p in params if p.grad is not None))

        for p in params:  # registered before the stepping hooks: runs just before each step
            p.register_post_accumulate_grad_hook(record)

    resolved, model, opt = _train(tmp_path, "adamw", {"lr": 1e-2}, True, steps=1, probe=probe)
    largest = max(p.nbytes for p in model.parameters())
    setup = setup_from_recipe(resolved, shape_for(resolved), on_gpu=False)
    est = estimate(resolved, advise=False)
    (term,) = [t for t in est.terms if t.category == "gradients"]
    assert term.bytes == largest
    # at every parameter's step exactly its own gradient is alive: the others are freed or
    # not computed yet
    sizes = sorted(p.grad.nbytes if p.grad is not None else p.nbytes for p in model.parameters())
    assert sorted(live) == sizes
    assert max(live) == largest
    assert static_bytes(setup).as_dict() == measured_static(model, opt).as_dict()


def test_the_scheduler_and_a_checkpoint_round_trip(tmp_path):
    from sftkit.modeling import build_model
    from sftkit.training.optimizer import build_optimizer

    resolved, model, opt = _train(tmp_path, "adamw", {"lr": 1e-2}, True, steps=2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    assert all(g["lr"] == 5e-3 for g in opt.param_groups)
    saved = opt.state_dict()
    torch.manual_seed(0)
    again = build_model(resolved, None, base_dir=tmp_path / "base")
    restored = build_optimizer(resolved, again)
    restored.load_state_dict(saved)
    first = next(iter(model.parameters()))
    twin = next(iter(again.parameters()))
    assert torch.equal(opt.state[first]["exp_avg"], restored.state[twin]["exp_avg"])
    assert restored.param_groups[0]["lr"] == 5e-3
    ids = torch.randint(0, LLAMA["vocab_size"], (2, 12))
    again(input_ids=ids, labels=ids).loss.backward()  # steps with the restored lr
    assert int(restored.state[twin]["step"]) == 3
    del scheduler
