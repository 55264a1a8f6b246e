"""The ``eval-loss`` evaluator: mean completion-token loss and perplexity on held-out data.

Sequences are encoded and masked by `sftkit.data.tokenize`, the same code training uses, so
the number is comparable with the training loss: prompt tokens are ignored, the completion
(ending with EOS) is scored. The mean is over tokens, not over examples, as the trainer's is.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F

from sftkit.data.tokenize import encode_example
from sftkit.errors import DataError
from sftkit.evaluation.base import EvalResult, EvalTask
from sftkit.evaluation.generate import model_device


class EvalLossEvaluator:
    """Token-weighted cross-entropy of the completions given their prompts."""

    name = "eval-loss"

    def __init__(self, options: Any) -> None:
        self.options = options

    def evaluate(self, task: EvalTask) -> EvalResult:
        if not task.examples:
            raise DataError(f"the {task.split} split has no examples to evaluate.")
        started = time.perf_counter()
        tokenizer, model = task.tokenizer, task.model
        max_length = self.options.max_length or task.max_seq_length
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        rows = []
        for example in task.examples:
            encoded = encode_example(
                task.template,
                example,
                tokenizer,
                completion_only_loss=True,
                reasoning=task.reasoning,
            )
            rows.append((example.id, encoded.input_ids[:max_length], encoded.labels[:max_length]))
        device = model_device(model)
        was_training = bool(getattr(model, "training", False))
        model.eval()
        predictions: list[dict[str, Any]] = []
        total_loss, total_tokens = 0.0, 0
        try:
            with torch.inference_mode():
                for begin in range(0, len(rows), self.options.batch_size):
                    batch = rows[begin : begin + self.options.batch_size]
                    width = max(len(ids) for _, ids, _ in batch)
                    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                    attention = torch.zeros((len(batch), width), dtype=torch.long)
                    labels = torch.full((len(batch), width), -100, dtype=torch.long)
                    for row, (_, ids, row_labels) in enumerate(batch):
                        input_ids[row, : len(ids)] = torch.tensor(ids)
                        attention[row, : len(ids)] = 1
                        labels[row, : len(ids)] = torch.tensor(row_labels)
                    logits = model(
                        input_ids=input_ids.to(device), attention_mask=attention.to(device)
                    ).logits
                    # Token t predicts token t+1; fp32 so bf16 logits do not round the loss.
                    shifted = logits[:, :-1].float()
                    targets = labels[:, 1:].to(device)
                    losses = F.cross_entropy(
                        shifted.reshape(-1, shifted.shape[-1]),
                        targets.reshape(-1),
                        ignore_index=-100,
                        reduction="none",
                    ).view(targets.shape)
                    counted = (targets != -100).sum(dim=1)
                    sums = losses.sum(dim=1)
                    for row, (example_id, _, _) in enumerate(batch):
                        n = int(counted[row])
                        loss = float(sums[row]) / n if n else float("nan")
                        predictions.append({"id": example_id, "tokens": n, "loss": loss})
                        total_loss += float(sums[row])
                        total_tokens += n
                    if task.progress is not None:
                        so_far = {"loss": total_loss / total_tokens} if total_tokens else {}
                        task.progress(len(predictions), len(rows), **so_far)
        finally:
            if was_training:
                model.train()
        if total_tokens == 0:
            raise DataError(
                f"no completion tokens to score in the {task.split} split "
                f"(max length {max_length} cuts every completion off).",
                hint="Raise training.max_seq_length or the evaluator's max_length option.",
            )
        mean = total_loss / total_tokens
        return EvalResult(
            evaluator=self.name,
            split=task.split,
            n=len(predictions),
            metrics={
                "loss": mean,
                "perplexity": math.exp(min(mean, 700.0)),
                "tokens": total_tokens,
                "n": len(predictions),
            },
            primary="loss",
            higher_is_better=False,
            predictions=predictions,
            options=self.options.model_dump(),
            elapsed_s=time.perf_counter() - started,
        )
