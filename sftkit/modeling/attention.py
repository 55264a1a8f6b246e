"""Packed rows without a dense mask, registered with transformers' public
``AttentionInterface`` and ``AttentionMaskInterface`` under `sftkit.attention.SEQUENCE_SDPA`
(what a recipe with ``training.mask_free_packing`` loads with, unless it uses FlashAttention).

A packed row (TRL's padding-free collator) comes without an attention mask and with
``cu_seq_lens_q`` (or, without them, ``position_ids`` restarting at 0 per document); each
document attends causally to itself alone, exactly as if it were run by itself:

- on CUDA the mask function builds transformers' flex-attention ``BlockMask`` from the
  packed position ids (document-causal, a few integers per 128 x 128 tile) and the forward
  runs transformers' ``flex_attention_forward``;
- elsewhere (the CPU: flex attention has no backward there) the mask is None and causal SDPA
  runs once per document.

Anything else (a padding mask, a KV cache while generating) gets transformers' own SDPA mask
and forward, so evaluation after training runs as it would without the switch.
"""

from __future__ import annotations

import itertools
from typing import Any

from sftkit.attention import SEQUENCE_SDPA


def document_spans(kwargs: dict[str, Any], length: int, rows: int) -> list[list[tuple[int, int]]]:
    """[start, end) of each document per row, from the collator's cumulative lengths (one
    row) or the position ids; empty when the rows carry neither."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is not None and rows == 1 and int(cu[-1]) == length:
        bounds = [int(x) for x in cu.tolist()]
        return [list(itertools.pairwise(bounds))]
    positions = kwargs.get("position_ids")
    if positions is None or positions.shape[-1] != length:
        return []
    positions = positions.expand(rows, -1)
    spans = []
    for row in positions:
        # a document starts wherever the position does not follow the one before
        starts = [0, *((row[1:] - row[:-1] != 1).nonzero().flatten() + 1).tolist()]
        spans.append(list(zip(starts, [*starts[1:], length], strict=True)))
    return spans


def sequence_sdpa_forward(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Any, Any]:
    import torch
    from torch.nn.functional import scaled_dot_product_attention
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if _is_block_mask(attention_mask):  # a packed row on CUDA
        from transformers.integrations.flex_attention import flex_attention_forward

        return flex_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, **kwargs
        )
    rows, _, length, _ = query.shape
    spans = (
        []
        if attention_mask is not None or key.shape[2] != length
        else (document_spans(kwargs, length, rows))
    )
    if not spans:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask,
            dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs,
        )  # fmt: skip
    gqa = getattr(module, "num_key_value_groups", 1) > 1
    outputs = []
    for r, row_spans in enumerate(spans):
        pieces = [
            scaled_dot_product_attention(
                query[r : r + 1, :, a:b],
                key[r : r + 1, :, a:b],
                value[r : r + 1, :, a:b],
                dropout_p=dropout,
                scale=scaling,
                is_causal=True,
                enable_gqa=gqa,
            )
            for a, b in row_spans
        ]
        outputs.append(torch.cat(pieces, dim=2) if len(pieces) > 1 else pieces[0])
    out = torch.cat(outputs, dim=0) if rows > 1 else outputs[0]
    return out.transpose(1, 2).contiguous(), None


def sequence_sdpa_mask(*, attention_mask: Any = None, **kwargs: Any) -> Any:
    """Whole unpadded rows (training): on CUDA flex attention's block mask from the packed
    position ids (``mask_function`` already keeps the documents apart), elsewhere no mask
    (the documents' boundaries travel in the kwargs). Padded rows, and queries that do not
    start the row (a KV cache), get transformers' SDPA mask."""
    from transformers.masking_utils import flex_attention_mask, sdpa_mask

    whole_rows = kwargs.get("q_offset", 0) == 0 and kwargs["q_length"] == kwargs["kv_length"]
    if attention_mask is None and whole_rows:
        if str(kwargs.get("device", "cpu")).startswith("cuda"):
            return flex_attention_mask(attention_mask=None, **kwargs)
        return None
    return sdpa_mask(attention_mask=attention_mask, **kwargs)


def _is_block_mask(mask: Any) -> bool:
    return type(mask).__name__ == "BlockMask"


def register() -> str:
    """Make `SEQUENCE_SDPA` a valid ``attn_implementation`` (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(SEQUENCE_SDPA, sequence_sdpa_forward)
    AttentionMaskInterface.register(SEQUENCE_SDPA, sequence_sdpa_mask)
    return SEQUENCE_SDPA


def runtime_attention(recipe: Any, device: str) -> str:
    """The ``attn_implementation`` a recipe's model is loaded with on `device`
    (`sftkit.attention.attention_for`), registered when it is sftkit's."""
    from sftkit.attention import attention_for
    from sftkit.devices import is_cpu

    chosen = attention_for(
        recipe.model.attn_implementation,
        packing=recipe.data.packing,
        mask_free=recipe.training.mask_free_packing,
        on_gpu=not is_cpu(device),
    ).implementation
    # flex attention for packed rows on CUDA, SDPA for anything else: both behind sftkit's name
    return register() if chosen in (SEQUENCE_SDPA, "flex_attention") else chosen
