"""The plugin module named by the `sftkit` entry point. Registration only: no torch here.

Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms") keeps ONE momentum
buffer per parameter where AdamW keeps two, so its optimizer state is half of AdamW's. The
estimator prices it from `state_for` alone; the optimizer itself is built by `optim.py` only
when a run needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import click
from pydantic import Field

from sftkit import Blockwise8bitState, DenseMomentState, OptimizerSpec, Options, hookimpl

# Each beta interpolates between the momentum and the gradient: in [0, 1).
Beta = Annotated[float, Field(ge=0, lt=1)]


class LionOptions(Options):
    """Lion's update is sign-based, so its step is larger than AdamW's for the same lr: the
    paper recommends an lr 3-10x smaller and a weight decay 3-10x larger than AdamW's."""

    lr: float = Field(default=3e-5, gt=0)
    betas: tuple[Beta, Beta] = (0.9, 0.99)
    weight_decay: float = Field(default=0.0, ge=0)


class Lion8bitOptions(LionOptions):
    min_8bit_size: int = Field(
        default=4096, ge=1, description="Tensors smaller than this keep a 32-bit momentum."
    )


def _state_8bit(options: Lion8bitOptions) -> Blockwise8bitState:
    return Blockwise8bitState(moments=1, min_8bit_size=options.min_8bit_size)


OPTIMIZERS = (
    OptimizerSpec(
        name="lion-8bit",
        summary="bitsandbytes Lion8bit: one blockwise 8-bit momentum, half of AdamW-8bit's state.",
        factory="sftkit_lion.optim:build_lion_8bit",
        options_model=Lion8bitOptions,
        state_for=_state_8bit,
        implementation="bitsandbytes",
    ),
    OptimizerSpec(
        name="paged-lion-8bit",
        summary="bitsandbytes PagedLion8bit: 8-bit momentum in unified memory that can spill to host.",
        factory="sftkit_lion.optim:build_paged_lion_8bit",
        options_model=Lion8bitOptions,
        state_for=_state_8bit,
        paged=True,
        implementation="bitsandbytes",
    ),
    OptimizerSpec(
        name="lion-32bit",
        summary="bitsandbytes Lion with one fp32 momentum per parameter.",
        factory="sftkit_lion.optim:build_lion_32bit",
        options_model=LionOptions,
        state_for=lambda options: DenseMomentState(moments=1, dtype_bytes=4),
        implementation="bitsandbytes",
    ),
)


@hookimpl
def register_optimizers(register: Callable[[OptimizerSpec], None]) -> None:
    for spec in OPTIMIZERS:
        register(spec)


@hookimpl
def register_commands(cli: click.Group) -> None:
    from sftkit_lion.cli import lion_convert

    cli.add_command(lion_convert)
