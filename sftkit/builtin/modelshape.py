"""Built-in model-shape source: bundled models, local config.json, the architecture catalog,
and the hub when online. `trylast`, so any plugin that answers wins."""

from __future__ import annotations

from sftkit.hookspecs import hookimpl
from sftkit.modelshape.shape import ModelShape
from sftkit.modelshape.sources import resolve_builtin


@hookimpl(trylast=True)
def resolve_model_shape(model: str, trust_remote_code: bool) -> ModelShape:
    return resolve_builtin(model, trust_remote_code=trust_remote_code)
