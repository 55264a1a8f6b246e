"""The loss heads ``training.loss`` names, at run time (their memory: `sftkit.components.loss`).

TRL's SFTTrainer (>= 1.15) computes the loss as ``model(**inputs, fused_lm_head=True)``, a
forward that `trl.trainer.utils.add_fused_lm_head` installs and that returns per-token
log-probabilities, entropies and top-1 hits (`FusedCausalLMOutput`) instead of logits.
`SftkitTrainer.compute_loss` hands TRL a `HeadedModel` in the model's place, which computes
the same outputs with sftkit's head (the model itself is left as it is):

- ``full``: the (tokens x vocabulary) logits, fp32 log-softmax, per-token NLL: the reference
  transformers' ``ForCausalLMLoss`` computes, token by token;
- ``chunked``: `ChunkedCrossEntropy`, a custom autograd Function over the final hidden
  states that never builds the whole logits: each token chunk's logits are computed,
  folded into a log-normalizer and dropped; backward recomputes them chunk by chunk;
- ``liger``: Liger's fused linear cross-entropy (CUDA only).

Every head scores the next token of every position but the last of each row (labels
shifted left, padded with -100): the loss the model's own forward computes.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from sftkit.components.loss import chunk_tokens
from sftkit.errors import SftkitError

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe

IGNORE = -100


def shifted_labels(labels: torch.Tensor) -> torch.Tensor:
    """Each position's next-token label (-100 after the last), as ``ForCausalLMLoss``."""
    return F.pad(labels, (0, 1), value=IGNORE)[..., 1:].contiguous()


class ChunkedCrossEntropy(torch.autograd.Function):
    """Per-token log-probabilities of `targets` under ``hidden @ weight.T (+ bias)``, token
    chunk by token chunk. Forward keeps the hidden states, the targets and the fp32
    log-normalizer; backward recomputes each chunk's logits. Returns (log-probabilities,
    entropies, top-1 hits), zero where the target is -100; only the first has a gradient."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        chunk: int,
        dtype: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = hidden.shape[0]
        valid = targets != IGNORE
        safe = targets.clamp(min=0)
        wide = _wide(dtype)
        lse = torch.empty(n, dtype=wide, device=hidden.device)
        log_probs = torch.zeros(n, dtype=wide, device=hidden.device)
        entropy = torch.zeros(n, dtype=wide, device=hidden.device)
        top1 = torch.zeros(n, dtype=torch.bool, device=hidden.device)
        w = weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        with torch.autocast(hidden.device.type, enabled=False):
            for i in range(0, n, chunk):
                j = min(i + chunk, n)
                x = _logits(hidden[i:j], w, b, dtype)  # fp32 (chunk, vocab)
                top1[i:j] = x.argmax(-1) == safe[i:j]
                top = x.amax(-1)
                x.sub_(top[:, None])
                p = x.exp()
                total = p.sum(-1)
                lse[i:j] = top + total.log()
                x.sub_(total.log()[:, None])  # log-probabilities
                log_probs[i:j] = x.gather(1, safe[i:j, None]).squeeze(1)
                entropy[i:j] = -p.div_(total[:, None]).mul_(x).sum(-1)
                del x, p
        log_probs.masked_fill_(~valid, 0.0)
        entropy.masked_fill_(~valid, 0.0)
        top1.logical_and_(valid)
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk, ctx.dtype = chunk, dtype
        ctx.mark_non_differentiable(entropy, top1)
        return log_probs, entropy, top1

    @staticmethod
    def backward(
        ctx: Any, grad_log_probs: torch.Tensor, *_: Any
    ) -> tuple[torch.Tensor | None, ...]:
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        chunk, dtype = ctx.chunk, ctx.dtype
        n = hidden.shape[0]
        wide = _wide(dtype)
        g = grad_log_probs.to(wide).masked_fill(targets == IGNORE, 0.0)
        safe = targets.clamp(min=0)
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=wide, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=wide, device=bias.device) if need_b else None
        w = weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        with torch.autocast(hidden.device.type, enabled=False):
            for i in range(0, n, chunk):
                j = min(i + chunk, n)
                x = _logits(hidden[i:j], w, b, dtype)
                # d log p[target] / d logits = onehot(target) - softmax
                x.sub_(lse[i:j, None]).exp_().mul_(-g[i:j, None])
                x.scatter_add_(1, safe[i:j, None], g[i:j, None])
                if grad_h is not None:
                    grad_h[i:j] = (x.to(dtype) @ w).to(hidden.dtype)
                if grad_w is not None:
                    grad_w.addmm_(x.t(), hidden[i:j].to(wide))
                if grad_b is not None:
                    grad_b.add_(x.sum(0))
                del x
        return (
            grad_h,
            None if grad_w is None else grad_w.to(weight.dtype),
            None if grad_b is None else grad_b.to(bias.dtype),
            None,
            None,
            None,
        )


def _logits(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    """One chunk's logits, computed in `dtype` and returned in fp32 (or wider)."""
    out = hidden.to(dtype) @ weight.t()
    if bias is not None:
        out = out + bias
    return out.to(_wide(dtype))


def _wide(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def chunked_head(
    hidden: torch.Tensor, lm_head: torch.nn.Module, labels: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    targets = shifted_labels(labels)
    b, s, h = hidden.shape
    weight: torch.Tensor = lm_head.weight  # type: ignore[assignment]
    bias = getattr(lm_head, "bias", None)
    chunk = chunk_tokens(int(weight.shape[0]), b * s)
    # The matmul runs in the lm_head's own dtype: no copy of the weight is ever made (an
    # fp32 head, as k-bit preparation leaves it, multiplies in fp32).
    log_probs, entropy, top1 = ChunkedCrossEntropy.apply(
        hidden.reshape(b * s, h), weight, bias, targets.view(-1), chunk, weight.dtype
    )
    mask = targets != IGNORE
    return log_probs.view(b, s), entropy.view(b, s), top1.view(b, s), mask


def full_head(
    hidden: torch.Tensor, lm_head: torch.nn.Module, labels: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    targets = shifted_labels(labels)
    logits = lm_head(hidden)
    vocab = logits.shape[-1]
    log_softmax = F.log_softmax(logits.float().view(-1, vocab), dim=-1)
    del logits
    flat = targets.view(-1)
    nll = F.nll_loss(log_softmax, flat, ignore_index=IGNORE, reduction="none")
    with torch.no_grad():
        p = log_softmax.exp()
        entropy = -p.mul_(log_softmax).sum(-1)
        del p
        mask = targets != IGNORE
        entropy = entropy.view(targets.shape).masked_fill_(~mask, 0.0)
        top1 = (log_softmax.argmax(-1) == flat).view(targets.shape) & mask
    return (-nll).view(targets.shape), entropy, top1, mask


def liger_head(
    hidden: torch.Tensor, lm_head: torch.nn.Module, labels: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    from liger_kernel.transformers.fused_linear_cross_entropy import (
        LigerFusedLinearCrossEntropyLoss,
    )

    targets = shifted_labels(labels)
    b, s, h = hidden.shape
    loss = LigerFusedLinearCrossEntropyLoss(reduction="none", return_token_accuracy=True)
    out = loss(lm_head.weight, hidden.reshape(b * s, h), targets.view(-1), lm_head.bias)
    mask = targets != IGNORE
    log_probs = (-out.loss).view(b, s).masked_fill(~mask, 0.0)
    top1 = (out.token_accuracy.view(b, s) > 0) & mask
    # Liger computes no entropy: the trainer's entropy metric reads 0 with this head.
    return log_probs, torch.zeros_like(log_probs, dtype=torch.float32), top1, mask


def base_model(model: Any) -> Any:
    """The transformers model under PEFT's (and DDP's) wrappers."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class _Capture(torch.nn.Module):
    """Stands in for the lm_head during one forward: keeps the final hidden states and
    returns no logits, so the model never builds them."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden: torch.Tensor | None = None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        self.hidden = hidden
        return hidden.new_empty(*hidden.shape[:-1], 0)


class HeadedModel:
    """`model` as TRL's `compute_loss` calls it, with the loss computed by `head`:
    ``HeadedModel(model, head)(**inputs, fused_lm_head=True)`` returns what TRL's fused
    head returns (per-token log-probabilities, entropies, top-1 hits), computed from the
    final hidden states; any other call is the model's own. The model itself is never
    changed: its output embedding stands aside only for the duration of the call
    (`set_output_embeddings`), so generation and saving see the model as it is."""

    def __init__(self, model: Any, head: Callable[..., tuple[torch.Tensor, ...]]) -> None:
        self.model, self.head = model, head
        self.base = base_model(model)
        check_model(self.base)
        self.lm_head = self.base.get_output_embeddings()

    def __call__(
        self,
        *args: Any,
        fused_lm_head: bool = False,
        labels: torch.Tensor | None = None,
        shift_labels: torch.Tensor | None = None,
        num_items_in_batch: Any = None,
        **kwargs: Any,
    ) -> Any:
        if not fused_lm_head:
            for key, value in (("labels", labels), ("shift_labels", shift_labels)):
                if value is not None:
                    kwargs[key] = value
            return self.model(*args, **kwargs)
        if shift_labels is not None or labels is None:
            raise SftkitError(
                "sftkit's loss heads need the labels (context and sequence parallelism, "
                "which pass pre-shifted labels, are not supported).",
                hint="Use training.loss=auto.",
            )
        capture = _Capture()
        self.base.set_output_embeddings(capture)
        try:
            self.model(*args, **{**kwargs, "use_cache": False})
        finally:
            self.base.set_output_embeddings(self.lm_head)
        hidden = capture.hidden
        assert hidden is not None, "the model's forward never reached its output embedding"
        weight = self.lm_head.weight
        log_probs, entropy, top1, mask = self.head(
            hidden.to(weight.device), self.lm_head, labels.to(weight.device)
        )
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return _output(
            loss=-log_probs.sum() / count,
            log_probs=log_probs,
            entropy=entropy,
            is_top1=top1,
            label_mask=mask,
        )


def _output(**fields: Any) -> Any:
    try:
        from trl.trainer.utils import FusedCausalLMOutput
    except ImportError:  # pragma: no cover - TRL < 1.15 never reaches here (check_loss_head)
        return types.SimpleNamespace(**fields)
    return FusedCausalLMOutput(**fields)


def check_model(base: Any) -> None:
    """A model whose logits are scaled is left to TRL's head, which implements that."""
    config = (
        base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    )
    for key in ("final_logit_softcapping", "logit_scale", "logits_scaling"):
        if getattr(config, key, None) not in (None, 1.0):
            raise SftkitError(
                f"training.loss: this model scales its logits ({key}), which sftkit's "
                "loss heads do not implement.",
                hint="Use training.loss=auto (TRL's fused head handles it).",
            )


def check_loss_head(resolved: ResolvedRecipe, device: str) -> None:
    """Before anything loads: the recipe's loss head can run here with the installed TRL."""
    import importlib.util

    from sftkit.errors import MissingDependencyError
    from sftkit.memory.setup import TRL_FUSED_HEAD, installed_trl

    name = resolved.recipe.training.loss
    if name == "auto":
        return
    head = resolved.registry.loss_heads.get(name).memory
    if head.cpu_problem and device != "cuda":
        raise SftkitError(
            f"training.loss={name} cannot run on {device}: {head.cpu_problem}.",
            hint="Add the override training.loss=chunked (or auto) to train on the CPU.",
        )
    release = installed_trl()
    if release is not None and release < TRL_FUSED_HEAD:
        shown = ".".join(map(str, release))
        raise SftkitError(
            f"training.loss={name} plugs into the fused-head interface of TRL >= "
            f"{'.'.join(map(str, TRL_FUSED_HEAD))}; TRL {shown} is installed.",
            hint="pip install -U 'trl>=1.15', or use training.loss=auto.",
        )
    for module, package in head.requires:
        if importlib.util.find_spec(module) is None:
            raise MissingDependencyError(package, f"training.loss={name}")


def trl_config_kwargs() -> dict[str, Any]:
    """SFTConfig arguments that make the installed TRL compute what ``auto`` prices: TRL 1.7
    to 1.14 defaulted to their own chunked NLL, which sftkit does not price; ``nll`` there
    is the full-logits loss."""
    from sftkit.memory.setup import TRL_CHUNKED_NLL_DEFAULT, TRL_FUSED_HEAD, installed_trl

    release = installed_trl()
    if release is not None and TRL_CHUNKED_NLL_DEFAULT <= release < TRL_FUSED_HEAD:
        return {"loss_type": "nll"}
    return {}


def runtime_head(resolved: ResolvedRecipe) -> Callable[..., tuple[torch.Tensor, ...]] | None:
    """The function computing the recipe's loss head (None: ``auto``, TRL's own)."""
    from sftkit.specs import load_factory

    name = resolved.recipe.training.loss
    if name == "auto":
        return None
    head: Callable[..., tuple[torch.Tensor, ...]] = load_factory(
        resolved.registry.loss_heads.get(name).factory
    )
    return head
