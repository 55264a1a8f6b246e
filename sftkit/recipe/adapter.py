"""``model.adapter``: the saved PEFT adapter a run starts from, read without torch.

PEFT's ``PeftModel.from_pretrained`` loads it with its own ``adapter_config.json`` (rank,
alpha, dropout, targets), whatever the strategy's options say. So where the directory
exists, the options must agree with it (the strategy declares how:
`StrategySpec.saved_differences`): then the estimate, which prices the options, prices what
loads. A directory that does not exist yet (the run before has not finished) is not a
problem here; `sftkit run` refuses it before the base loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sftkit.errors import Problem
from sftkit.runpaths import ADAPTER_CONFIG
from sftkit.specs import StrategySpec


def saved_adapter_config(path: str | None) -> dict[str, Any] | None:
    """The adapter's adapter_config.json, or None when there is none (yet)."""
    if not path:
        return None
    config = Path(path) / ADAPTER_CONFIG
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # not readable as PEFT writes it: the run says so when it loads it
    return data if isinstance(data, dict) else None


def adapter_problems(path: str | None, strategy: StrategySpec, options: Any) -> list[Problem]:
    """The strategy's options that the saved adapter's config contradicts, with the fix."""
    config = saved_adapter_config(path)
    if config is None or strategy.saved_differences is None:
        return []
    differences = strategy.saved_differences(options, config)
    if not differences:
        return []
    ours = ", ".join(f"{option}={value!r}" for option, value, _ in differences)
    saved = ", ".join(f"{option}={value!r}" for option, _, value in differences)
    overrides = " ".join(
        f"strategy.options.{option}={_flow(value)}" for option, _, value in differences
    )
    return [
        Problem(
            "model.adapter",
            f"the adapter {path!r} was saved with {saved} (its {ADAPTER_CONFIG}), but "
            f"strategy.options say {ours}. PEFT loads the adapter with its own config, so "
            "the run would train that one while the recipe, its estimate and its report "
            "describe these options.",
            f"Set the options to the adapter's: {overrides}.",
        )
    ]


def _flow(value: Any) -> str:
    """A value as an override writes it (YAML flow style)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)
