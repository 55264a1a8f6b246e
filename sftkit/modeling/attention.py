"""Causal SDPA run once per packed document: packed rows without a mask tensor where
neither FlashAttention's variable-length kernels nor flex attention's backward can run (the
CPU). Registered with transformers' public ``AttentionInterface`` and
``AttentionMaskInterface`` under `sftkit.attention.SEQUENCE_SDPA`.

A packed row (TRL's padding-free collator) comes without an attention mask and with
``cu_seq_lens_q`` (or, without them, ``position_ids`` restarting at 0 per document); each
document attends causally to itself alone, exactly as if it were run by itself. Anything
else (a padding mask, a KV cache during generation) goes to transformers' own SDPA.
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
) -> tuple[Any, None]:
    import torch
    from torch.nn.functional import scaled_dot_product_attention
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

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
    """No mask for unpadded rows (the documents' boundaries travel in the kwargs);
    transformers' SDPA mask for padded ones."""
    if attention_mask is None:
        return None
    from transformers.masking_utils import sdpa_mask

    return sdpa_mask(attention_mask=attention_mask, **kwargs)


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
    return register() if chosen == SEQUENCE_SDPA else chosen
