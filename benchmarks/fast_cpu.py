"""CPU ratios of the fast paths, on the quickstart model scaled up until the decoder layers'
compute dominates: packed 2048-token rows with transformers' dense block-diagonal mask
against the same rows without a mask (`training.mask_free_packing`: causal SDPA per packed
document on the CPU), and compiled decoder layers (`training.compile`) against eager ones.

    python -m benchmarks.fast_cpu [--steps 3] [--warmup 2] [--threads 1] [--json OUT]

Each variant trains in a process of its own (peak RSS is a process's lifetime maximum):
fp32 weights, AdamW, a fixed packed row of GSM8K-length documents (random tokens of the
character vocabulary), `--warmup` untimed steps (the compile happens there) then `--steps`
timed ones. Prints tokens per second, peak RSS and its growth over the built model per
variant, and the ratios. Never a GPU figure: this is the CPU's answer only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ROW = 2048
# the quickstart's tiny-llama (sftkit/assets/models/tiny-llama) widened and deepened
SCALE = {"hidden_size": 384, "intermediate_size": 1024, "num_hidden_layers": 6,
         "num_attention_heads": 12, "num_key_value_heads": 4, "head_dim": 32,
         "max_position_embeddings": 4096}  # fmt: skip
VARIANTS = {
    # name: (attention implementation, compiled layers)
    "dense-mask": ("sdpa", False),
    "mask-free": ("sftkit_sequence_sdpa", False),
    "dense-mask-compiled": ("sdpa", True),
    "mask-free-compiled": ("sftkit_sequence_sdpa", True),
}
RATIOS = [
    ("mask-free / dense-mask", "mask-free", "dense-mask"),
    ("compiled / eager (dense mask)", "dense-mask-compiled", "dense-mask"),
    ("compiled / eager (mask-free)", "mask-free-compiled", "mask-free"),
]


def documents(seed: int = 0) -> list[int]:
    """Lengths of GSM8K-like documents (question, reasoning, answer) filling one row."""
    rng, lengths = random.Random(seed), []
    while sum(lengths) < ROW:
        lengths.append(min(rng.randint(120, 420), ROW - sum(lengths)))
    return lengths


def _rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_variant(name: str, steps: int, warmup: int, threads: int) -> dict[str, Any]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from sftkit.modeling.attention import register
    from sftkit.training.layers import compile_layers

    attn, compiled = VARIANTS[name]
    torch.set_num_threads(threads)
    register()
    config = json.loads((REPO / "sftkit/assets/models/tiny-llama/config.json").read_text())
    torch.manual_seed(0)
    model = LlamaForCausalLM._from_config(
        LlamaConfig(**{**config, **SCALE}), attn_implementation=attn
    )
    model.train()
    if compiled:
        compile_layers(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    lengths = documents()
    ids = torch.randint(3, config["vocab_size"], (1, ROW))
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    labels = ids.clone()
    labels[positions == 0] = -100
    batch = dict(input_ids=ids, position_ids=positions, labels=labels, use_cache=False,
                 cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=max(lengths),
                 max_length_k=max(lengths))  # fmt: skip
    built = _rss_mib()

    def step() -> float:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    started = time.perf_counter()
    first = None
    for i in range(warmup):
        step()
        if i == 0:
            first = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(steps):
        loss = step()
    seconds = time.perf_counter() - started
    peak = _rss_mib()
    return {
        "variant": name,
        "attn_implementation": attn,
        "compiled": compiled,
        "documents": len(lengths),
        "tokens_per_second": ROW * steps / seconds,
        "first_step_seconds": first,
        "peak_rss_mib": peak,
        "rss_growth_mib": peak - built,
        "loss": loss,
        "parameters": sum(p.numel() for p in model.parameters()),
        "threads": threads,
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.variant:  # one variant, in this process
        print(json.dumps(run_variant(args.variant, args.steps, args.warmup, args.threads)))
        return 0
    results = {}
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO)}
    for name in VARIANTS:
        command = [sys.executable, "-m", "benchmarks.fast_cpu", "--variant", name,
                   "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--threads", str(args.threads)]  # fmt: skip
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            return 1
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def render(results: dict[str, dict[str, Any]]) -> str:
    any_result = next(iter(results.values()))
    lines = [
        f"fast paths on CPU: one packed row of {ROW} tokens ({any_result['documents']} "
        f"documents), {any_result['parameters']:,} parameters, fp32, "
        f"{any_result['threads']} thread(s), torch {any_result['torch']}",
        "",
        "| variant | tokens/s | peak RSS MiB | RSS growth MiB | first step s |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results.values():
        lines.append(
            f"| {r['variant']} | {r['tokens_per_second']:.0f} | {r['peak_rss_mib']:.0f} | "
            f"{r['rss_growth_mib']:.0f} | {r['first_step_seconds']:.1f} |"
        )
    lines += ["", "| ratio | tokens/s | peak RSS | RSS growth |", "|---|---:|---:|---:|"]
    for label, a, b in RATIOS:
        ra, rb = results[a], results[b]
        lines.append(
            f"| {label} | {ra['tokens_per_second'] / rb['tokens_per_second']:.2f}x | "
            f"{ra['peak_rss_mib'] / rb['peak_rss_mib']:.2f}x | "
            f"{ra['rss_growth_mib'] / max(rb['rss_growth_mib'], 1e-9):.2f}x |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
