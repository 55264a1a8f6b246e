"""Tiny Llama models and recipes for the training tests (hidden 64, 2 layers: seconds on a
CPU; 64 is the smallest width bitsandbytes' CPU 4-bit kernel takes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

ASSET = Path(__file__).resolve().parent.parent / "sftkit" / "assets" / "models" / "tiny-llama"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 128,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}


def config_dir(path: Path) -> Path:
    """A model directory with the tiny config and the bundled tokenizer, no weights."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(CONFIG))
    for name in TOKENIZER_FILES:
        shutil.copy(ASSET / name, path / name)
    return path


def saved_model_dir(path: Path, seed: int = 0) -> Path:
    """Like a hub download: config, random weights (safetensors) and tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config_dir(path)
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path)).save_pretrained(path)
    return path


def recipe_text(
    model: Path,
    output_dir: Path,
    *,
    strategy: str = "full-sft",
    strategy_options: dict[str, Any] | None = None,
    optimizer: str = "adamw",
    optimizer_options: dict[str, Any] | None = None,
    random_init: bool = True,
    train_rows: int = 9,
    max_steps: int = 4,
    micro_batch_size: int = 8,
    save_steps: int | None = None,
    extra: str = "",
) -> str:
    return f"""
model:
  name_or_path: {model}
  dtype: float32
  random_init: {str(random_init).lower()}
strategy: {{name: {strategy}, options: {json.dumps(strategy_options or {})}}}
optimizer: {{name: {optimizer}, options: {json.dumps(optimizer_options or {"lr": 3e-3})}}}
data:
  format:
    name: synthetic-arithmetic
    options: {{train_size: {train_rows}, test_size: 4, dev_size: 1, max_operand: 9}}
  template: {{name: tutor, options: {{instruction: ""}}}}
training:
  micro_batch_size: {micro_batch_size}
  max_steps: {max_steps}
  max_seq_length: 160
  gradient_checkpointing: false
  precision: fp32
  lr_scheduler: constant
  warmup_ratio: 0.0
  logging_steps: 1
  save_steps: {"null" if save_steps is None else save_steps}
  save_total_limit: 5
  seed: 7
hardware: {{gpu: cpu}}
output_dir: {output_dir}
{extra}
"""
