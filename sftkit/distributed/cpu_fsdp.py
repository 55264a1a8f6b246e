"""Switch an accelerate state built for CPU (MULTI_CPU) to FSDP. See
`sftkit.distributed.trainer.engine_trainer_class` for why; GPU runs never come here."""

from __future__ import annotations

from typing import Any


def promote_to_fsdp(trainer: Any) -> None:
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = trainer.accelerator.state
    plugin_args = getattr(trainer.args, "fsdp_plugin_args", None)
    if state.distributed_type != DistributedType.MULTI_CPU or plugin_args is None:
        return
    plugin = FullyShardedDataParallelPlugin(**plugin_args)
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    # AcceleratorState copies PartialState's shared dict each time it is constructed; without
    # this a later `AcceleratorState()` would quietly turn the run back into MULTI_CPU.
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    trainer.is_fsdp_enabled = True
