"""TRL's chunked log-prob head (``training.loss: auto``) on the CPU: every tensor alive during
its forward and backward over the quickstart's rows, counted as each is created and freed
(its inputs apart), peaks at what the estimate prices for it, saved and transient. Its tile
buffer is 4096 x 32768 whatever the vocabulary, so a small-vocabulary model pays for it
whole (the quickstart's 128 tokens: 0.5 GiB of fp32)."""

from __future__ import annotations

import pytest

from sftkit.memory import activations as act
from sftkit.memory.estimator import shape_for
from sftkit.memory.setup import setup_from_recipe
from sftkit.testing import tiny_recipe

torch = pytest.importorskip("torch")
kernels = pytest.importorskip("trl.kernels")


@pytest.mark.parametrize("strategy", ["full-sft", "lora"])  # lm_head trained, and frozen
def test_the_heads_live_peak_is_what_the_estimate_prices(strategy):
    from live_tensors import LiveTensors

    resolved = tiny_recipe(
        f"strategy.name={strategy}", "training.micro_batch_size=8", "training.max_seq_length=128"
    )
    setup = setup_from_recipe(resolved, shape_for(resolved), on_gpu=False)
    q = act.loss_query(setup, setup.micro_batch_size, setup.seq_len)
    torch.manual_seed(0)
    hidden = torch.randn(q.positions, q.hidden, requires_grad=True)
    weight = torch.randn(q.vocab, q.hidden, requires_grad=q.head_trains)
    labels = torch.randint(0, q.vocab, (q.positions,))
    with LiveTensors([hidden, weight]) as live:
        log_probs, *_ = kernels.ChunkedLogProbFunction.apply(
            hidden, weight, None, labels, 1.0, 32768, None, 1.0, ("log_probs",)
        )
        log_probs.sum().backward()
    priced = setup.loss.saved_bytes(q) + setup.loss.transient_bytes(q)
    assert min(q.positions, 4096) * 32768 * q.compute_bytes < priced  # the whole tile buffer
    assert live.peak == pytest.approx(priced, rel=0.02)
