"""The seed's QLoRA fine-tune as a user would write it today, without sftkit.

Plain TRL ``SFTTrainer`` + PEFT ``LoraConfig`` + bitsandbytes NF4, with the seed's
hyperparameters (LoRA rank 32, alpha 16, learning rate 5e-5, micro-batch 4 x 4 accumulation,
sequence 1024, gradient checkpointing, bf16) and the seed's plain tutor prompt, written against
today's APIs (TRL 1.x / transformers 5): ``SFTConfig(max_length=...)``, ``processing_class=``,
``dtype=``, no ``overwrite_output_dir``. It is the speed baseline of `benchmarks.compare_speed`,
which calls `build_trainer` and times ``trainer.train()``; run alone it trains:

    python -m benchmarks.seed_baseline --model .bench/r1-8b-random --data .gpu-shared/data/gsm8k \
        --max-steps 20 [--device cpu]

Where the seed did not say (LoRA dropout and target modules, the scheduler), this script takes
what the common QLoRA walkthroughs take: dropout 0.05 on every linear projection of the
decoder, TRL's default linear schedule and torch's fused AdamW (transformers' default).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks.data import load_rows

TUTOR_INSTRUCTION = (
    "Solve the problem step-by-step, then give the final answer in the format '#### 42'."
)
SEED_LORA: dict[str, Any] = {
    "r": 32,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "bias": "none",
    "task_type": "CAUSAL_LM",
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
SEED_TRAINING: dict[str, Any] = {
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 4,
    "learning_rate": 5e-5,
    "num_train_epochs": 2,
    "max_length": 1024,
    "gradient_checkpointing": True,
    "bf16": True,
    "logging_steps": 10,
    "seed": 42,
}


def to_prompt_completion(row: dict[str, str]) -> dict[str, str]:
    """The seed's plain tutor prompt (the same text as sftkit's `tutor` template)."""
    return {
        "prompt": f"{TUTOR_INSTRUCTION}\n\nQuestion: {row['question']}\nAnswer:\n",
        "completion": row["answer"],
    }


def build_trainer(
    model_dir: str | Path,
    rows: list[dict[str, str]],
    output_dir: str | Path,
    *,
    device: str = "cuda",
    callbacks: list[Any] | None = None,
    **overrides: Any,
) -> Any:
    """Load the 4-bit base, attach LoRA through SFTTrainer, and return the trainer.
    `overrides` replace entries of `SEED_TRAINING` (the benchmark sets max_steps)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir),
        quantization_config=quantization,
        dtype=torch.bfloat16,
        device_map={"": 0 if device == "cuda" else device},
    )
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset = Dataset.from_list([to_prompt_completion(row) for row in rows])
    args = SFTConfig(
        output_dir=str(output_dir),
        report_to="none",
        save_strategy="no",
        use_cpu=device == "cpu",
        **{**SEED_TRAINING, **overrides},
    )
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(**SEED_LORA),
        callbacks=callbacks,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="The seed's QLoRA script (plain TRL + PEFT + bnb)."
    )
    parser.add_argument("--model", type=Path, required=True, help="A model directory.")
    parser.add_argument("--data", type=Path, default=None, help="GSM8K directory (train.jsonl).")
    parser.add_argument("--rows", type=int, default=7473)
    parser.add_argument("--output-dir", type=Path, default=Path("runs/seed-baseline"))
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    args = parser.parse_args(argv)
    rows, source = load_rows(args.data, args.rows)
    print(f"data: {source}")
    trainer = build_trainer(
        args.model, rows, args.output_dir, device=args.device, max_steps=args.max_steps
    )
    trainer.train()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
