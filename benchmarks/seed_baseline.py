"""The seed's QLoRA fine-tune exactly as the seed wrote it, on today's TRL, without sftkit.

Plain TRL ``SFTTrainer`` + PEFT ``LoraConfig`` + bitsandbytes NF4 with the seed's settings,
unchanged (``../shared/seed/README.md`` has the table): NF4 with double quantization and bf16
compute, ``device_map="auto"``; LoRA r 32, alpha 16, dropout 0.05, bias none, no
``target_modules`` (PEFT's default for Llama: ``q_proj`` and ``v_proj``); micro-batch 1,
gradient accumulation 8, sequence 2048, one epoch, learning rate 5e-5, gradient
checkpointing, ``optim="paged_adamw_8bit"``, logging every 10 steps, saving each epoch; the
tutor prompt through ``formatting_func`` (instruction, "Problem:", the question,
"Solution:", the answer), the loss on the whole text, EOS added by TRL. It is the speed
baseline of `benchmarks.compare_speed`, which calls `build_trainer` and times
``trainer.train()``; run alone it trains:

    python -m benchmarks.seed_baseline --model .bench/r1-8b-random --data .gpu-shared/data/gsm8k \
        --max-steps 20 [--device cpu]

What had to be translated for today's TRL 1.x / transformers 5, and how:

- ``SFTConfig(max_seq_length=2048)`` is ``max_length=2048`` (renamed in TRL 0.20);
- ``SFTTrainer(tokenizer=...)`` is ``processing_class=...`` (renamed in TRL 0.12);
- ``overwrite_output_dir=True`` is gone from transformers 5: the output directory is written
  over as it was then;
- the settings the seed left unset take today's defaults, as the seed's script run today
  does: TRL's ``bf16=True`` (the TRL of the seed's day defaulted to no mixed precision), the
  linear schedule, no warm-up, the model's dtype from its checkpoint (the seed passed none);
- on a CPU (the rehearsal) ``device_map`` is the CPU and ``use_cpu`` is set, since "auto"
  would look for a GPU.

The rehearsal shrinks only the shape (``TINY_BASELINE_OVERRIDES`` in `benchmarks.session`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks.data import load_rows

TUTOR_INSTRUCTION = (
    "You are a careful math tutor. Solve the problem step-by-step, "
    "then give the final answer in the format '#### 42'."
)
SEED_LORA: dict[str, Any] = {  # no target_modules: PEFT's default for Llama, q_proj and v_proj
    "r": 32,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "bias": "none",
    "task_type": "CAUSAL_LM",
}
SEED_TRAINING: dict[str, Any] = {
    "num_train_epochs": 1,
    "per_device_train_batch_size": 1,
    "gradient_accumulation_steps": 8,
    "learning_rate": 5e-5,
    "logging_steps": 10,
    "save_strategy": "epoch",
    "max_length": 2048,  # the seed's max_seq_length
    "gradient_checkpointing": True,
    "optim": "paged_adamw_8bit",
}


def formatting_func(example: dict[str, str]) -> str:
    """The seed's: one prompt + answer string; TRL adds the EOS token."""
    prompt = f"{TUTOR_INSTRUCTION}\n\nProblem:\n{example['question']}\n\nSolution:\n"
    return prompt + example["answer"]


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
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
        bnb_4bit_quant_type="nf4",
    )
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir),
        quantization_config=quantization,
        device_map="auto" if device == "cuda" else {"": device},
    )
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset = Dataset.from_list([{"question": r["question"], "answer": r["answer"]} for r in rows])
    args = SFTConfig(
        output_dir=str(output_dir),
        report_to="none",
        use_cpu=device == "cpu",
        **{**SEED_TRAINING, **overrides},
    )
    return SFTTrainer(
        model=model,
        train_dataset=dataset,
        formatting_func=formatting_func,
        processing_class=tokenizer,
        peft_config=LoraConfig(**SEED_LORA),
        args=args,
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
