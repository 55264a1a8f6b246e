"""training.loss: sftkit's chunked cross-entropy and full-logits head give the loss and
gradients of the reference cross-entropy; Liger's is refused on CPU (and compared on CUDA);
the estimator prices each head from its declaration; `auto` follows the installed TRL's
version; the old environment variable is refused."""

from __future__ import annotations

import json

import pytest

from sftkit.components.loss import LOSS_HEADS, TRL_HEAD, chunk_tokens
from sftkit.errors import SftkitError
from sftkit.memory import estimate
from sftkit.memory import setup as memory_setup
from sftkit.recipe.load import load_recipe
from sftkit.testing import fresh_registry

QLORA = "recipes/r1_gsm8k_qlora.yaml"


def test_chunks_keep_a_fp32_tile_under_64_mib():
    assert chunk_tokens(128256, 4096) == 128
    assert chunk_tokens(128256, 100) == 100
    assert chunk_tokens(256, 48) == 48
    assert chunk_tokens(128256, 4096) * 128256 * 4 <= 64 * 2**20


def test_auto_follows_the_installed_trl_version(monkeypatch):
    monkeypatch.setattr(memory_setup, "installed_trl", lambda: (1, 16, 0))
    assert memory_setup.loss_head("auto") is TRL_HEAD
    monkeypatch.setattr(memory_setup, "installed_trl", lambda: (1, 14, 2))
    assert memory_setup.loss_head("auto") is LOSS_HEADS["full"]
    monkeypatch.setattr(memory_setup, "installed_trl", lambda: None)
    assert memory_setup.loss_head("auto") is TRL_HEAD  # what sftkit[train] installs
    assert memory_setup.loss_head("chunked") is LOSS_HEADS["chunked"]


def test_the_old_environment_variable_is_refused(monkeypatch):
    monkeypatch.setenv("SFTKIT_LOSS_HEAD", "fused")
    resolved = load_recipe(QLORA, registry=fresh_registry())
    with pytest.raises(SftkitError, match=r"training\.loss"):
        estimate(resolved)


def test_an_unknown_head_is_a_recipe_error():
    with pytest.raises(SftkitError, match=r"training\.loss"):
        load_recipe(QLORA, ["training.loss=fast"], registry=fresh_registry())


def _loss_terms(overrides):
    resolved = load_recipe(QLORA, overrides, registry=fresh_registry())
    est = estimate(resolved, advise=False)
    return est, {t.name: t.bytes for t in est.terms if t.category == "logits"}


def test_each_head_is_priced_from_its_declaration():
    base = ["training.gradient_checkpointing=false", "training.max_seq_length=2048"]
    full, full_terms = _loss_terms([*base, "training.loss=full"])
    chunked, _ = _loss_terms([*base, "training.loss=chunked"])
    liger, liger_terms = _loss_terms([*base, "training.loss=liger"])
    trl, _ = _loss_terms(base)
    # full logits: 4 + 2 x 4 bytes per vocabulary entry per token, the largest by far
    assert max(full_terms.values()) >= 8 * 128256 * 2048
    assert chunked.phases["later_steps"] < trl.phases["later_steps"] < full.phases["later_steps"]
    assert liger.phases["later_steps"] < full.phases["later_steps"]
    assert any("Liger" in n for n in liger_terms)
    assert any("sftkit's chunked" in n for n in chunked.notes)


torch = pytest.importorskip("torch")
F = torch.nn.functional


def _reference(hidden, weight, bias, targets):
    logits = hidden @ weight.t() + (0 if bias is None else bias)
    logp = F.log_softmax(logits, -1)
    valid = targets != -100
    tgt = logp.gather(1, targets.clamp(min=0)[:, None]).squeeze(1) * valid
    entropy = -(logp.exp() * logp).sum(-1) * valid
    top1 = (logits.argmax(-1) == targets) & valid
    return tgt, entropy, top1


@pytest.mark.parametrize("with_bias", [False, True])
def test_chunked_cross_entropy_equals_the_reference(with_bias):
    from sftkit.training.loss import ChunkedCrossEntropy

    torch.manual_seed(0)
    n, h, v = 37, 16, 50
    hidden = torch.randn(n, h, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, h, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(v, dtype=torch.float64, requires_grad=True) if with_bias else None
    targets = torch.randint(0, v, (n,))
    targets[::5] = -100
    got = ChunkedCrossEntropy.apply(hidden, weight, bias, targets, 8, torch.float64)
    want = _reference(hidden, weight, bias, targets)
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g.to(w.dtype), w, atol=1e-10)
    upstream = torch.randn(n, dtype=torch.float64)
    grads = torch.autograd.grad(
        (got[0] * upstream).sum(), [t for t in (hidden, weight, bias) if t is not None]
    )
    expected = torch.autograd.grad(
        (want[0] * upstream).sum(), [t for t in (hidden, weight, bias) if t is not None]
    )
    for g, w in zip(grads, expected, strict=True):
        assert torch.allclose(g, w, atol=1e-10)
    assert torch.autograd.gradcheck(
        lambda x, w: ChunkedCrossEntropy.apply(x, w, None, targets[:9], 4, torch.float64)[0],
        (hidden[:9].detach().requires_grad_(), weight.detach().requires_grad_()),
    )


LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 300,
    "tie_word_embeddings": False,
    "max_position_embeddings": 256,
}


def _model(tmp_path, strategy="full-sft"):
    from sftkit.modeling import build_model
    from sftkit.recipe.load import load_recipe_text

    (tmp_path / "config.json").write_text(json.dumps(LLAMA))
    text = f"""
model: {{name_or_path: {tmp_path}, dtype: float32, random_init: true}}
strategy: {{name: {strategy}, options: {"{}" if strategy == "full-sft" else "{dropout: 0.0}"}}}
optimizer: {{name: adamw}}
training: {{micro_batch_size: 3, max_seq_length: 20, gradient_checkpointing: false, precision: fp32}}
hardware: {{gpu: cpu}}
"""
    resolved = load_recipe_text(text, registry=fresh_registry())
    torch.manual_seed(0)
    return build_model(resolved, None, base_dir=tmp_path / "base")


def _loss_and_grads(model, batch, head):
    from sftkit.training.loss import HeadedModel, chunked_head, full_head

    model.zero_grad(set_to_none=True)
    if head is None:  # the model's own loss (transformers' ForCausalLMLoss)
        out = model(**batch)
    else:
        function = {"full": full_head, "chunked": chunked_head}[head]
        out = HeadedModel(model, function)(**batch, fused_lm_head=True)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.loss.detach(), grads


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("strategy", ["full-sft", "lora"])
def test_heads_give_the_models_own_loss_and_gradients(tmp_path, strategy):
    torch.set_num_threads(1)
    model = _model(tmp_path, strategy)
    model.train()
    torch.manual_seed(1)
    ids = torch.randint(0, LLAMA["vocab_size"], (3, 20))
    labels = ids.clone()
    labels[:, :6] = -100  # prompt tokens
    labels[1, 15:] = -100  # padding
    batch = {"input_ids": ids, "labels": labels}
    want_loss, want_grads = _loss_and_grads(model, batch, None)
    for head in ("full", "chunked"):
        loss, grads = _loss_and_grads(model, batch, head)
        assert torch.allclose(loss, want_loss, rtol=1e-6), (head, loss, want_loss)
        assert grads.keys() == want_grads.keys()
        for name, g in grads.items():
            assert torch.allclose(g, want_grads[name], rtol=1e-4, atol=1e-7), (head, name)


def test_the_model_is_unchanged_by_the_head(tmp_path):
    from sftkit.training.loss import HeadedModel, chunked_head

    model = _model(tmp_path)
    model.eval()
    ids = torch.randint(0, LLAMA["vocab_size"], (1, 7))
    head = model.get_output_embeddings()
    with torch.no_grad():
        before = model(input_ids=ids).logits
        headed = HeadedModel(model, chunked_head)
        headed(input_ids=ids, labels=ids, fused_lm_head=True)
        passed_through = headed(input_ids=ids).logits
        after = model(input_ids=ids).logits
    assert torch.equal(before, after) and torch.equal(before, passed_through)
    assert model.get_output_embeddings() is head


def test_liger_is_refused_on_cpu_with_the_reason(tmp_path):
    from sftkit.training.loss import check_loss_head

    resolved = load_recipe(QLORA, ["training.loss=liger"], registry=fresh_registry())
    with pytest.raises(SftkitError, match="needs a CUDA GPU") as info:
        check_loss_head(resolved, "cpu")
    assert "training.loss=chunked" in str(info.value)


@pytest.mark.gpu
def test_liger_head_equals_the_full_head_on_cuda(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("liger_kernel")
    from sftkit.training.loss import full_head, liger_head

    torch.manual_seed(0)
    lm_head = torch.nn.Linear(64, 300, bias=False, device="cuda")
    hidden = torch.randn(2, 9, 64, device="cuda", requires_grad=True)
    labels = torch.randint(0, 300, (2, 9), device="cuda")
    got = liger_head(hidden, lm_head, labels)
    want = full_head(hidden, lm_head, labels)
    assert torch.allclose(got[0], want[0], atol=1e-4)
    (g,) = torch.autograd.grad(got[0].sum(), [hidden])
    (w,) = torch.autograd.grad(want[0].sum(), [hidden])
    assert torch.allclose(g, w, atol=1e-4)
