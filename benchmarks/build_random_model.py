"""Write a model directory with random weights for an architecture config, once.

    python -m benchmarks.build_random_model --config .gpu-shared/models/deepseek-r1-distill-llama-8b.json \
        --out .bench/r1-8b-random [--data .gpu-shared/data/gsm8k] [--device cuda]
    python -m benchmarks.build_random_model --tiny --out .bench/tiny-random --device cpu

The directory looks like a downloaded checkpoint (config.json, sharded bf16 safetensors with an
index, a tokenizer), so every strategy loads it exactly as it would load the real model:
``from_pretrained`` quantizes to NF4 or int8 on the way in. Memory and speed depend on shapes
and dtypes, not on values. Tensors are drawn on the given device (seconds for 8B on a GPU),
shard by shard, so host memory stays near one shard. A directory already built from the same
config and seed is reused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from benchmarks.data import load_rows

# A Llama-3-shaped model small enough for CPU tests (seconds to build, load and train).
TINY_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_act": "silu",
    "attention_bias": False,
    "mlp_bias": False,
    "rms_norm_eps": 1e-05,
    "torch_dtype": "bfloat16",
    "initializer_range": 0.02,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 1024,
    "max_position_embeddings": 4096,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "bos_token_id": 1000,
    "eos_token_id": 1001,
}
MARKER = "random_model.json"
TOKENIZER_ROWS = 8000  # GSM8K's train split is 7,473 rows


def _fingerprint(config: dict[str, Any], seed: int) -> str:
    blob = json.dumps({"config": config, "seed": seed}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _init(name: str, tensor: Any, std: float, generator: Any) -> None:
    # RMSNorm weights start at one, as in the real model; every matrix is N(0, std).
    if name.endswith("norm.weight"):
        tensor.fill_(1.0)
    else:
        tensor.normal_(0.0, std, generator=generator)


def build(
    config: dict[str, Any],
    out: Path,
    *,
    device: str = "cpu",
    seed: int = 0,
    shard_bytes: int = 5 * 2**30,
    data_dir: Path | None = None,
) -> dict[str, Any]:
    """Build (or reuse) the random model directory; return its marker record."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    from benchmarks.tokenizer import build_tokenizer

    fingerprint = _fingerprint(config, seed)
    marker_path = out / MARKER
    if marker_path.is_file():
        record = json.loads(marker_path.read_text())
        if record.get("fingerprint") == fingerprint:
            record["reused"] = True
            return record
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    hf_config = AutoConfig.for_model(**config)
    dtype = getattr(torch, str(config.get("torch_dtype") or config.get("dtype") or "bfloat16"))
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
    shapes = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    del skeleton

    generator = torch.Generator(device=device).manual_seed(seed)
    std = float(config.get("initializer_range", 0.02))
    weight_map: dict[str, str] = {}
    shards: list[dict[str, Any]] = [{}]
    sizes = [0]
    for name, shape in shapes.items():
        numel = 1
        for dim in shape:
            numel *= dim
        nbytes = numel * torch.finfo(dtype).bits // 8
        if sizes[-1] and sizes[-1] + nbytes > shard_bytes:
            shards.append({})
            sizes.append(0)
        shards[-1][name] = shape
        sizes[-1] += nbytes
    total_bytes = sum(sizes)
    for index, shard in enumerate(shards, start=1):
        filename = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for name, shape in shard.items():
            tensor = torch.empty(shape, dtype=dtype, device=device)
            _init(name, tensor, std, generator)
            tensors[name] = tensor.cpu()
            weight_map[name] = filename
        save_file(tensors, str(out / filename), metadata={"format": "pt"})
        del tensors
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total_bytes}, "weight_map": weight_map}, indent=1)
    )
    hf_config.save_pretrained(out)

    rows, data_source = load_rows(data_dir, TOKENIZER_ROWS, seed=seed)
    texts = [f"{row['question']}\n{row['answer']}" for row in rows]
    tokenizer = build_tokenizer(
        texts, bos_token_id=int(config["bos_token_id"]), vocab_size=int(config["vocab_size"])
    )
    tokenizer.save_pretrained(out)
    record = {
        "fingerprint": fingerprint,
        "seed": seed,
        "parameters": sum(_numel(s) for s in shapes.values()),
        "weight_bytes": total_bytes,
        "shards": len(shards),
        "dtype": str(dtype).removeprefix("torch."),
        "tokenizer_trained_on": data_source,
        "built_on": device,
        "build_seconds": round(time.perf_counter() - started, 1),
        "reused": False,
    }
    marker_path.write_text(json.dumps(record, indent=1))
    return record


def _numel(shape: tuple[int, ...]) -> int:
    numel = 1
    for dim in shape:
        numel *= dim
    return numel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="An architecture config.json.")
    source.add_argument("--tiny", action="store_true", help="A tiny Llama-3-shaped model (CPU).")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--device", default="auto", help="Where to draw the weights: cpu, cuda, auto."
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=None, help="GSM8K directory (tokenizer text).")
    parser.add_argument("--shard-gb", type=float, default=5.0)
    args = parser.parse_args(argv)

    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    config = TINY_CONFIG if args.tiny else json.loads(args.config.read_text())
    record = build(
        config,
        args.out,
        device=device,
        seed=args.seed,
        shard_bytes=int(args.shard_gb * 2**30),
        data_dir=args.data,
    )
    verb = "reused" if record["reused"] else f"built in {record['build_seconds']} s"
    print(
        f"{args.out}: {record['parameters']:,} parameters, {record['weight_bytes'] / 2**30:.2f} GiB, {verb}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
