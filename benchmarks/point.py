"""One grid point, in a process of its own: predict, then run `sftkit run` and measure.

    python -m benchmarks.point SPEC.json RESULT.json       (written and started by benchmarks.grid)

The prediction is `sftkit estimate-memory RECIPE OVERRIDES --json`, run as a user would run it
(a torch-free subprocess). The run is sftkit's own runner (`sftkit.training.runner.run_recipe`,
the code behind `sftkit run`) with a measuring callback added: memory per phase, out-of-memory
and where, tokens per second after warm-up. Every example is truncated to exactly the
sequence length (the data are long generated rows), so each step has the fixed shape the
estimator prices. The run stops after its last measured step, before saving anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.data import load_rows, long_rows, write_jsonl
from benchmarks.flops import device_peak, flops_per_token, mfu
from benchmarks.measure import Outcome, finish, is_out_of_memory, make_callback
from benchmarks.phases import PhaseMeter
from benchmarks.report import POINT_SCHEMA

PACKAGES = (
    "torch",
    "transformers",
    "trl",
    "peft",
    "bitsandbytes",
    "accelerate",
    "datasets",
    "liger-kernel",
    "triton",
    "sftkit",
)
LAYER_KERNELS = (("liger", "liger_kernels"), ("tiled_mlp", "tiled_mlp"), ("compiled", "compile"))
PACKED_ROWS = 7473  # GSM8K's train split: enough documents for rows of tens of thousands
LONG_ROWS = 48  # enough for (warm-up + measured steps) x micro-batch 4, plus a small dev split
CLI = ("-c", "import sys; from sftkit.cli import run_cli; sys.exit(run_cli())")


class StopMeasurement(Exception):
    """Raised after the last measured step: the run has given what it is measured for."""


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def device_info(device: str, cap_gib: float | None) -> dict[str, Any]:
    """Name and memory of the device; applies the per-process cap on CUDA."""
    import torch

    if not device.startswith("cuda"):
        return {"type": "cpu", "name": "cpu", "total_bytes": None, "cap_bytes": None}
    index = torch.cuda.current_device()
    free, total = torch.cuda.mem_get_info(index)
    info: dict[str, Any] = {
        "type": "cuda",
        "name": torch.cuda.get_device_name(index),
        "capability": ".".join(map(str, torch.cuda.get_device_capability(index))),
        "total_bytes": int(total),
        "free_at_start_bytes": int(free),
        "cap_bytes": None,
        "cuda": torch.version.cuda,
    }
    if cap_gib is not None:
        cap = int(cap_gib * 2**30)
        torch.cuda.set_per_process_memory_fraction(cap / total, index)
        info["cap_bytes"] = cap
    return info


def budget_override(device: dict[str, Any]) -> str:
    """What the estimator is asked to fit into: the cap, the whole card, or host RAM."""
    if device["type"] != "cuda":
        return "hardware.gpu=cpu"
    if device.get("cap_bytes"):
        return f"hardware.gpu={device['cap_bytes']}B"
    return f"hardware.gpu={device['total_bytes']}B"


def predict(recipe: str, overrides: list[str]) -> dict[str, Any]:
    """`sftkit estimate-memory RECIPE OVERRIDES --json` as a subprocess; its JSON, with the
    exit code (0 fits, 3 does not fit)."""
    command = [sys.executable, *CLI, "estimate-memory", recipe, *overrides, "--json"]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = round(time.perf_counter() - started, 3)
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {
            "exit_code": proc.returncode,
            "seconds": seconds,
            "error": (proc.stderr or proc.stdout).strip()[-2000:],
        }
    if not isinstance(data, dict):
        return {"exit_code": proc.returncode, "seconds": seconds, "error": "not a JSON object"}
    data["exit_code"] = proc.returncode
    data["seconds"] = seconds
    return data


@dataclass
class Measured:
    meter: PhaseMeter
    outcome: Outcome
    trainable_parameters: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        phases = self.meter.as_dict()
        out: dict[str, Any] = {**self.outcome.to_dict(), "phases": phases}
        for key in ("peak_allocated", "peak_reserved", "peak_device_used", "host_max_rss"):
            values = [p[key] for p in phases.values() if p.get(key) is not None]
            out[key] = max(values) if values else None
        key = "peak_device_used" if out["peak_device_used"] is not None else "host_max_rss"
        ranked = [(p[key], name) for name, p in phases.items() if p.get(key) is not None]
        out["peak_phase"] = max(ranked)[1] if ranked else None
        out["trainable_parameters"] = self.trainable_parameters
        out.update(self.extra)
        return out


def measure_sftkit_run(
    recipe: str,
    overrides: list[str],
    *,
    device: str,
    warmup_steps: int,
    total_steps: int,
    meter: PhaseMeter,
    extra_callbacks: list[Any] | None = None,
) -> Measured:
    """Run the recipe through sftkit's runner with the measuring callback; stop after
    `total_steps`. The caller has started the meter's ``load`` phase."""
    from rich.console import Console
    from transformers import TrainerCallback

    from sftkit.recipe.load import load_recipe
    from sftkit.registry import default_registry
    from sftkit.training.runner import run_recipe

    outcome = Outcome(warmup_steps=warmup_steps)
    measured = Measured(meter, outcome)

    class Probe(TrainerCallback):  # type: ignore[misc]
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            args.include_num_input_tokens_seen = "non_padding"
            model = kwargs.get("model")
            if model is not None:
                measured.trainable_parameters = sum(
                    p.numel() for p in model.parameters() if p.requires_grad
                )
                measured.extra["census"] = {"parameters": parameter_census(model)}

        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            model = kwargs.get("model")
            if state.global_step == 0 and model is not None:
                measured.extra.setdefault("census", {})["gradients"] = sum(
                    _nbytes(p.grad) for p in model.parameters() if p.grad is not None
                )

        def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            optimizer = kwargs.get("optimizer")
            if state.global_step == 0 and optimizer is not None:
                measured.extra.setdefault("census", {})["optimizer_state"] = state_census(optimizer)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step >= total_steps:
                raise StopMeasurement

    resolved = load_recipe(recipe, overrides, registry=default_registry())
    try:
        run_recipe(
            resolved,
            force=True,  # measure what does not fit too: that is half the point
            console=Console(stderr=True),
            callbacks=[make_callback(meter, outcome), Probe(), *(extra_callbacks or [])],
        )
        outcome.completed = True
    except StopMeasurement:
        outcome.completed = True
    except Exception as exc:
        if not is_out_of_memory(exc):
            # Recorded, not raised: the result says what failed and where.
            import traceback

            outcome.error = f"{type(exc).__name__} in {meter.current}: {str(exc)[:1000]}"
            measured.extra["traceback"] = traceback.format_exc()[-4000:]
            if meter.current is not None:
                meter.end()
            finish(outcome)
            return measured
        outcome.oom = True
        outcome.oom_phase = meter.current or "unknown"
        outcome.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:400]}"
    if meter.current is not None:
        meter.end()
    finish(outcome)
    return measured


def _nbytes(tensor: Any) -> int:
    return int(tensor.numel() * tensor.element_size())


def parameter_census(model: Any) -> dict[str, int]:
    """Bytes of the model's parameters by trainable/frozen and dtype, each storage once (tied
    weights): the static terms of the estimate, exactly (bitsandbytes' 4-bit weights show as
    uint8; their quantization constants are not parameters and are not counted here)."""
    out: dict[str, int] = {}
    seen: set[int] = set()
    for param in model.parameters():
        storage = param.untyped_storage()
        if storage.data_ptr() in seen:
            continue
        seen.add(storage.data_ptr())
        dtype = str(param.dtype).removeprefix("torch.")
        key = f"{'trainable' if param.requires_grad else 'frozen'} {dtype}"
        out[key] = out.get(key, 0) + _nbytes(param)
    return out


def state_census(optimizer: Any) -> dict[str, int]:
    """Bytes of optimizer state after the first step, paged (bitsandbytes unified memory)
    apart from ordinary device tensors. Each storage counts once: bitsandbytes hands every
    8-bit state the same quantization maps (qmap1, qmap2)."""
    import torch

    out = {"device": 0, "paged": 0}
    seen: set[int] = set()
    for state in optimizer.state.values():
        for value in state.values():
            if not isinstance(value, torch.Tensor):
                continue
            storage = value.untyped_storage()
            if storage.data_ptr() in seen:
                continue
            seen.add(storage.data_ptr())
            out["paged" if getattr(value, "is_paged", False) else "device"] += storage.nbytes()
    return out


def point_overrides(spec: dict[str, Any], device: dict[str, Any], data_dir: Path) -> list[str]:
    settings = spec["settings"]
    total_steps = settings["warmup_steps"] + settings["steps"]
    run_dir = run_dir_of(spec)
    # Grid points measure strategy, optimizer and shape with the speed switches off (one
    # micro-batch is then exactly batch x sequence tokens); the seed-case points run their
    # recipe as shipped; a recipe measured as it is (the low-memory one) keeps its kernels,
    # which may be part of what makes it light, and only loses packing (for the fixed shape).
    if spec["point"].get("cap_gib") or spec["point"].get("packed"):
        switches = []  # the seed case, and the fast points: packed rows, kernels as set
    elif spec["point"].get("recipe_file"):  # mask-free packing goes with packing
        switches = ["data.packing=false", "training.mask_free_packing=false"]
    else:
        switches = ["data.packing=false", "training.liger_kernels=false"]
    return [
        *spec["overrides"],
        *switches,
        f"model.name_or_path={settings['model_dir']}",
        f"data.format.options.source={data_dir}",
        "data.format.options.dev_size=2",
        "training.gradient_accumulation_steps=1",
        f"training.max_steps={total_steps}",
        "training.logging_steps=1",
        "training.warmup_ratio=0",
        "training.report_to=[none]",
        "evaluation.before_training=false",
        "evaluation.after_training=false",
        f"output_dir={run_dir}",
        budget_override(device),
    ]


def ensure_long_rows(data_dir: Path, min_words: int) -> Path:
    marker = data_dir / "rows.json"
    if marker.is_file() and json.loads(marker.read_text()).get("min_words", 0) >= min_words:
        return data_dir
    write_jsonl(long_rows(LONG_ROWS, min_words=min_words), data_dir / "train.jsonl")
    marker.write_text(json.dumps({"rows": LONG_ROWS, "min_words": min_words}))
    return data_dir


def ensure_short_rows(data_dir: Path, gsm8k_dir: str | None) -> Path:
    """GSM8K's train rows (or generated rows of their length) for packed points."""
    if not (data_dir / "train.jsonl").is_file():
        rows, _ = load_rows(Path(gsm8k_dir) if gsm8k_dir else None, PACKED_ROWS)
        write_jsonl(rows, data_dir / "train.jsonl")
    return data_dir


def kernels_of(recipe: dict[str, Any] | None, *, cuda: bool) -> dict[str, Any]:
    """What a run computed with, so that points compare like with like: the attention kernel
    its rows went through, its loss head and its layer kernels (from the recipe it ran)."""
    if not recipe:
        return {}
    from sftkit.attention import attention_for
    from sftkit.memory.setup import loss_head
    from sftkit.registry import default_registry

    model, data, training = recipe["model"], recipe.get("data", {}), recipe.get("training", {})
    attention = attention_for(
        model.get("attn_implementation", "sdpa"),
        packing=bool(data.get("packing")),
        mask_free=bool(training.get("mask_free_packing")),
        on_gpu=cuda,
    )
    return {
        "attention": attention.implementation,
        "attention_detail": attention.description,
        "loss_head": loss_head(training.get("loss", "auto"), default_registry()).name,
        "layer_kernels": [name for name, key in LAYER_KERNELS if training.get(key)],
    }


def seq_len_of(resolved_overrides: list[str], recipe: str) -> int:
    from sftkit.recipe.load import load_recipe
    from sftkit.registry import default_registry

    return int(
        load_recipe(
            recipe, resolved_overrides, registry=default_registry()
        ).recipe.training.max_seq_length
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m benchmarks.point SPEC.json RESULT.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    result_path = Path(args[1])
    settings = spec["settings"]
    started = time.perf_counter()
    device_name = settings["device"]

    import torch

    if not device_name.startswith("cuda"):
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    meter = PhaseMeter(device_name)
    device = device_info(device_name, spec["point"].get("cap_gib"))
    seq_len = seq_len_of(spec["overrides"], spec["recipe"])
    if spec["point"].get("packed"):  # documents of GSM8K's length, packed into each row
        data_dir = ensure_short_rows(Path(settings["data_dir"]).parent / "packed-rows",
                                     settings.get("gsm8k_dir"))  # fmt: skip
    else:
        data_dir = ensure_long_rows(Path(settings["data_dir"]), min_words=seq_len + 16)
    overrides = point_overrides(spec, device, data_dir)
    predicted = predict(spec["recipe"], overrides)

    meter.start("load")
    measured = measure_sftkit_run(
        spec["recipe"],
        overrides,
        device=device_name,
        warmup_steps=settings["warmup_steps"],
        total_steps=settings["warmup_steps"] + settings["steps"],
        meter=meter,
    )
    meter.close()
    result = measured.to_dict()
    from sftkit.modelshape import resolve_model_shape

    shape = resolve_model_shape(settings["model_dir"])
    per_token = flops_per_token(shape, seq_len)
    peak = device_peak(device["name"], settings.get("peak_tflops"))
    result["flops_per_token"] = per_token
    result["peak_flops"] = peak.flops
    result["peak_flops_source"] = peak.source
    tps = result.get("tokens_per_second")
    result["mfu"] = (
        None if tps is None or device["type"] != "cuda" else mfu(tps, per_token, peak.flops)
    )
    record = {
        "schema": POINT_SCHEMA,
        "name": spec["name"],
        "point": {**spec["point"], "seq_len_resolved": seq_len, **_steps(settings)},
        "recipe": spec["recipe"],
        "recipe_file": Path(spec["recipe"]).name,
        "overrides": overrides,
        # What re-estimates this point later, on any machine (benchmarks.regression): the
        # recipe exactly as it ran and the architecture it ran, without the weights.
        "recipe_resolved": resolved_recipe(spec),
        "model": model_record(settings["model_dir"]),
        "device": device,
        "versions": versions(),
        "predicted": predicted,
        "measured": result,
        "kernels": kernels_of(resolved_recipe(spec), cuda=device["type"] == "cuda"),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(record, indent=1, default=str))
    return 0


def run_dir_of(spec: dict[str, Any]) -> Path:
    return Path(spec["settings"]["out"]) / "runs" / spec["name"]


def resolved_recipe(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The recipe the run resolved, every default filled in: the run directory's
    ``recipe.yaml`` (`sftkit run` writes it before loading anything)."""
    import yaml

    from sftkit.runpaths import RunPaths

    path = RunPaths(run_dir_of(spec)).recipe
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None


def model_record(model_dir: str) -> dict[str, Any]:
    config = Path(model_dir) / "config.json"
    return {
        "dir": model_dir,
        "config": json.loads(config.read_text()) if config.is_file() else None,
    }


def _steps(settings: dict[str, Any]) -> dict[str, int]:
    return {"warmup_steps": settings["warmup_steps"], "measured_steps": settings["steps"]}


if __name__ == "__main__":
    raise SystemExit(main())
