"""Measure mode's rollout phase, for an objective that generates its own completions
(`ObjectiveSpec.rollout`): the generation batch produced the way TRL's `GRPOTrainer` does
with its default backend (transformers' ``generate``, TRL 1.16's
``GRPOTrainer._generate_single_turn``), then the per-token log-probabilities it keeps
(``_generate_and_score_completions``), on random prompts of the priced prompt length.

- generation: ``model.generate(input_ids, attention_mask, generation_config=...)`` under
  ``torch.no_grad()`` with checkpointing off, the `GenerationConfig` built from the
  objective's config as TRL builds it (sampling; temperature, top-p/k, min-p, repetition
  penalty, ``cache_implementation``: None, transformers' dynamic cache; the config's
  ``generation_kwargs`` last), forced to the priced completion length
  (``min_new_tokens = max_new_tokens``: end-of-sequence suppressed). The call also returns
  its cache (``return_dict_in_generate``), whose tensors are counted and then dropped, as
  TRL drops them.
- log-probabilities: the fused head's ``log_probs`` over the completion tokens, in chunks of
  the micro-batch (``per_device_train_batch_size``), once per kept set: the old policy's,
  and the reference's with the adapters switched off (TRL's ``use_adapter``).

Imports torch: reached only from `sftkit.training.measure.measure_recipe`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sftkit.memory.phases import kept_log_probs, rollout_stages
from sftkit.memory.setup import Setup
from sftkit.specs import load_factory
from sftkit.training.measure import CHECKPOINTING, Row

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe

# TRL's GRPOConfig fields its trainer passes to GenerationConfig (transformers backend)
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


@dataclass(frozen=True)
class RolloutTensors:
    """What one generation batch held, in bytes."""

    sequences: int  # completions generated at once
    completion_tokens: int  # generated per sequence
    # per sequence, each layer's, in the cache generate returned (none: an engine generated)
    cached_tokens: tuple[int, ...]
    cache_bytes: int
    log_probs: dict[str, int] = field(default_factory=dict)  # whose -> bytes kept


def objective_config(resolved: ResolvedRecipe, on_gpu: bool) -> Any:
    """The objective's TrainingArguments class (`ObjectiveSpec.config`, `SftkitGrpoConfig`
    for grpo) given the recipe's objective options and ``training.trainer_args``, as a run
    gives them: the generation settings TRL reads come from it."""
    t = resolved.recipe.training
    objective = resolved.registry.objectives.get(t.objective)
    options = objective.options_model.model_validate(t.objective_options).model_dump()
    with tempfile.TemporaryDirectory(prefix="sftkit-measure-config-") as tmp:
        return load_factory(objective.config)(
            output_dir=tmp,
            use_cpu=not on_gpu,
            per_device_train_batch_size=t.micro_batch_size,
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            bf16=t.precision == "bf16",
            fp16=t.precision == "fp16",
            report_to="none",
            **options,
            **t.trainer_args,
        )


def generation_config(config: Any, model: Any, completion_tokens: int) -> Any:
    """TRL's GenerationConfig (GRPOTrainer.__init__, transformers backend), forced to
    `completion_tokens` new tokens. The token ids come from the model's own generation
    config (measure mode loads no tokenizer; ids do not change memory)."""
    from transformers import GenerationConfig

    own = model.generation_config
    eos = own.eos_token_id
    pad = own.pad_token_id if own.pad_token_id is not None else model.config.pad_token_id
    kwargs: dict[str, Any] = {
        "max_new_tokens": completion_tokens,
        "do_sample": True,
        "pad_token_id": pad,
        "bos_token_id": own.bos_token_id,
        "eos_token_id": eos,
        **{name: getattr(config, name) for name in SAMPLING_FIELDS if hasattr(config, name)},
        "cache_implementation": getattr(config, "cache_implementation", None),
    }
    kwargs.update(getattr(config, "generation_kwargs", None) or {})
    # the priced length: every completion runs to the end (end-of-sequence suppressed)
    kwargs["max_new_tokens"] = kwargs["min_new_tokens"] = completion_tokens
    # ... and the cache returned, to be counted (TRL's call returns only the token ids)
    return GenerationConfig(**kwargs, return_dict_in_generate=True, disable_compile=True)


def cache_bytes(cache: Any) -> tuple[int, tuple[int, ...]]:
    """(bytes of every key and value tensor, tokens each layer holds) of transformers'
    cache (a sliding-window layer holds fewer)."""
    tensors = [t for layer in cache.layers for t in (layer.keys, layer.values)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values()), tuple(int(layer.keys.shape[-2]) for layer in cache.layers)


def generate_rollout(
    net: Any,
    forward: Any,
    resolved: ResolvedRecipe,
    setup: Setup,
    device: str,
    autocast: Any,
) -> RolloutTensors:
    """Generate the priced generation batch and compute the log-probabilities TRL keeps;
    the tensors' bytes, counted while they exist (the cache is freed before the
    log-probabilities are computed, as in TRL). Where a generation engine of its own
    generates (`Rollout.engine`: vLLM), which measure mode does not start, the
    log-probabilities are computed over random completions of the priced length."""
    import torch
    from accelerate.utils import is_peft_model
    from trl.models.utils import disable_gradient_checkpointing
    from trl.trainer.utils import use_adapter

    rollout = setup.rollout
    assert rollout is not None
    sequences, completion = setup.rollout_sequences, rollout.completion_tokens
    prompt = setup.seq_len - completion  # the priced prompt: training.max_seq_length
    cached: int = 0
    cached_tokens: tuple[int, ...] = ()
    if rollout.engine:
        full = torch.randint(0, setup.shape.vocab_size, (sequences, setup.seq_len), device=device)
    else:
        config = objective_config(resolved, on_gpu=device == "cuda")
        ids = torch.randint(0, setup.shape.vocab_size, (sequences, prompt), device=device)
        gen = generation_config(config, net, completion)
        with torch.no_grad(), disable_gradient_checkpointing(net, CHECKPOINTING):
            out = net.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gen
            )
            cached, cached_tokens = cache_bytes(out.past_key_values)
            full = out.sequences
            del out  # TRL keeps only the token ids
    generated = full.shape[1] - prompt
    full_mask = torch.ones_like(full)
    kept: dict[str, int] = {}
    wanted = [("old policy", rollout.old_log_probs), ("reference", rollout.reference)]
    batch = resolved.recipe.training.micro_batch_size  # TRL's per_device_train_batch_size
    with torch.no_grad(), disable_gradient_checkpointing(net, CHECKPOINTING):
        for whose, held in wanted:
            if not held:
                continue
            if whose == "reference" and is_peft_model(net):
                # TRL's reference under adapters: the copied ``ref`` adapter, else none
                adapter = "ref" if "ref" in net.peft_config else None
                with use_adapter(net, adapter_name=adapter):
                    log_probs = _log_probs(forward, full, full_mask, generated, batch, autocast)
            else:
                log_probs = _log_probs(forward, full, full_mask, generated, batch, autocast)
            kept[whose] = log_probs.untyped_storage().nbytes()
            del log_probs
    return RolloutTensors(sequences, generated, cached_tokens, cached, kept)


def _log_probs(
    forward: Any, ids: Any, mask: Any, completion: int, batch: int, autocast: Any
) -> Any:
    """TRL's ``_get_per_token_logps_and_entropies``: the fused head's per-token
    log-probabilities of the completion tokens, a micro-batch at a time."""
    import torch

    chunks = []
    for start in range(0, ids.size(0), batch):
        rows, rows_mask = ids[start : start + batch], mask[start : start + batch]
        labels = rows.masked_fill(rows_mask == 0, -100)
        labels[:, :-completion] = -100
        with autocast:
            out = forward(
                input_ids=rows, attention_mask=rows_mask, labels=labels, fused_lm_head=True
            )
        chunks.append(out.log_probs[:, -completion:])
    return torch.cat(chunks, dim=0)


def rollout_rows(setup: Setup, got: RolloutTensors) -> tuple[list[Row], list[str]]:
    """The rollout terms against the tensors, byte for byte: the KV cache at the tokens
    generate keeps (one fewer than the term prices: the last token sampled is never fed
    back, so never cached), and each set of kept log-probabilities."""
    generating, _ = rollout_stages(setup)
    terms = {part.name.split(" (")[0]: part.bytes for part in generating}
    kept = kept_log_probs(setup)
    if got.cached_tokens:
        rows, notes = _cache_rows(setup, got, terms["rollout: KV cache"])
    else:  # generated by an engine beside the model
        engine = setup.rollout.engine if setup.rollout else ""
        rows, notes = (
            [],
            [
                f"rollout: {engine} generates in its own share of the GPU, which measure mode "
                "does not start: the kept log-probabilities are compared (over random "
                "completions of the priced length), not the generation or the phase's peaks."
            ],
        )
    for whose, measured in got.log_probs.items():
        rows.append(Row(f"rollout: {whose} log-probabilities", kept[whose], measured, exact=True))
    return rows, notes


def _cache_rows(setup: Setup, got: RolloutTensors, term: int) -> tuple[list[Row], list[str]]:
    tokens = setup.seq_len
    # the term's bytes for one token in one layer (keys and values of every sequence); a
    # term that is not a whole number of them is compared whole (a mismatch)
    per_entry, remainder = divmod(term, setup.shape.num_layers * tokens)
    predicted = per_entry * sum(got.cached_tokens) if remainder == 0 else term
    low, high = min(got.cached_tokens), max(got.cached_tokens)
    held = f"{low}" if low == high else f"{low} to {high} (by layer)"
    rows = [Row(f"rollout: KV cache, {held} of {tokens} tokens", predicted, got.cache_bytes, True)]
    notes = []
    if predicted != term:
        why = (
            "the last token sampled is never fed back"
            if high == tokens - 1
            else "what the model's cache layers keep, a sliding window for instance"
        )
        notes.append(
            f"rollout: the KV cache term prices all {tokens} tokens of each of the "
            f"{got.sequences} sequences in every layer ({term:,} bytes); generate's cache "
            f"holds {held} ({why}): the row compares the term's bytes per token at that count."
        )
    priced = setup.rollout.completion_tokens if setup.rollout else 0
    if got.completion_tokens != priced:
        notes.append(
            f"rollout: generate stopped at {got.completion_tokens} new tokens, not the priced "
            f"{priced}."
        )
    return rows, notes
