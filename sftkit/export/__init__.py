"""`sftkit export`: a run's result as something others can load.

Without merging, the adapter alone in PEFT's format (or, for a full fine-tune, the model as
trained); with ``merge=True``, a standalone ``transformers`` model with the adapters folded
into the base (see `sftkit.export.merge` for quantized bases). Either way the tokenizer and a
generated model card come along. Nothing is ever written over an existing directory: the
export is assembled in a hidden sibling directory and renamed into place when complete.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sftkit import progress
from sftkit.dtypes import DTYPES, torch_dtype
from sftkit.errors import RunDirectoryError, SftkitError
from sftkit.export.card import model_card
from sftkit.oserrors import open_to_umask
from sftkit.reporting.record import load_run
from sftkit.runpaths import RunPaths

if TYPE_CHECKING:
    from sftkit.registry import Registry

# Left behind: the trainer's pickled arguments, and PEFT's own stub card (we write ours).
SKIPPED_FILES = frozenset({"training_args.bin", "README.md"})
RECIPE_COPY = "sftkit_recipe.yaml"  # the run's resolved recipe, to reproduce it


@dataclass
class ExportResult:
    output_dir: Path
    merged: bool
    adapter: bool
    dtype: str | None
    quantized_base: str | None
    files: list[str] = field(default_factory=list)
    pushed_to: str | None = None


def default_output_dir(run_dir: Path, merge: bool) -> Path:
    return RunPaths(run_dir).export(merged=merge)


def export_run(
    run_dir: Path,
    *,
    merge: bool = False,
    output_dir: Path | None = None,
    dtype: str | None = None,
    max_shard_size: str = "5GB",
    push_to_hub: str | None = None,
    private: bool = True,
    registry: Registry | None = None,
) -> ExportResult:
    """Write `run_dir`'s model to `output_dir` (see `sftkit export`); the run's recipe is
    read with `registry` (the command's plugins; default: built-ins and installed ones)."""
    record = load_run(run_dir)
    paths = RunPaths(run_dir)
    final = paths.final
    if not final.is_dir():
        raise RunDirectoryError(
            f"{run_dir} has no final/ model to export: the run did not complete "
            f"(status: {record.run.get('status', 'unknown')}).",
            hint="Export a completed run, or finish this one with `sftkit run`.",
        )
    if dtype is not None and dtype not in DTYPES:
        raise SftkitError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}.")
    out = output_dir or default_output_dir(run_dir, merge)
    if out.exists():
        raise RunDirectoryError(
            f"{out} already exists; sftkit never writes over an existing export.",
            hint="Remove it, or pass another --output-dir.",
        )
    adapter = paths.final_is_adapter
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_partials(out)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        if merge:
            recipe_dtype = str((record.section("model") or {}).get("dtype", "bfloat16"))
            dtype, quantized = _write_merged(
                run_dir, partial, dtype, max_shard_size, recipe_dtype=recipe_dtype,
                registry=registry,
            )  # fmt: skip
        else:
            _copy_final(final, partial)
            quantized = None
            if not adapter:
                dtype = dtype or str((record.section("model") or {}).get("dtype", ""))
        _write_chat_template(run_dir, partial, registry)
        card = model_card(
            record,
            merged=merge,
            adapter=adapter,
            quantized_base=quantized,
            dtype=dtype,
            repo_id=push_to_hub,
        )
        (partial / "README.md").write_text(card, encoding="utf-8")
        shutil.copy2(paths.recipe, partial / RECIPE_COPY)
        open_to_umask(partial)  # safetensors writes 0600, and copy2 keeps a 0600 of final/
        if out.exists():  # appeared while we worked
            raise RunDirectoryError(f"{out} appeared during the export; not replacing it.")
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    result = ExportResult(
        output_dir=out,
        merged=merge,
        adapter=adapter,
        dtype=dtype or None,
        quantized_base=quantized,
        files=sorted(p.name for p in out.iterdir()),
    )
    if push_to_hub:
        from sftkit.export.hub import push_folder

        result.pushed_to = push_folder(out, push_to_hub, private=private)
    return result


def _write_chat_template(run_dir: Path, out: Path, registry: Registry | None) -> None:
    """Save the exported tokenizer with a chat template that renders what training saw (the
    run's prompt template as Jinja), so `apply_chat_template` prompts the model as sftkit's
    evaluation does. A plugin's template that cannot write one leaves the tokenizer's."""
    from transformers import AutoTokenizer

    from sftkit.modeling.trained import run_recipe
    from sftkit.specs import load_factory

    resolved = run_recipe(run_dir, registry)
    template = load_factory(resolved.template.spec.factory)(resolved.template.options)
    export = getattr(template, "export_chat_template", None)
    if export is None:
        return
    tokenizer = AutoTokenizer.from_pretrained(
        str(out), trust_remote_code=resolved.recipe.model.trust_remote_code
    )
    tokenizer.chat_template = export(tokenizer)
    tokenizer.save_pretrained(str(out))


def remove_abandoned_partials(out: Path) -> list[Path]:
    """Remove the ``.NAME.partial-PID`` directories of exports to `out` whose process is gone
    (killed with -9, or the machine went down: nothing ran their cleanup). A live process's
    partial is left alone. Returns what was removed."""
    removed = []
    for partial in out.parent.glob(f".{out.name}.partial-*"):
        pid = partial.name.rsplit("-", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)
            removed.append(partial)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _copy_final(final: Path, out: Path) -> None:
    """The adapter (or full model) and tokenizer files exactly as the run saved them."""
    for path in sorted(final.iterdir()):
        if path.is_file() and path.name not in SKIPPED_FILES:
            shutil.copy2(path, out / path.name)


def _write_merged(
    run_dir: Path,
    out: Path,
    dtype: str | None,
    max_shard_size: str,
    *,
    recipe_dtype: str,
    registry: Registry | None,
) -> tuple[str, str | None]:
    from sftkit.export.merge import describe_quantization, merge_adapters
    from sftkit.modeling import load_trained

    display = progress.current()
    with display.stage("load model"):
        model, tokenizer = load_trained(run_dir, registry)
    quantized = describe_quantization(model)
    if dtype is None:
        # A quantized base has no dtype of its own: it is dequantized to bf16. A dense base
        # keeps the dtype the recipe loads it in.
        dtype = (
            "bfloat16" if quantized else (recipe_dtype if recipe_dtype in DTYPES else "bfloat16")
        )
    with display.stage("merge"):
        merged = merge_adapters(model, torch_dtype(dtype))
    with display.stage("save"):
        merged.save_pretrained(out, max_shard_size=max_shard_size)
        tokenizer.save_pretrained(out)
    return dtype, quantized
