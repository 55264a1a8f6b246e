"""The model card (README.md) written next to an export: what it is, how it was made, how it
scored, how to load it. Built from the run directory only (no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sftkit._version import __version__
from sftkit.reporting.record import RunRecord
from sftkit.reporting.summary import (
    EVAL_HEADERS,
    before_after,
    eval_rows,
    recipe_rows,
    training_rows,
)


def hub_id(name: str) -> str | None:
    """`name` if it looks like a hub model id (org/name) rather than a local or builtin path."""
    if name.startswith(("builtin:", "/", ".", "~")) or Path(name).exists():
        return None
    parts = name.split("/")
    return name if len(parts) == 2 and all(parts) else None


def model_card(
    record: RunRecord,
    *,
    merged: bool,
    adapter: bool,
    quantized_base: str | None,
    dtype: str | None,
    repo_id: str | None = None,
) -> str:
    model = record.section("model") or {}
    base = str(model.get("name_or_path", "?"))
    strategy = (record.section("strategy") or {}).get("name", "?")
    training = record.section("training") or {}
    objective = str(training.get("objective") or "sft")
    front: dict[str, Any] = {
        "library_name": "peft" if adapter and not merged else "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["sftkit", objective, str(strategy), *(["lora"] if adapter else [])],
    }
    if hub_id(base):
        front["base_model"] = base
    fmt = ((record.section("data") or {}).get("format") or {}).get("name")
    if fmt == "gsm8k":
        front["datasets"] = ["openai/gsm8k"]
    name = repo_id or record.name
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "", f"# {name}", ""]
    if merged and adapter:
        what = f"`{base}` with its LoRA adapters merged in: a standalone model in {dtype}."
    elif adapter:
        what = f"a LoRA adapter (PEFT format) for `{base}`; load the base, then the adapter."
    else:
        what = f"`{base}` fully fine-tuned, in {dtype or 'its training dtype'}."
    how = f"objective `{objective}`, strategy `{strategy}`"
    start = model.get("adapter")
    if start:  # continued from a saved adapter (e.g. GRPO after an SFT run)
        how += f", starting from the adapter `{start}`"
    lines += [f"Fine-tuned with sftkit {__version__} ({how}). This is {what}", ""]
    if merged and quantized_base:
        lines += [
            f"**Merged into a dequantized base.** The adapters were trained on a {quantized_base} "
            f"base. This export dequantizes that base to {dtype} and adds the LoRA update "
            "in fp32, so the weights are the ones the adapters were trained against (the "
            "quantized base's values), not the original checkpoint's. Outputs match the "
            f"{quantized_base} base + adapter up to {dtype} rounding.",
            "",
        ]
    lines += ["## Results", ""]
    if record.evals:
        lines += [f"- {line}" for line in before_after(record.evals)]
        lines += ["", _md_table(EVAL_HEADERS, eval_rows(record.evals)), ""]
    else:
        lines += ["Not evaluated (run `sftkit eval RUN_DIR`).", ""]
    lines += ["## Training", "", _md_table(("", ""), recipe_rows(record) + training_rows(record))]
    lines += ["", "## Usage", "", "```python", *_usage(base, merged, adapter, name), "```", ""]
    recipe_text = yaml.safe_dump(record.recipe, sort_keys=False).rstrip()
    lines += ["## Recipe", "", "Reproduce with `sftkit run sftkit_recipe.yaml`:", ""]
    lines += ["```yaml", recipe_text, "```", ""]
    return "\n".join(lines)


USAGE_QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?"
)


def _usage(base: str, merged: bool, adapter: bool, name: str) -> list[str]:
    if adapter and not merged:
        load = [
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'base = AutoModelForCausalLM.from_pretrained("{base}")',
            f'model = PeftModel.from_pretrained(base, "{name}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
        ]
    else:
        load = [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'model = AutoModelForCausalLM.from_pretrained("{name}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
        ]
    # the export's chat template renders the prompt exactly as training did
    return [
        *load,
        "",
        'messages = [{"role": "user", "content": "' + USAGE_QUESTION + '"}]',
        "inputs = tokenizer.apply_chat_template(",
        '    messages, add_generation_prompt=True, return_tensors="pt", return_dict=True',
        ")",
        "output = model.generate(**inputs, max_new_tokens=256, do_sample=False)",
        'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], '
        "skip_special_tokens=True))",
    ]


def _md_table(headers: tuple[str, ...], rows: list[Any]) -> str:
    def cell(text: Any) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out)
