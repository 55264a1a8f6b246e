"""Training speed: the seed's plain TRL script against sftkit's QLoRA recipe, same model, same
data, same machine, each run in a process of its own.

    python -m benchmarks.compare_speed --model-dir .bench/r1-8b-random --out .bench/results/speed \
        [--data .gpu-shared/data/gsm8k] [--device cuda] [--steps 8] [--warmup-steps 2]

Runs, in order: ``baseline`` (`benchmarks.seed_baseline`: TRL SFTTrainer + PEFT + bnb NF4
with the seed's hyperparameters), ``sftkit`` (``recipes/r1_gsm8k_qlora.yaml`` as shipped, only
pointed at the local model and data and stopped after the measured steps), then ablations of
the recipe's speed switches (``--variants``; each is the recipe with overrides) so that a
single session shows what each switch buys. Data: GSM8K's train split when ``--data`` has it,
else generated rows of GSM8K's length (`benchmarks.data`). Throughput counts real tokens
(padding excluded) over the steps after warm-up; memory is the run's peak over all phases.
A run whose result exists is skipped (``--redo`` repeats it); ``--budget-s`` stops starting
runs, so a long comparison spans several calls of the same command.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.data import load_rows, write_jsonl
from benchmarks.report import SPEED_SCHEMA, render_speed

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "r1_gsm8k_qlora.yaml"
RUN_SCHEMA = "sftkit-benchmark-speed-run/1"
ROWS = 7473  # GSM8K's train split
# Ablations of the recipe's speed switches (recipes/r1_gsm8k_qlora.yaml: best-fit packing,
# padding-free, one packed 1024-token row per micro-batch, Liger kernels): one switch off at
# a time, all off (the recipe's batch shape before the switches), and a larger packed batch.
VARIANTS: dict[str, tuple[str, ...]] = {
    "sftkit-no-liger": ("training.liger_kernels=false",),
    "sftkit-no-packing": (
        "data.packing=false",
        "training.micro_batch_size=4",
        "training.gradient_accumulation_steps=4",
    ),
    "sftkit-plain": (
        "training.liger_kernels=false",
        "data.packing=false",
        "training.micro_batch_size=4",
        "training.gradient_accumulation_steps=4",
    ),
    "sftkit-mb2": ("training.micro_batch_size=2", "training.gradient_accumulation_steps=2"),
}


def run_names(variants: list[str]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(name, role, overrides) in the order they run."""
    runs: list[tuple[str, str, tuple[str, ...]]] = [
        ("baseline", "baseline", ()),
        ("sftkit", "sftkit", ()),
    ]
    runs += [(name, "variant", VARIANTS[name]) for name in variants]
    return runs


# --------------------------------------------------------------------------- worker


def _dataset_stats(dataset: Any) -> float | None:
    """Mean tokens per example of a tokenized (possibly packed) training set."""
    if dataset is None:
        return None
    columns = getattr(dataset, "column_names", None) or []
    if "seq_lengths" in columns:  # TRL's best-fit packing keeps each example's length
        lengths = [n for row in dataset["seq_lengths"] for n in row]
    elif "input_ids" in columns:
        lengths = [len(ids) for ids in dataset["input_ids"]]
    else:
        return None
    return round(sum(lengths) / len(lengths), 1) if lengths else None


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One run, measured; called in a fresh process."""
    import torch
    from transformers import TrainerCallback

    from benchmarks.measure import Outcome, finish, make_callback, train_measured
    from benchmarks.phases import PhaseMeter
    from benchmarks.point import Measured, device_info, measure_sftkit_run, versions

    device_name = spec["device"]
    if not device_name.startswith("cuda"):
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    meter = PhaseMeter(device_name)
    device = device_info(device_name, None)
    total_steps = spec["warmup_steps"] + spec["steps"]
    stats: dict[str, Any] = {}

    class Stats(TrainerCallback):  # type: ignore[misc]
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            args.include_num_input_tokens_seen = "non_padding"
            loader = kwargs.get("train_dataloader")
            stats["mean_tokens_per_example"] = _dataset_stats(getattr(loader, "dataset", None))
            stats["gradient_accumulation_steps"] = args.gradient_accumulation_steps
            stats["micro_batch_size"] = args.per_device_train_batch_size

    meter.start("load")
    if spec["role"] == "baseline":
        from benchmarks.seed_baseline import build_trainer

        rows, _ = load_rows(Path(spec["data_dir"]), spec["rows"])
        outcome = Outcome(warmup_steps=spec["warmup_steps"])
        trainer = build_trainer(
            spec["model_dir"],
            rows,
            Path(spec["out"]) / "runs" / spec["name"],
            device="cuda" if device_name.startswith("cuda") else "cpu",
            callbacks=[make_callback(meter, outcome), Stats()],
            max_steps=total_steps,
            **spec.get("baseline_overrides", {}),
        )
        train_measured(trainer.train, meter, outcome)
        measured = Measured(meter, outcome)
    else:
        gpu = f"{device['total_bytes']}B" if device["type"] == "cuda" else "cpu"
        overrides = [
            f"model.name_or_path={spec['model_dir']}",
            f"data.format.options.source={spec['data_dir']}",
            f"training.max_steps={total_steps}",
            "training.report_to=[none]",
            "evaluation.before_training=false",
            "evaluation.after_training=false",
            f"output_dir={Path(spec['out']) / 'runs' / spec['name']}",
            f"hardware.gpu={gpu}",
            *spec.get("recipe_overrides", []),
            *spec["overrides"],
        ]
        measured = measure_sftkit_run(
            spec["recipe"],
            overrides,
            device=device_name,
            warmup_steps=spec["warmup_steps"],
            total_steps=total_steps,
            meter=meter,
            extra_callbacks=[Stats()],
        )
        measured.extra["overrides"] = overrides
    meter.close()
    finish(measured.outcome)
    result = measured.to_dict()
    steps = result.get("measured_steps") or spec["steps"]
    accumulation = stats.get("gradient_accumulation_steps") or 1
    tokens = result.get("measured_tokens") or 0
    return {
        "schema": RUN_SCHEMA,
        "name": spec["name"],
        "role": spec["role"],
        "recipe_file": None if spec["role"] == "baseline" else Path(spec["recipe"]).name,
        "device": device,
        "versions": versions(),
        **stats,
        "tokens_per_micro_step": round(tokens / (steps * accumulation)) if tokens else None,
        "measured_steps": spec["steps"],
        **{k: result.get(k) for k in ("tokens_per_second", "peak_allocated", "peak_reserved")},
        "peak_device_used": result.get("peak_device_used"),
        "host_max_rss": result.get("host_max_rss"),
        "kernels": _kernels(spec, cuda=device["type"] == "cuda"),
        "measured": result,
    }


# What the seed's script computes with on today's stack: transformers' SDPA with a padding
# mask, TRL's chunked log-prob head (every SFTTrainer from TRL 1.15), no layer kernels.
BASELINE_KERNELS = {
    "attention": "sdpa",
    "attention_detail": "sdpa, padded rows (one row per micro-batch: no padding, causal)",
    "loss_head": "trl",
    "layer_kernels": [],
}


def _kernels(spec: dict[str, Any], *, cuda: bool) -> dict[str, Any]:
    """The attention kernel, loss head and layer kernels the run used (`benchmarks.point`)."""
    if spec["role"] == "baseline":
        return dict(BASELINE_KERNELS)
    import yaml

    from benchmarks.point import kernels_of
    from sftkit.runpaths import RunPaths

    path = RunPaths(Path(spec["out"]) / "runs" / spec["name"]).recipe
    recipe = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    return kernels_of(recipe, cuda=cuda)


# --------------------------------------------------------------------------- driver


def speed_spec(
    name: str,
    role: str,
    overrides: tuple[str, ...] | list[str],
    *,
    recipe: Path,
    model_dir: str | Path,
    data_dir: Path,
    rows: int,
    device: str,
    steps: int,
    warmup_steps: int,
    out: Path,
    recipe_overrides: list[str] | tuple[str, ...] = (),
    baseline_overrides: dict[str, int] | None = None,
) -> dict[str, Any]:
    """What ``--worker`` reads for one run (`role`: baseline, sftkit or variant)."""
    return {
        "name": name,
        "role": role,
        "overrides": list(overrides),
        "recipe_overrides": list(recipe_overrides),
        "baseline_overrides": dict(baseline_overrides or {}),
        "recipe": str(Path(recipe).resolve()),
        "model_dir": str(Path(model_dir).resolve()),
        "data_dir": str(data_dir),
        "rows": rows,
        "device": device,
        "steps": steps,
        "warmup_steps": warmup_steps,
        "out": str(out),
    }


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["--worker"]:
        spec = json.loads(Path(args_list[1]).read_text())
        result = worker(spec)
        Path(args_list[2]).write_text(json.dumps(result, indent=1, default=str))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=None, help="GSM8K directory (train.jsonl).")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=8, help="Measured optimizer steps.")
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"Comma list of {sorted(VARIANTS)} or none."
    )
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--override", action="append", default=[], help="For every sftkit run.")
    parser.add_argument(
        "--baseline-override",
        action="append",
        default=[],
        help="KEY=INT for the seed's SFTConfig, e.g. gradient_accumulation_steps=1 (CPU tests).",
    )
    parser.add_argument("--timeout-s", type=int, default=480)
    parser.add_argument("--budget-s", type=float, default=None)
    parser.add_argument("--redo", action="store_true")
    args = parser.parse_args(args_list)

    variants = [] if args.variants in ("", "none") else args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows, data_source = load_rows(args.data, args.rows)
    # Both sides read the same rows from the same file.
    data_dir = out / "data"
    write_jsonl(rows, data_dir / "train.jsonl")
    baseline_overrides = {
        key: int(value) for key, value in (item.split("=", 1) for item in args.baseline_override)
    }
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    for name, role, overrides in run_names(variants):
        result_path = out / f"{name}.json"
        if result_path.is_file() and not args.redo:
            results.append(json.loads(result_path.read_text()))
            continue
        if args.budget_s is not None and time.perf_counter() - started > args.budget_s:
            print(f"{name}: not started (--budget-s); run the same command again.")
            continue
        spec = speed_spec(
            name,
            role,
            overrides,
            recipe=args.recipe,
            model_dir=args.model_dir,
            data_dir=data_dir,
            rows=len(rows),
            device=args.device,
            steps=args.steps,
            warmup_steps=args.warmup_steps,
            out=out,
            recipe_overrides=args.override,
            baseline_overrides=baseline_overrides,
        )
        print(f"[{time.perf_counter() - started:6.0f} s] {name} ...", flush=True)
        results.append(_run(spec, out, result_path, args.timeout_s))
    combined = {
        "schema": SPEED_SCHEMA,
        "name": f"seed baseline vs {args.recipe.name}",
        "data": data_source,
        "device": results[0].get("device") if results else None,
        "versions": results[0].get("versions") if results else None,
        "steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "runs": results,
    }
    (out / "speed.json").write_text(json.dumps(combined, indent=1, default=str))
    print(render_speed(combined))
    return 0


def _run(spec: dict[str, Any], out: Path, result_path: Path, timeout_s: int) -> dict[str, Any]:
    spec_path = out / "specs" / f"{spec['name']}.json"
    log_path = out / "logs" / f"{spec['name']}.log"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(spec, indent=1))
    shutil.rmtree(out / "runs" / spec["name"], ignore_errors=True)  # scratch: a rerun starts afresh
    command = [
        sys.executable,
        "-m",
        "benchmarks.compare_speed",
        "--worker",
        str(spec_path),
        str(result_path),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    with log_path.open("w") as log:
        try:
            code = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                timeout=timeout_s, check=False,
            ).returncode  # fmt: skip
            reason = f"exit code {code}"
        except subprocess.TimeoutExpired:
            code, reason = -1, f"timed out after {timeout_s} s"
    if code == 0 and result_path.is_file():
        return dict(json.loads(result_path.read_text()))
    tail = log_path.read_text(errors="replace")[-3000:]
    return {
        "schema": RUN_SCHEMA,
        "name": spec["name"],
        "role": spec["role"],
        "error": reason,
        "log_tail": tail,
    }


if __name__ == "__main__":
    raise SystemExit(main())
