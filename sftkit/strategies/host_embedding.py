"""The frozen input embedding table in host memory (``strategy.options.embeddings_on_host``).

A LoRA model's input embedding only looks rows up: it never multiplies, and it does not train.
`HostEmbedding` keeps the table on the CPU (pinned when CUDA is there) as a buffer under the
same state-dict key, looks the token ids up there and copies the rows to the device the ids
came from: b x s x hidden values per step, the same numbers as on the device, so the loss
and gradients are unchanged (tests/test_host_embedding.py). Being a buffer, not a parameter,
it neither sets the model's device (``model.device`` is its first parameter's) nor takes
part in any optimizer or upcast.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


class HostEmbedding(torch.nn.Module):
    def __init__(self, embedding: torch.nn.Embedding) -> None:
        super().__init__()
        weight = embedding.weight.detach().to("cpu")
        if torch.cuda.is_available():
            weight = weight.pin_memory()
        self.weight: torch.Tensor
        self.register_buffer("weight", weight)
        self.num_embeddings, self.embedding_dim = weight.shape
        self.padding_idx = embedding.padding_idx

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(input_ids.to("cpu"), self.weight, self.padding_idx)
        return rows.to(input_ids.device, non_blocking=True)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, in host memory"


def move_embeddings_to_host(model: Any) -> None:
    """Replace `model`'s input embedding by a `HostEmbedding` of the same table, freeing its
    device copy. Refuses a table that trains or is tied to the output layer."""
    from sftkit.errors import SftkitError

    embedding = model.get_input_embeddings()
    output = model.get_output_embeddings()
    if output is not None and output.weight is embedding.weight:
        raise SftkitError(
            "strategy.options.embeddings_on_host: the input embedding is tied to lm_head.",
            hint="Set strategy.options.embeddings_on_host=false for a model with tied embeddings.",
        )
    if embedding.weight.requires_grad:
        raise SftkitError("strategy.options.embeddings_on_host: the input embedding trains.")
    model.set_input_embeddings(HostEmbedding(embedding))
    del embedding
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
