"""Architecture numbers without weights: `ModelShape`, an exact parameter census, and the
sources it is read from (bundled catalog, local config.json, hub). No torch."""

from __future__ import annotations

from typing import Any

from sftkit.errors import ModelShapeError
from sftkit.modelshape.families import FAMILIES, known_model_types, shape_from_config
from sftkit.modelshape.shape import ModelShape, TensorGroup
from sftkit.modelshape.sources import catalog_ids, resolve_builtin

__all__ = [
    "FAMILIES",
    "ModelShape",
    "TensorGroup",
    "catalog_ids",
    "known_model_types",
    "resolve_model_shape",
    "shape_from_config",
]


def resolve_model_shape(
    model: str, *, trust_remote_code: bool = False, manager: Any = None
) -> ModelShape:
    """Ask the ``resolve_model_shape`` hook (plugins first, built-in sources last)."""
    if manager is None:
        return resolve_builtin(model, trust_remote_code=trust_remote_code)
    shape = manager.hook.resolve_model_shape(model=model, trust_remote_code=trust_remote_code)
    if shape is None:
        raise ModelShapeError(f"no plugin could resolve the shape of model {model!r}.")
    if not isinstance(shape, ModelShape):
        raise ModelShapeError(
            f"a resolve_model_shape implementation returned {type(shape).__name__} for "
            f"{model!r}; expected sftkit.modelshape.ModelShape."
        )
    return shape
