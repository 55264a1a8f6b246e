"""What the installed trainer does that changes memory, found without importing it.

TRL's SFTTrainer (1.x) patches the model with ``add_fused_lm_head``: the loss comes from a
chunked log-probability head that never builds the (tokens x vocabulary) logits. Older TRL
releases let transformers compute ``ForCausalLMLoss`` on the full logits. The estimator asks
which one the installed TRL does by reading its source (``importlib.util.find_spec`` does not
import the package), so ``estimate-memory`` stays torch-free.

``SFTKIT_LOSS_HEAD=fused|full`` overrides the detection (e.g. to price a plain transformers
Trainer).
"""

from __future__ import annotations

import importlib.util
import os
from functools import cache
from pathlib import Path
from typing import Literal

LossHead = Literal["fused", "full"]
ENV = "SFTKIT_LOSS_HEAD"

# trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE and trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE
FUSED_VOCAB_CHUNK = 32768
FUSED_TOKEN_CHUNK = 4096


@cache
def _installed_trl_fuses() -> bool | None:
    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        source = Path(location) / "trainer" / "sft_trainer.py"
        if source.is_file():
            return "add_fused_lm_head(" in source.read_text(encoding="utf-8", errors="ignore")
    return None


def loss_head() -> LossHead:
    """``fused`` when training goes through TRL's chunked log-prob head (also assumed when
    TRL is not installed: what ``pip install 'sftkit[train]'`` gets today), else ``full``."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced in ("fused", "full"):
        return forced  # type: ignore[return-value]
    return "full" if _installed_trl_fuses() is False else "fused"
