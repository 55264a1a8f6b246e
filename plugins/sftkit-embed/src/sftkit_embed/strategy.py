"""The strategy objects: sftkit's LoRA strategies with PEFT `modules_to_save` added.
Imported only when a run builds the model (it imports peft)."""

from __future__ import annotations

from typing import Any

from sftkit import Lora, QLora


class _TrainModules:
    options: Any

    def lora_config(self) -> Any:
        config = super().lora_config()  # type: ignore[misc]
        config.modules_to_save = list(self.options.train_modules)
        return config


class LoraEmbed(_TrainModules, Lora):
    pass


class QLoraEmbed(_TrainModules, QLora):
    pass


def build_lora_embed(options: Any) -> LoraEmbed:
    return LoraEmbed(options)


def build_qlora_embed(options: Any) -> QLoraEmbed:
    return QLoraEmbed(options)
