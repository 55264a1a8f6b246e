"""Which attention kernel a run's rows go through, and what it keeps: one answer for the
model loader (the ``attn_implementation`` transformers is given) and the estimator (which
attention memory it prices, and what its note says). Torch-free.

Rows reach attention in one of two shapes. Padded batches carry a 2-D padding mask.
Packed rows (``data.packing``: TRL's best-fit packing, padding-free) carry the documents'
``position_ids`` and cumulative lengths (``cu_seq_lens_q``) instead. transformers turns
packed position ids into a block-diagonal s x s mask for SDPA and eager; with
``training.mask_free_packing`` the documents are kept apart by their boundaries alone:

- FlashAttention 2/3 (``flash_attn`` installed) always does: its variable-length kernels
  read the cumulative lengths;
- on CUDA, transformers' ``flex_attention`` with a document-causal block mask (a few
  integers per 128 x 128 tile, built from the position ids);
- elsewhere (the CPU: flex attention has no CPU backward), causal SDPA run once per packed
  document, no mask tensor at all.

The model loads with sftkit's registered implementation for both of the last two
(`sftkit.modeling.attention`), which leaves padded rows and generation to SDPA; the
estimate prices the kernel the packed rows go through.
"""

from __future__ import annotations

from dataclasses import dataclass

# the name sftkit registers with transformers' AttentionInterface (sftkit.modeling.attention)
SEQUENCE_SDPA = "sftkit_sequence_sdpa"
FLEX_BLOCK = 128  # flex attention's tile: its block mask keeps integers per tile pair


@dataclass(frozen=True)
class Attention:
    implementation: str  # what transformers is given as attn_implementation
    dense_mask: bool  # padded or packed rows get a 4-D s x s mask
    description: str  # what the estimate assumed, in a few words

    @property
    def block_mask(self) -> bool:
        return self.implementation == "flex_attention"


def attention_for(configured: str, *, packing: bool, mask_free: bool, on_gpu: bool) -> Attention:
    """The kernel for a recipe's rows (``model.attn_implementation``, ``data.packing``,
    ``training.mask_free_packing``) on a GPU or the CPU."""
    if configured.startswith("flash"):
        return Attention(configured, False, f"{configured}, variable-length (no mask)")
    if packing and mask_free and configured == "sdpa":
        if on_gpu:
            return Attention(
                "flex_attention", False, "flex_attention, document-causal block mask (no s x s)"
            )
        return Attention(SEQUENCE_SDPA, False, "causal SDPA per packed document (no mask)")
    rows = "packed documents" if packing else "padded rows"
    return Attention(configured, True, f"{configured} with an s x s mask ({rows})")
