"""The estimator: from a recipe alone, peak device memory per phase and a verdict.

`compute()` makes one estimate of one recipe (shape, budget, setup, terms); `estimate()`
adds the cheapest changes that fit (advice.py) when it does not; `preflight()` is the check
`sftkit run` makes.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from sftkit.errors import DoesNotFitError, PluginError
from sftkit.memory import activations as act
from sftkit.memory import colocated
from sftkit.memory.budget import resolve_budget
from sftkit.memory.evalcopy import merged_copy_term
from sftkit.memory.phases import breakdown, rollout_stages
from sftkit.memory.result import (
    Estimate,
    figure_totals,
    merge_terms,
    pool_totals,
    resident_paged,
)
from sftkit.memory.setup import Setup, describe, setup_from_recipe
from sftkit.memory.terms import MemoryTerm, gib
from sftkit.modelshape import ModelShape, resolve_model_shape
from sftkit.recipe.adapter import saved_adapter_config
from sftkit.runpaths import ADAPTER_CONFIG

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe


def manager_of(resolved: ResolvedRecipe) -> Any:
    return resolved.registry.manager if resolved.registry is not None else None


def shape_for(resolved: ResolvedRecipe, model: str | None = None) -> ModelShape:
    r = resolved.recipe
    return resolve_model_shape(
        model or r.model.name_or_path,
        trust_remote_code=r.model.trust_remote_code,
        manager=manager_of(resolved),
    )


def extra_terms(resolved: ResolvedRecipe, shape: ModelShape) -> list[MemoryTerm]:
    """The plugins' `extra_memory_terms`, each with its plugin as `source` unless it says."""
    manager = manager_of(resolved)
    if manager is None:
        return []
    out: list[MemoryTerm] = []
    for plugin, call in manager.callers_by_plugin("extra_memory_terms"):
        for result in call(recipe=resolved, shape=shape):
            for term in result or []:
                if not isinstance(term, MemoryTerm):
                    raise PluginError(
                        f"plugin {plugin!r}: extra_memory_terms returned "
                        f"{type(term).__name__}; expected sftkit.MemoryTerm."
                    )
                out.append(term if term.source else dataclasses.replace(term, source=plugin))
    return out


def term_notes(terms: list[MemoryTerm]) -> list[str]:
    """The notes the plugins' terms carry, each saying whose it is."""
    return [f"{note} ({term.source})" for term in terms for note in term.notes]


def setting_line(setup: Setup) -> str:
    t = "on" if setup.checkpointing else "off"
    batch = str(setup.micro_batch_size)
    if setup.sequences_per_example > 1:
        batch = (
            f"{setup.micro_batch_size // setup.sequences_per_example} x "
            f"{setup.sequences_per_example} sequences ({setup.objective})"
        )
    return (
        f"{setup.strategy.name} + {setup.optimizer.name}, micro-batch {batch} x "
        f"{setup.seq_len} tokens (accumulation {setup.grad_accum}), checkpointing {t}, "
        f"{setup.attn_implementation}, {describe(setup)}"
    )


def notes_for(setup: Setup, on_gpu: bool) -> list[str]:
    notes = []
    if not on_gpu:
        notes.append("no GPU: compared with host RAM; CUDA context and workspaces left out.")
    if setup.padded and setup.attn_implementation in ("sdpa", "eager"):
        notes.append(
            f"attention: {setup.attention_description}: SDPA repeats k/v per head and keeps an "
            "s x s mask per layer (packed rows: training.mask_free_packing drops it)."
        )
    else:
        notes.append(f"attention: {setup.attention_description}.")
    if setup.tiled_mlp:
        notes.append(
            "tiled MLP: each MLP keeps only its input and is recomputed in backward in tiles "
            f"of {act.mlp_tile_tokens(setup, setup.micro_batch_size, setup.seq_len):,} tokens."
        )
    if setup.compiled:
        notes.append(
            "compiled decoder layers priced as eager ones (conservative: inductor's fusions "
            "keep the same or fewer tensors for backward); compiling takes host memory once."
        )
    notes.append(setup.loss.note())
    notes.extend(rollout_notes(setup))
    notes.extend(setup.storage.notes(setup.composition.has_adapters))
    for adapter in setup.adapters:
        notes.extend(adapter.notes())
    return notes


def start_adapter_notes(resolved: ResolvedRecipe) -> list[str]:
    """What the estimate priced for a starting adapter (``model.adapter``): PEFT loads it
    with its own config, which validation holds the strategy's options to where it exists."""
    path = resolved.recipe.model.adapter
    if not path:
        return []
    if saved_adapter_config(path) is None:
        return [
            f"model.adapter {path!r} does not exist yet: priced with strategy.options; PEFT "
            f"loads it with its own {ADAPTER_CONFIG}, which must agree with them once it exists "
            "(checked at load)."
        ]
    if resolved.strategy.spec.saved_differences is None:
        return [
            f"model.adapter {path!r}: priced with strategy.options; strategy "
            f"{resolved.strategy.spec.name!r} declares no comparison with the adapter's "
            f"{ADAPTER_CONFIG}, whose settings PEFT loads."
        ]
    return [
        f"model.adapter {path!r}: its {ADAPTER_CONFIG} agrees with strategy.options, which "
        "the estimate prices."
    ]


def rollout_notes(setup: Setup) -> list[str]:
    """The rollout's two stages, of which the phase shows the larger: what the other one
    needs, so neither goes unseen."""
    generating, scoring = rollout_stages(setup)
    if not scoring:
        return []
    sizes = {
        "generating": sum(p.bytes for p in generating),
        "scoring": sum(p.bytes for p in scoring),
    }
    scoring_line = (
        f"the no-grad log-probability forwards after it hold {gib(sizes['scoring'])} above "
        "the weights and optimizer state"
    )
    engine = setup.rollout.engine if setup.rollout else ""
    if engine:
        return [f"rollout: generating is in {engine}'s share; {scoring_line}."]
    shown = max(sizes, key=lambda stage: sizes[stage])
    return [
        f"rollout: generating holds {gib(sizes['generating'])}, {scoring_line}; the phase "
        f"shows the larger ({shown})."
    ]


def generic_notes(shape: ModelShape) -> list[str]:
    """What an estimate of a model outside the catalog counts exactly and what it does not."""
    if not shape.generic:
        return []
    notes = [
        f"{shape.model_type!r} is not in sftkit's catalog: its {shape.parameters:,} "
        "parameters (weights, gradients, optimizer state) are counted tensor by tensor from "
        f"the model built on the meta device; the {', '.join(shape.generic)} terms are "
        "generic (the catalog's Llama-style decoder layer, from the config's hidden size, "
        "heads, KV heads, head dim, MLP width"
        + (" and experts per token)." if shape.num_experts else ").")
    ]
    plain = sum(g.total for g in shape.census() if g.role == "other")
    if plain:
        notes.append(
            f"{plain:,} parameters are in tensors that are not linear layers (e.g. stacked MoE "
            "experts): stored plainly, never quantized by bitsandbytes nor adapted by LoRA."
        )
    return notes


def compute(
    resolved: ResolvedRecipe, *, gpu: str | None = None, model: str | None = None
) -> Estimate:
    shape = shape_for(resolved, model)
    budget = resolve_budget(gpu or resolved.recipe.hardware.gpu, manager_of(resolved))
    setup = setup_from_recipe(resolved, shape, on_gpu=budget.is_gpu)
    terms = extra_terms(resolved, shape)
    engine = colocated.engine_term(setup, budget)  # a generation engine's share of the GPU
    if engine is not None:
        terms.append(engine)
    b = breakdown(setup, terms)
    device, paged = pool_totals(b, "device"), pool_totals(b, "paged")
    # On a GPU, paged state stays on the device while there is room and spills to host RAM
    # after; on the CPU the "device" is host RAM, so all of it counts in the total.
    resident = resident_paged(device, paged, budget.total_bytes) if budget.is_gpu else paged
    # the evaluators' merged bf16 copy, when the evaluation phase has room for it
    copy = merged_copy_term(resolved, shape, device["evaluation"] + resident["evaluation"], budget)
    if copy is not None:
        b = breakdown(setup, [*terms, copy])
        device = pool_totals(b, "device")
    result = Estimate(
        model=shape.name,
        model_source=shape.source,
        architecture=shape.describe(),
        parameters=b.parameters,
        trainable_parameters=b.trainable_parameters,
        terms=merge_terms(b),
        phases={p: device[p] + resident[p] for p in device},
        paged=paged,
        host=pool_totals(b, "host"),
        allocated=figure_totals(b, "allocated"),
        reserved=figure_totals(b, "reserved"),
        resident_paged=resident,
        budget=budget,
        setting=setting_line(setup),
        recipe_source=resolved.source,
        notes=[
            *generic_notes(shape),
            *notes_for(setup, budget.is_gpu),
            *colocated.notes(setup, budget),
            *start_adapter_notes(resolved),
            *term_notes(terms),
        ],
        generic=list(shape.generic),
        cannot_run=(
            f"training.loss={setup.loss.name}: {setup.loss.cpu_problem}"
            if setup.loss.cpu_problem and not budget.is_gpu
            else colocated.shortfall(setup, budget)
        ),
    )
    return result


def estimate(
    resolved: ResolvedRecipe,
    *,
    gpu: str | None = None,
    model: str | None = None,
    advise: bool = True,
) -> Estimate:
    """Estimate `resolved` on `gpu` (default: the recipe's ``hardware.gpu``) for `model`
    (default: the recipe's ``model.name_or_path``). When it does not fit and `advise` is on,
    the estimate carries the cheapest changes that fit, each re-estimated."""
    result = compute(resolved, gpu=gpu, model=model)
    if advise and not result.fits and result.on_gpu:
        from sftkit.memory.advice import suggest

        result.suggestions = suggest(resolved, result, gpu=gpu, model=model)
    return result


def preflight(resolved: ResolvedRecipe, *, gpu: str | None = None) -> Estimate:
    """The check `sftkit run` makes before loading anything: returns the estimate when the
    run fits (or runs on ``cpu``, where the verdict is informational), else raises
    `DoesNotFitError` whose message is the rejection `estimate-memory` prints."""
    result = estimate(resolved, gpu=gpu)
    if result.fits or not result.on_gpu:
        return result
    raise DoesNotFitError(
        result.rejection(),
        hint="Apply one of the changes above as an override, or run anyway with `--force`.",
    )
