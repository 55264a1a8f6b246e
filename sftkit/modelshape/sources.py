"""Where a model's config.json comes from: bundled models, local paths, the bundled
architecture catalog, or (only when online) the Hugging Face hub.

huggingface_hub is imported only for a hub lookup, so the estimator stays fast and offline.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from sftkit.errors import ModelShapeError
from sftkit.modelshape.families import shape_from_config
from sftkit.modelshape.shape import ModelShape
from sftkit.suggest import closest

ASSETS = Path(__file__).resolve().parent.parent / "assets"
CATALOG_DIR = ASSETS / "architectures"
BUILTIN_MODELS_DIR = ASSETS / "models"
BUILTIN_PREFIX = "builtin:"


@cache
def catalog_index() -> dict[str, str]:
    """Hub id -> catalog file name."""
    index: dict[str, str] = json.loads((CATALOG_DIR / "index.json").read_text(encoding="utf-8"))
    return index


def catalog_ids() -> list[str]:
    return sorted(catalog_index())


def _catalog_key(model: str) -> str | None:
    """The catalog id for a hub id (case-insensitive) or its bare name (``Llama-3.1-8B``)."""
    wanted = model.strip().lower().rstrip("/")
    for key in catalog_index():
        if key.lower() == wanted or key.lower().split("/", 1)[-1] == wanted:
            return key
    return None


def read_config(path: Path, *, name: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelShapeError(f"{name}: cannot read {path}: {exc}.") from exc
    except json.JSONDecodeError as exc:
        raise ModelShapeError(
            f"{name}: {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})."
        ) from exc
    if not isinstance(data, dict):
        raise ModelShapeError(f"{name}: {path} holds {type(data).__name__}, not a config mapping.")
    return data


def builtin_model_dir(name: str) -> Path:
    """``builtin:NAME`` -> the bundled model directory (raises if there is none)."""
    directory = BUILTIN_MODELS_DIR / name
    if not (directory / "config.json").is_file():
        known = sorted(
            p.name for p in BUILTIN_MODELS_DIR.iterdir() if (p / "config.json").is_file()
        )
        hint = closest(name, known)
        raise ModelShapeError(
            f"there is no bundled model {BUILTIN_PREFIX}{name}"
            + (f"; did you mean {BUILTIN_PREFIX}{hint}?" if hint else ".")
            + f" Bundled: {', '.join(BUILTIN_PREFIX + k for k in known) or '(none)'}."
        )
    return directory


def local_config_path(model: str) -> Path | None:
    """The config.json a local reference names, or None when `model` is not a local path."""
    if model.startswith(BUILTIN_PREFIX):
        return builtin_model_dir(model[len(BUILTIN_PREFIX) :]) / "config.json"
    path = Path(model).expanduser()
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise ModelShapeError(f"{model}: the directory has no config.json.")
        return config
    if path.is_file():
        return path
    if model.endswith(".json") or model.startswith((".", "/", "~")):
        raise ModelShapeError(f"{model}: no such file or directory.")
    return None


def resolve_builtin(model: str, *, trust_remote_code: bool = False) -> ModelShape:
    """The built-in sources, in order: local path / ``builtin:``, catalog, hub (online only)."""
    config_path = local_config_path(model)
    if config_path is not None:
        return shape_from_config(
            read_config(config_path, name=model),
            name=model,
            source=str(config_path),
            trust_remote_code=trust_remote_code,
        )
    key = _catalog_key(model)
    if key is not None:
        path = CATALOG_DIR / catalog_index()[key]
        return shape_from_config(
            read_config(path, name=model), name=model, source=f"sftkit catalog ({key})"
        )
    config, source = _hub_config(model)
    return shape_from_config(config, name=model, source=source, trust_remote_code=trust_remote_code)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_config(model: str) -> tuple[dict[str, Any], str]:
    known = catalog_ids()
    suggestion = closest(model, known)
    advice = (
        f" Did you mean {suggestion!r}?" if suggestion else ""
    ) + f" The bundled catalog knows: {', '.join(known)}."
    if "/" not in model:
        raise ModelShapeError(
            f"model {model!r} is not a local path, a bundled model or a catalog entry, and "
            f"not a hub id (org/name).{advice}",
            hint="Pass a directory or config.json path with --model, or a hub id when online.",
        )
    try:
        import huggingface_hub
    except ImportError:
        raise ModelShapeError(
            f"model {model!r} is not in sftkit's catalog and huggingface_hub is not installed "
            f"to fetch its config.json.{advice}"
        ) from None
    cached = huggingface_hub.try_to_load_from_cache(model, "config.json")
    if isinstance(cached, str):
        return read_config(Path(cached), name=model), f"hub cache ({cached})"
    if _offline():
        raise ModelShapeError(
            f"model {model!r} is not in sftkit's catalog or the local hub cache, and the hub is "
            f"offline (HF_HUB_OFFLINE is set).{advice}",
            hint="Pass the model's config.json with --model PATH, or unset HF_HUB_OFFLINE.",
        )
    try:
        path = huggingface_hub.hf_hub_download(model, "config.json")
    except Exception as exc:  # network, gated repo, missing repo: all the same to the user
        raise ModelShapeError(
            f"cannot fetch config.json of {model!r} from the hub: {type(exc).__name__}: {exc}."
            f"{advice}",
            hint="Pass the model's config.json with --model PATH.",
        ) from exc
    return read_config(Path(path), name=model), f"hub ({model})"
