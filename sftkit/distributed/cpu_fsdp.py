"""Switch an accelerate state built for CPU (MULTI_CPU) to FSDP. See
`sftkit.builtin.engines.Fsdp.prepare_trainer` for why; GPU runs never come here."""

from __future__ import annotations

from typing import Any

from sftkit.compat import pin_fsdp_state


def promote_to_fsdp(trainer: Any) -> None:
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
    pin_fsdp_state()
    trainer.is_fsdp_enabled = True
