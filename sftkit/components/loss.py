"""Loss heads: how the loss is computed from the final hidden states, and what that keeps.

A recipe picks one with ``training.loss`` (``auto`` is whatever the installed trainer does,
see `sftkit.memory.setup`). Each head declares, for a batch, the bytes autograd keeps for
backward (`saved_bytes`) and the bytes live only while the loss or its backward runs
(`transient_bytes`), plus the two facts the rest of the activation model asks: whether a
trained lm_head saves its input the ordinary way, and whether the head casts the lm_head
weight itself (so autocast never keeps a whole bf16 copy of it).

- `FullLogits`: the (tokens x vocabulary) logits, ``logits.float()`` and cross-entropy, which
  keeps the fp32 log-softmax (transformers' ``ForCausalLMLoss``; sftkit's ``full``).
- `TrlChunkedLogProb`: TRL's ``add_fused_lm_head`` (TRL >= 1.15 installs it in every
  SFTTrainer): 4096-token x 32768-vocabulary tiles folded into running log-sum-exp
  statistics.
- `ChunkedCrossEntropy`: sftkit's own (`sftkit.training.loss`): token chunks small enough
  that a fp32 tile stays under 64 MiB; forward keeps only the hidden states, targets and
  the fp32 log-normalizer, backward recomputes each chunk's logits.
- `LigerFusedLinearCE`: Liger's fused linear cross-entropy (CUDA, Triton), which computes
  the gradient of its input during the forward pass and keeps it for backward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sftkit.dtypes import FP32
from sftkit.dtypes import INT64 as INDEX

# trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE and trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE
FUSED_VOCAB_CHUNK = 32768
FUSED_TOKEN_CHUNK = 4096
# sftkit's chunked cross-entropy: at most this many logits per token chunk (64 MiB in fp32)
CHUNK_ELEMENTS = 2**24


@dataclass(frozen=True)
class LossQuery:
    """The numbers a loss head is priced from, for one micro-batch."""

    batch: int
    seq: int
    hidden: int
    vocab: int
    stream_bytes: int  # the final hidden states' dtype
    compute_bytes: int  # the matmul dtype (autocast)
    head_bytes: int  # the lm_head weight's element size
    head_trains: bool
    on_gpu: bool
    softcapping: bool = False
    labelled: int | None = None  # positions with a label (a rollout's completion); None: all

    @property
    def tokens(self) -> int:
        return self.batch * self.seq

    @property
    def positions(self) -> int:
        """Positions a shifted head scores: every token but the last of each sequence."""
        return self.batch * max(self.seq - 1, 0)


class LossHead:
    """A way to compute the loss. Subclasses declare what it keeps; the defaults keep
    nothing."""

    #: the value of ``training.loss`` that selects it
    name: str = ""
    #: a trained lm_head runs as an ordinary linear layer and saves its input
    saves_lm_head_input: bool = False
    #: the head multiplies the lm_head weight itself: autocast keeps no bf16 copy of it
    casts_lm_head: bool = True
    #: why it cannot run on a CPU, or None
    cpu_problem: str | None = None
    #: (import name, pip package) it needs at run time beyond the training stack
    requires: tuple[tuple[str, str], ...] = ()

    def saved_bytes(self, q: LossQuery) -> int:
        return 0

    def transient_bytes(self, q: LossQuery) -> int:
        return 0

    def no_grad_bytes(self, q: LossQuery) -> int:
        """The peak of the head's forward without autograd (a rollout's per-token
        log-probabilities), the final hidden states it reads excluded. Unless a head declares
        it: what its training forward and backward hold, an upper bound."""
        return self.saved_bytes(q) + self.transient_bytes(q)

    def labels(self, q: LossQuery) -> tuple[tuple[str, str], tuple[str, str]]:
        """(name, formula) of the saved part and of the transient part."""
        return (("loss: saved tensors", ""), ("loss: transients", ""))

    def note(self) -> str:
        return f"loss computed by {self.name}."


@dataclass(frozen=True)
class FullLogits(LossHead):
    name = "full"
    saves_lm_head_input = True
    casts_lm_head = False

    def saved_bytes(self, q: LossQuery) -> int:
        # log_softmax keeps its fp32 output; nll_loss its int64 targets (a view of the padded
        # s + 1 labels for a single row) and fp32 total weight; the trainer divides the sum
        # by an int64 token count.
        n = q.tokens
        total = FP32 * q.vocab * n + INDEX * (n + (1 if q.batch == 1 else 0)) + FP32 + INDEX
        if q.softcapping:
            total += q.compute_bytes * q.vocab * n  # tanh keeps its output
        return total

    def transient_bytes(self, q: LossQuery) -> int:
        # forward: the logits and their fp32 copy (or the fp32 entropy temporaries);
        # backward: fp32 gradients of the log-probabilities and of the logits.
        return max(2 * FP32, q.compute_bytes + FP32) * q.vocab * q.tokens

    def labels(self, q: LossQuery) -> tuple[tuple[str, str], tuple[str, str]]:
        vocab = f"{q.vocab:,}"
        return (
            (
                f"loss: fp32 log-probabilities over {vocab} tokens ({q.batch} x {q.seq} tokens)",
                "4 x vocab per token + labels (logits.float() then log_softmax)",
            ),
            (
                f"cross-entropy backward: fp32 gradients over {vocab} tokens",
                "2 x 4 x vocab per token",
            ),
        )

    def note(self) -> str:
        return "loss computed on full fp32 logits (transformers' ForCausalLMLoss)."


@dataclass(frozen=True)
class TrlChunkedLogProb(LossHead):
    name = "trl"

    def saved_bytes(self, q: LossQuery) -> int:
        # A copy of the scored hidden states, int64 targets, fp32 log-normalizer and entropy.
        p = q.positions
        per = q.stream_bytes * q.hidden + INDEX + 2 * FP32
        extra = 0
        if q.on_gpu:
            # compact: hidden_states[mask] keeps its int64 (row, column) indices, and both
            # outputs are scattered back through the same bool mask
            per += 2 * INDEX + 1
        else:
            per += 2  # every position scored; log-probs and entropy each keep their own ~mask
            if q.batch == 1:  # hidden[:, :-1] of one row is contiguous: a view of all s rows
                extra += q.stream_bytes * q.hidden
        return p * per + extra + INDEX  # + the int64 token count the loss is divided by

    def transient_bytes(self, q: LossQuery) -> int:
        # One logits tile in the compute dtype, bf16 copies of the hidden chunk and weight
        # chunk it multiplies, the fp32 gradient accumulators of the hidden states (and of
        # lm_head when it trains) with their casts back.
        p, h, c = q.positions, q.hidden, q.compute_bytes
        rows, cols = min(p, FUSED_TOKEN_CHUNK), min(q.vocab, FUSED_VOCAB_CHUNK)
        # TRL allocates the tile buffer 32768 wide whatever the vocabulary (kernels/
        # chunked_logprob.py: torch.empty((min(N, 4096), chunk_size)))
        total = rows * FUSED_VOCAB_CHUNK * c
        if q.stream_bytes != c:
            total += rows * h * c
        if q.head_bytes != c:
            total += cols * h * c
        total += p * h * (FP32 + q.stream_bytes)
        if q.head_trains:
            total += q.vocab * h * (FP32 + q.head_bytes)
        if not q.on_gpu:
            total += 4 * rows * cols * FP32  # the CPU fold works on fp32 copies of the tile
        return total

    def no_grad_bytes(self, q: LossQuery) -> int:
        # TRL's helper masks the labels (int64, every token); the head scores on the GPU only
        # the labelled positions (hidden_states[mask], labels[mask]), elsewhere every one
        # (labels.clamp, and hidden[:, :-1].reshape copies the rows of a batch). Then seven
        # fp32 running statistics per scored position, the whole 4096 x 32768 tile buffer in
        # the compute dtype, the casts of the hidden chunk and of the weight chunk, and on
        # the CPU the fold's fp32 copies of one vocabulary chunk (z, exp(z - max), e * z).
        every = q.positions
        scored = q.labelled if q.on_gpu and q.labelled is not None else every
        h, c = q.hidden, q.compute_bytes
        rows, cols = min(scored, FUSED_TOKEN_CHUNK), min(q.vocab, FUSED_VOCAB_CHUNK)
        total = INDEX * q.tokens + every  # the masked labels, the bool mask
        if q.on_gpu:
            total += scored * (q.stream_bytes * h + INDEX)
        else:
            total += INDEX * every + (q.stream_bytes * h * every if q.batch > 1 else 0)
        total += 7 * FP32 * scored + rows * FUSED_VOCAB_CHUNK * c
        if q.stream_bytes != c:
            total += rows * h * c
        if q.head_bytes != c:
            total += cols * h * c
        if not q.on_gpu:
            total += rows * cols * FP32 * (3 if c == FP32 else 4)
        return total

    def labels(self, q: LossQuery) -> tuple[tuple[str, str], tuple[str, str]]:
        return (
            (
                f"loss: TRL chunked log-prob head, saved hidden states and log-Z ({q.batch} x {q.seq} tokens)",
                "per position: hidden x stream dtype + targets + fp32 log-Z and entropy",
            ),
            (
                f"loss: 4096 x 32768 logits tiles and gradient accumulators (vocabulary {q.vocab:,})",
                "compute-dtype tile + casts + fp32 grad of the hidden states (and of lm_head)",
            ),
        )

    def note(self) -> str:
        return "loss computed by TRL's chunked log-prob head (no full logits)."


def chunk_tokens(vocab: int, tokens: int) -> int:
    """Tokens per chunk of sftkit's chunked cross-entropy: the largest power of two whose
    (chunk x vocabulary) tile has at most `CHUNK_ELEMENTS` logits, and no more than the
    batch holds."""
    per = max(1, CHUNK_ELEMENTS // max(vocab, 1))
    return max(1, min(2 ** int(math.log2(per)), tokens))


@dataclass(frozen=True)
class ChunkedCrossEntropy(LossHead):
    name = "chunked"

    def saved_bytes(self, q: LossQuery) -> int:
        # The hidden states (a view of the final norm's output), the shifted int64 targets
        # (for a single row a view of the padded s + 1 labels) and the fp32 log-normalizer
        # per token; the trainer's int64 token count.
        n = q.tokens
        single = INDEX if q.batch == 1 else 0
        return n * (q.stream_bytes * q.hidden + INDEX + FP32) + single + INDEX

    def transient_bytes(self, q: LossQuery) -> int:
        # One chunk at a time (`sftkit.training.loss`), multiplied in the lm_head's own dtype
        # (no copy of the weight): forward holds the chunk's fp32 logits and its softmax (the
        # head-dtype logits only until upcast), backward the fp32 gradient tile and its cast
        # to the head dtype; per-token fp32/int64/bool working vectors; in backward the
        # gradient of the hidden states (and the fp32 lm_head gradient accumulator with its
        # cast and an fp32 copy of the hidden chunk, when lm_head trains).
        n, h, w = q.tokens, q.hidden, q.head_bytes
        t = chunk_tokens(q.vocab, n)
        total = t * q.vocab * max(2 * FP32, FP32 + w) + t * h * w + n * (FP32 + INDEX + 1)
        if q.stream_bytes != w:
            total += t * h * w  # the hidden chunk cast
        total += n * h * q.stream_bytes
        if q.head_trains:
            total += q.vocab * h * (FP32 + q.head_bytes) + t * h * FP32
        return total

    def labels(self, q: LossQuery) -> tuple[tuple[str, str], tuple[str, str]]:
        t = chunk_tokens(q.vocab, q.tokens)
        return (
            (
                f"loss: sftkit chunked cross-entropy, saved hidden states and log-Z ({q.batch} x {q.seq} tokens)",
                "per token: hidden x stream dtype + int64 target + fp32 log-Z",
            ),
            (
                f"loss: {t}-token logits chunks, recomputed in backward (vocabulary {q.vocab:,})",
                "chunk x vocab x (compute + 2 x 4) + grad of the hidden states (and of lm_head)",
            ),
        )

    def note(self) -> str:
        return "loss computed by sftkit's chunked cross-entropy (no full logits; recomputed in backward)."


@dataclass(frozen=True)
class LigerFusedLinearCE(LossHead):
    name = "liger"
    requires = (("liger_kernel", "liger-kernel"),)
    cpu_problem = (
        "Liger's fused linear cross-entropy is a Triton kernel that needs a CUDA GPU; "
        "training.loss=chunked is sftkit's pure-torch equivalent"
    )

    def saved_bytes(self, q: LossQuery) -> int:
        # sftkit asks LigerFusedLinearCrossEntropyFunction for per-token losses
        # (reduction="none", liger-kernel 0.8): it then defers the gradients to backward and
        # keeps its input (the final hidden states) and the int64 targets; the trainer
        # divides by an int64 token count.
        n = q.tokens
        return n * (q.hidden * q.stream_bytes + INDEX) + INDEX

    def transient_bytes(self, q: LossQuery) -> int:
        # Chunks of about tokens x hidden / vocabulary rows (a power of two), each chunk's
        # logits in the compute dtype (overwritten in place by their gradient), the fp32
        # per-token loss and accuracy, autocast's copy of a weight not in the compute dtype;
        # backward recomputes the chunks and fills the gradient of the hidden states (and of
        # lm_head when it trains, in its dtype).
        n, h, c = q.tokens, q.hidden, q.compute_bytes
        inc = math.ceil(q.vocab / h)
        chunk = min(2 ** math.ceil(math.log2(max(1, math.ceil(n / inc)))), n)
        total = chunk * q.vocab * c + chunk * h * c + 2 * n * FP32 + n * h * q.stream_bytes
        if q.head_bytes != c:
            total += q.vocab * h * c
        if q.head_trains:
            total += q.vocab * h * q.head_bytes
        return total

    def labels(self, q: LossQuery) -> tuple[tuple[str, str], tuple[str, str]]:
        return (
            (
                f"loss: Liger fused linear cross-entropy, saved hidden states ({q.batch} x {q.seq} tokens)",
                "hidden x stream dtype + int64 target per token",
            ),
            (
                f"loss: Liger logits chunks (vocabulary {q.vocab:,})",
                "chunk x vocab x compute dtype, chunk = tokens x hidden / vocab",
            ),
        )

    def note(self) -> str:
        return "loss computed by Liger's fused linear cross-entropy (no full logits; CUDA only)."


#: the built-in heads (registered in `sftkit.builtin.training`); ``auto`` is TRL's head from
#: TRL 1.15, else the full logits (the estimator's setup)
LOSS_HEADS: dict[str, LossHead] = {
    "full": FullLogits(),
    "chunked": ChunkedCrossEntropy(),
    "liger": LigerFusedLinearCE(),
}
TRL_HEAD = TrlChunkedLogProb()
