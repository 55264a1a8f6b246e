"""Data: dataset formats, prompt templates, preparation into train/dev/test, tokenization.

Nothing here imports torch; `datasets`/`transformers` are imported only where a hub dataset
or a tokenizer is actually used.
"""

from __future__ import annotations

from sftkit.data.example import Example
from sftkit.data.prepare import PreparedData, load_split, prepare_data, prepared_dir

__all__ = ["Example", "PreparedData", "load_split", "prepare_data", "prepared_dir"]
