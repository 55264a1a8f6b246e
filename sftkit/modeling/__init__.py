"""Model loading, shared by training, evaluation, export, data preview and measure mode:
the tokenizer, the base (from the hub, a directory, or seeded random weights; dense or
quantized as the strategy stores it), the strategy applied on top, and a finished run's
base and trained model. torch, transformers and peft are imported inside the functions.

``load`` builds the model a run trains; ``trained`` reads a finished run's models back;
``kernels`` checks, before anything loads, that the model's kernels can run on the device.
"""

from sftkit.modeling.load import (
    build_model,
    load_base_model,
    load_strategy,
    load_tokenizer,
    random_base,
    resolve_model_path,
    strategy_context,
    training_device,
    trust_remote_code_notice,
    with_pad_token,
)
from sftkit.modeling.trained import load_base, load_trained, run_recipe

__all__ = [
    "build_model",
    "load_base",
    "load_base_model",
    "load_strategy",
    "load_tokenizer",
    "load_trained",
    "random_base",
    "resolve_model_path",
    "run_recipe",
    "strategy_context",
    "training_device",
    "trust_remote_code_notice",
    "with_pad_token",
]
