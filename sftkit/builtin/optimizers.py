"""Built-in optimizers: torch AdamW and SGD, bitsandbytes 8-bit and paged AdamW, Adafactor."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from sftkit.hookspecs import Register, hookimpl
from sftkit.specs import (
    Blockwise8bitState,
    DenseMomentState,
    FactoredState,
    OptimizerSpec,
    Options,
)

# A moment's decay rate: 1 or more never forgets (or grows), below 0 flips sign every step.
Beta = Annotated[float, Field(ge=0, lt=1)]


class AdamWOptions(Options):
    lr: float = Field(default=2e-4, gt=0)
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)


class TorchAdamWOptions(AdamWOptions):
    fused: bool = Field(
        default=True,
        description="One fused kernel per step (no foreach temporaries); False uses foreach.",
    )


class Bnb8bitOptions(AdamWOptions):
    min_8bit_size: int = Field(
        default=4096, ge=1, description="Tensors smaller than this keep 32-bit state."
    )


class AdafactorOptions(Options):
    # Defaults as transformers' Trainer uses Adafactor: a fixed lr that the recipe's
    # scheduler drives. lr: null switches to Adafactor's own relative step size (the
    # scheduler then has no effect).
    lr: float | None = Field(default=1e-3, gt=0, description="null: relative step size.")
    scale_parameter: bool = False
    relative_step: bool | None = Field(default=None, description="Default: True when lr is null.")
    warmup_init: bool = False
    weight_decay: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _lr_xor_relative_step(self) -> AdafactorOptions:
        relative = self.lr is None if self.relative_step is None else self.relative_step
        if relative and self.lr is not None:
            raise ValueError("relative_step=true computes its own step size: set lr to null")
        if not relative and self.lr is None:
            raise ValueError("lr is required unless relative_step=true")
        if self.warmup_init and not relative:
            raise ValueError("warmup_init needs relative_step=true")
        return self


class SgdOptions(Options):
    lr: float = Field(default=1e-3, gt=0)
    momentum: float = Field(default=0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(default=0.0, ge=0)


def _torch_adamw_state(options: TorchAdamWOptions) -> DenseMomentState:
    # foreach AdamW builds one full-size temporary (sqrt of exp_avg_sq) during step().
    # state["step"] is a 0-d fp32 tensor per parameter (on the host unless fused/capturable).
    return DenseMomentState(moments=2, temporaries=0 if options.fused else 1, step_bytes=4)


def _bnb8_state(options: Bnb8bitOptions) -> Blockwise8bitState:
    return Blockwise8bitState(moments=2, min_8bit_size=options.min_8bit_size)


def _sgd_state(options: SgdOptions) -> DenseMomentState:
    return DenseMomentState(moments=1 if options.momentum > 0 else 0)


OPTIMIZERS = (
    OptimizerSpec(
        name="adamw",
        summary="torch.optim.AdamW: two moments in the parameter dtype.",
        factory="sftkit.optim.build:build_torch_adamw",
        options_model=TorchAdamWOptions,
        state_for=_torch_adamw_state,
        implementation="torch",
    ),
    OptimizerSpec(
        name="adamw-8bit",
        summary="bitsandbytes AdamW8bit: blockwise 8-bit moments, 32-bit for small tensors.",
        factory="sftkit.optim.build:build_bnb_adamw_8bit",
        options_model=Bnb8bitOptions,
        state_for=_bnb8_state,
        implementation="bitsandbytes",
    ),
    OptimizerSpec(
        name="paged-adamw-8bit",
        summary="bitsandbytes PagedAdamW8bit: 8-bit moments in unified memory that can spill to host.",
        factory="sftkit.optim.build:build_bnb_paged_adamw_8bit",
        options_model=Bnb8bitOptions,
        state_for=_bnb8_state,
        paged=True,
        implementation="bitsandbytes",
    ),
    OptimizerSpec(
        name="paged-adamw-32bit",
        summary="bitsandbytes PagedAdamW32bit: fp32 moments in unified memory.",
        factory="sftkit.optim.build:build_bnb_paged_adamw_32bit",
        options_model=AdamWOptions,
        state_for=lambda options: DenseMomentState(moments=2, dtype_bytes=4),
        paged=True,
        implementation="bitsandbytes",
    ),
    OptimizerSpec(
        name="adafactor",
        summary="transformers Adafactor: factored fp32 second moment, no first moment.",
        factory="sftkit.optim.build:build_adafactor",
        options_model=AdafactorOptions,
        state_for=lambda options: FactoredState(),
        implementation="transformers",
    ),
    OptimizerSpec(
        name="sgd",
        summary="torch.optim.SGD, optionally with momentum (one buffer in the parameter dtype).",
        factory="sftkit.optim.build:build_sgd",
        options_model=SgdOptions,
        state_for=_sgd_state,
        implementation="torch",
    ),
)


@hookimpl(trylast=True)
def register_optimizers(register: Register) -> None:
    for spec in OPTIMIZERS:
        register(spec)
