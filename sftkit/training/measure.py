"""Measure mode: build the recipe's model and optimizer on the present device, run one real
forward, backward and optimizer step (then, for an objective that generates, its rollout:
`sftkit.training.measure_rollout`; then a second forward/backward) on random tokens, and
compare with the prediction. It lives next to training, not in `sftkit.memory`, because it
builds the model and optimizer the way a run does; the estimator itself stays torch-free.

On CUDA it compares per-phase peaks (allocated, reserved, device used); everywhere it compares
the static terms byte for byte (weights, trainable parameters, gradients, optimizer state),
the rollout's KV cache and kept log-probabilities, and, without checkpointing, the bytes
autograd saved for backward. Imports torch: call it
only from `estimate-memory --measure`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sftkit.memory import activations as act
from sftkit.memory.phases import StaticBytes, breakdown, static_bytes
from sftkit.memory.result import figure_totals, pool_totals, resident_paged
from sftkit.memory.setup import Setup, setup_from_recipe
from sftkit.memory.terms import PHASE_LABELS, MemoryTerm, gib
from sftkit.runpaths import RunPaths

if TYPE_CHECKING:
    import torch

    from sftkit.memory.result import Estimate
    from sftkit.recipe.load import ResolvedRecipe

GPU_TOLERANCE = 0.10  # the estimator's target on measured peaks
CHECKPOINTING = {"use_reentrant": False}  # the run's checkpointing kwargs (stages/train.py)


# --------------------------------------------------------------------------- tensor census


def _storages(tensors: Iterable[Any]) -> dict[int, int]:
    out: dict[int, int] = {}
    for t in tensors:
        if t is None or not hasattr(t, "untyped_storage"):
            continue
        storage = t.untyped_storage()
        if storage.nbytes():
            out[storage.data_ptr()] = storage.nbytes()
    return out


def _quant_state_tensors(state: Any) -> Iterator[Any]:
    if state is None:
        return
    for value in vars(state).values():
        if hasattr(value, "untyped_storage"):
            yield value
        elif value is not None and value.__class__.__name__ == "QuantState":
            yield from _quant_state_tensors(value)


def model_tensors(model: torch.nn.Module) -> list[Any]:
    """Parameters, buffers, and bitsandbytes' quantization state (4-bit QuantState, LLM.int8
    CB/SCB), which live outside the parameter list."""
    tensors: list[Any] = list(model.parameters()) + list(model.buffers())
    for module in model.modules():
        weight = getattr(module, "weight", None)
        tensors.extend(_quant_state_tensors(getattr(weight, "quant_state", None)))
        for name in ("SCB", "CB"):
            tensors.append(getattr(weight, name, None))
        state = getattr(module, "state", None)
        if state is not None and state.__class__.__name__ == "MatmulLtState":
            tensors.extend([state.CB, state.SCB])
    return tensors


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[Any]:
    out = []
    for state in optimizer.state.values():
        for value in state.values():
            if hasattr(value, "untyped_storage"):
                out.append(value)
    return out


def measured_static(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> StaticBytes:
    params = [p for p in model.parameters()]
    return StaticBytes(
        weights=sum(_storages(model_tensors(model)).values()),
        trainable=sum(_storages(p for p in params if p.requires_grad).values()),
        gradients=sum(_storages(p.grad for p in params).values()),
        optimizer_state=sum(_storages(optimizer_tensors(optimizer)).values()),
    )


def saved_activation_bytes(
    model: torch.nn.Module, batch: dict[str, Any], autocast: Any, forward: Any = None
) -> tuple[int, Any]:
    """Run a forward pass and count the bytes autograd keeps for backward: tensors saved by
    built-in ops (saved-tensor hooks) and tensors custom Functions keep on their context
    (bitsandbytes' ``ctx.tensors``), excluding the model's own tensors."""
    import torch

    exclude = set(_storages(model_tensors(model)))
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in exclude:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        out = (forward or model)(**batch)
    stack, visited = [out.loss.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, torch.autograd.function.BackwardCFunction):
            for value in vars(node).values():
                items = value if isinstance(value, (tuple, list)) else (value,)
                for item in items:
                    if isinstance(item, torch.Tensor):
                        for ptr, n in _storages([item]).items():
                            if ptr not in exclude:
                                seen[ptr] = n
        stack.extend(fn for fn, _ in node.next_functions)
    return sum(seen.values()), out


# --------------------------------------------------------------------------- comparison


@dataclass
class Row:
    what: str
    predicted: int
    measured: int
    exact: bool  # static terms must match exactly; peaks within GPU_TOLERANCE

    @property
    def error(self) -> float:
        return (self.predicted - self.measured) / self.measured if self.measured else 0.0

    @property
    def ok(self) -> bool:
        if self.exact:
            return self.predicted == self.measured
        return abs(self.error) <= GPU_TOLERANCE


@dataclass
class Comparison:
    device: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "ok": self.ok,
            "rows": [
                {
                    "what": r.what,
                    "predicted_bytes": r.predicted,
                    "measured_bytes": r.measured,
                    "exact": r.exact,
                    "ok": r.ok,
                }
                for r in self.rows
            ],
            "notes": self.notes,
        }

    def render(self) -> str:
        width = max([len(r.what) for r in self.rows] + [10])
        lines = [
            f"measured on {self.device} (one real step on random tokens); GiB = 2**30 bytes",
            f"{'':{width}}  {'predicted':>14}  {'measured':>14}  {'error':>7}",
        ]
        for r in self.rows:
            mark = "ok" if r.ok else ("MISMATCH" if r.exact else "OFF")
            lines.append(
                f"{r.what:{width}}  {gib(r.predicted):>14}  {gib(r.measured):>14}  "
                f"{r.error:>+7.1%}  {mark}  ({r.predicted:,} vs {r.measured:,} bytes)"
            )
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def net_layout(setup: Setup) -> list[Any]:
    from sftkit.memory.layout import layout

    return layout(setup)


def predicted_saved_bytes(setup: Setup, tensors: list[Any]) -> int:
    """What autograd should hold after the forward pass, without checkpointing."""
    b, s = setup.micro_batch_size, setup.seq_len
    return (
        setup.shape.num_layers * act.layer_saved_bytes(setup, b, s)
        - act.first_layer_reduction(setup, b, s)
        + act.head_saved_bytes(setup, b, s)
        + act.autocast_weight_copy_bytes(setup, tensors)
    )


def install_loss_head(model: Any, setup: Setup, head: Any = None) -> tuple[Any, dict[str, Any]]:
    """Compute the loss the way sftkit's runner does: TRL's chunked log-prob head when the
    installed TRL uses one, sftkit's head when the recipe names one (`training.loss`), else
    the model's own loss (`head`: the recipe's head function, `runtime_head`). Returns
    what to call for the forward, and its extra kwargs."""
    from sftkit.components.loss import TrlChunkedLogProb

    if isinstance(setup.loss, TrlChunkedLogProb):
        from trl.trainer.utils import add_fused_lm_head

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        add_fused_lm_head(base, outputs=("log_probs", "entropy", "is_top1"))
        return model, {"fused_lm_head": True}
    from sftkit.training.loss import HeadedModel

    return HeadedModel(model, head), {"fused_lm_head": True}


def autocast_context(setup: Setup, device: str) -> Any:
    import torch

    if not setup.autocast:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if setup.compute_bytes == 2 else torch.float16
    return torch.autocast(device_type=device, dtype=dtype)


def random_batch(setup: Setup, device: str) -> dict[str, Any]:
    import torch

    ids = torch.randint(
        0, setup.shape.vocab_size, (setup.micro_batch_size, setup.seq_len), device=device
    )
    return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}


def prepare_for_training(model: Any, setup: Setup) -> None:
    """What sftkit's runner (TRL's SFTTrainer) does to the built model before the first step:
    train mode, checkpointing with input gradients, and bf16 adapters over a quantized base
    (tests/test_memory_trainer.py checks this against a real SFTTrainer step)."""
    import torch

    model.train()
    # SFTTrainer's own test: transformers marks a bitsandbytes-loaded model.
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        for name, param in model.named_parameters():
            if param.requires_grad and "lora_magnitude_vector" not in name:
                param.data = param.data.to(torch.bfloat16)
    # ... and what sftkit's runner does after it (`sftkit.training.techniques`)
    from sftkit.training.techniques import restore_declared_dtypes

    restore_declared_dtypes(model, setup.composition, setup.precision)
    if setup.tiled_mlp:
        from sftkit.training.layers import install_tiled_mlp

        install_tiled_mlp(model)
    if setup.activation_offload and setup.checkpointing:
        from sftkit.training.offload import install

        install(model)
    if setup.checkpointing:
        kwargs = CHECKPOINTING
        if hasattr(model, "activation_checkpointing_enable"):  # its name from transformers 5.2x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if not setup.trains_base and hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()


def measure_recipe(
    resolved: ResolvedRecipe, estimate: Estimate, *, model: str | None = None
) -> Comparison:
    import torch

    from sftkit.memory.estimator import extra_terms, shape_for
    from sftkit.modeling import build_model, training_device
    from sftkit.training.loss import runtime_head
    from sftkit.training.optimizer import build_optimizer

    device = training_device(resolved.recipe)
    on_gpu = device == "cuda"
    shape = shape_for(resolved, model)
    # random tokens are never padded: predict that case
    setup = dataclasses.replace(setup_from_recipe(resolved, shape, on_gpu=on_gpu), padded=False)
    predicted_static = static_bytes(setup)
    plugin_terms = extra_terms(resolved, shape)
    cmp = Comparison(device=torch.cuda.get_device_name() if on_gpu else "cpu")
    with tempfile.TemporaryDirectory(prefix="sftkit-measure-") as tmp:
        if on_gpu:
            torch.cuda.reset_peak_memory_stats()
        net = build_model(resolved, None, base_dir=RunPaths(Path(tmp)).base)
        peaks: dict[str, tuple[int, int, int]] = {}
        if on_gpu:
            peaks["load"] = _cuda_peaks()
        optimizer = build_optimizer(resolved, net)
        prepare_for_training(net, setup)
        forward, extra = install_loss_head(net, setup, runtime_head(resolved))
        batch = {**random_batch(setup, device), **extra}
        ac = autocast_context(setup, device)
        if not setup.checkpointing and not on_gpu:
            saved, out = saved_activation_bytes(net, batch, ac, forward)
            predicted_saved = predicted_saved_bytes(setup, net_layout(setup))
            cmp.rows.append(
                Row("saved activations (no checkpointing)", predicted_saved, saved, exact=False)
            )
        else:
            with ac:
                out = forward(**batch)
        offload = getattr(net, "_sftkit_offload", None)
        if offload is not None:  # training.activation_offload: what went to host memory
            host = act.checkpointed_layer_bytes(setup, setup.micro_batch_size, setup.seq_len)
            cmp.rows.append(
                Row(
                    "checkpointed inputs in host memory",
                    host * setup.shape.num_layers,
                    offload.packed_bytes,
                    exact=True,
                )
            )
        out.loss.backward()
        del out
        if on_gpu:
            peaks["forward_backward"] = _cuda_peaks()
        optimizer.step()
        if on_gpu:
            peaks["optimizer_step"] = _cuda_peaks()
        measured = measured_static(net, optimizer)
        optimizer.zero_grad(set_to_none=True)
        if setup.rollout is not None:  # an objective that generates: after the first step
            from sftkit.training.measure_rollout import generate_rollout, rollout_rows

            if on_gpu:
                torch.cuda.reset_peak_memory_stats()  # the gradients are freed
            rolled = generate_rollout(net, forward, resolved, setup, device, ac)
            if on_gpu:
                rolled_peaks = _cuda_peaks()
                if not setup.rollout.engine:  # an engine's share is not started here
                    peaks["rollout"] = rolled_peaks
            rolled_rows, rolled_notes = rollout_rows(setup, rolled)
        with ac:
            out = net(**batch)
        out.loss.backward()
        del out
        if on_gpu:
            peaks["later_steps"] = _cuda_peaks()
    for name in ("weights", "trainable", "gradients", "optimizer_state"):
        cmp.rows.append(
            Row(
                name.replace("_", " "),
                getattr(predicted_static, name),
                getattr(measured, name),
                exact=True,
            )
        )
    if setup.rollout is not None:
        cmp.rows.extend(rolled_rows)
        cmp.notes.extend(rolled_notes)
    if on_gpu:
        total = torch.cuda.get_device_properties(0).total_memory
        predicted = predicted_figures(setup, plugin_terms, total)
        for phase, measured_figures in peaks.items():
            label = PHASE_LABELS[phase]
            for what, got in zip(predicted, measured_figures, strict=True):
                cmp.rows.append(Row(f"{label}: {what}", predicted[what][phase], got, exact=False))
    else:
        cmp.notes.append("no CUDA device: per-phase peaks are not measured, only the tensors.")
    if plugin_terms:
        shown = ", ".join(f"{t.name} ({t.source})" for t in plugin_terms)
        cmp.notes.append(
            f"predicted with the plugins' terms ({shown}); measured: what one step of the "
            "recipe allocates (a plugin's buffers count where its code runs in that step)."
        )
    return cmp


def predicted_figures(
    setup: Setup, extra: list[MemoryTerm], device_bytes: int
) -> dict[str, dict[str, int]]:
    """The estimate's three figures per phase (`sftkit.memory.result.figure_totals`), the
    plugins' terms (`extra`) included as the estimate has them."""
    b = breakdown(setup, extra)
    on_device, paged = pool_totals(b, "device"), pool_totals(b, "paged")
    resident = resident_paged(on_device, paged, device_bytes)
    return {
        "allocated": figure_totals(b, "allocated"),
        "reserved": figure_totals(b, "reserved"),
        "device used": {ph: on_device[ph] + resident[ph] for ph in on_device},
    }


def _cuda_peaks() -> tuple[int, int, int]:
    """(peak allocated, peak reserved, peak device used) since the last reset; then reset.
    Device used = peak reserved + what the allocator does not own now (CUDA context,
    library workspaces, paged optimizer state), read from the driver."""
    import torch

    torch.cuda.synchronize()
    allocated = torch.cuda.max_memory_allocated()
    reserved = torch.cuda.max_memory_reserved()
    free, total = torch.cuda.mem_get_info()
    outside = (total - free) - torch.cuda.memory_reserved()
    torch.cuda.reset_peak_memory_stats()
    return allocated, reserved, reserved + outside
