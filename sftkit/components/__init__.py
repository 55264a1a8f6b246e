"""What a strategy is made of, described without torch: a base storage and adapters.

A strategy spec composes one `BaseStorage` (how the frozen base weights are stored: dense,
bitsandbytes 4-bit, LLM.int8) with one or more `Adapter`s (what trains: every weight, LoRA,
trained copies of whole modules). From a model shape each part declares the tensors it
creates, with their dtype and whether they train, and the facts the activation model needs.
The memory estimator prices any strategy, built-in or third-party, from those declarations
alone; nothing outside this package asks which kind a part is.
"""

from sftkit.components.adapters import Adapter, FullTraining, LoRA, LowRankLayer, TrainedCopies
from sftkit.components.composition import Composition
from sftkit.components.loss import LossHead, LossQuery
from sftkit.components.storage import BaseStorage, Bnb4bit, Dense, LlmInt8
from sftkit.components.tensors import LaidTensor, Precision, TensorKind

__all__ = [
    "Adapter",
    "BaseStorage",
    "Bnb4bit",
    "Composition",
    "Dense",
    "FullTraining",
    "LaidTensor",
    "LlmInt8",
    "LoRA",
    "LossHead",
    "LossQuery",
    "LowRankLayer",
    "Precision",
    "TensorKind",
    "TrainedCopies",
]
