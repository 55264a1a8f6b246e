"""The `Estimate`: terms by phase, the peak, the budget and the verdict, as data; and its
plain-text rendering (a table of terms by phase, then the verdict).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sftkit.memory.budget import MemoryBudget
from sftkit.memory.phases import Breakdown
from sftkit.memory.terms import (
    PHASE_LABELS,
    PHASES,
    UNIT_NOTE,
    MemoryTerm,
    Part,
    gib,
    gib_number,
)
from sftkit.memory.terms import GiB as GiB_BYTES


@dataclass
class Suggestion:
    """A change that makes the recipe fit, with the peak it would have."""

    change: str  # plain words
    overrides: tuple[str, ...]  # `key=value` overrides that make the change
    peak_bytes: int
    peak_phase: str
    budget_bytes: int
    spill_bytes: int = 0  # paged optimizer state that would spill to host RAM

    def to_dict(self) -> dict[str, Any]:
        return {
            "change": self.change,
            "overrides": list(self.overrides),
            "peak_bytes": self.peak_bytes,
            "peak_phase": self.peak_phase,
            "paged_spill_bytes": self.spill_bytes,
        }


@dataclass
class Estimate:
    """What `sftkit estimate-memory` prints and `sftkit run` checks before loading anything."""

    model: str
    model_source: str
    architecture: str
    parameters: int
    trainable_parameters: int
    terms: list[MemoryTerm]
    # Device bytes per phase as nvidia-smi counts them ("device used"): what the allocator
    # reserves, what it never sees (CUDA context, NCCL), and the paged state resident on the
    # device. The verdict, the peak and --fit use it.
    phases: dict[str, int]
    paged: dict[str, int]  # paged (unified memory) bytes per phase, resident or spilled
    host: dict[str, int]
    budget: MemoryBudget
    setting: str  # one line: strategy, optimizer, batch, sequence, GPUs
    recipe_source: str = ""
    notes: list[str] = field(default_factory=list)
    suggestions: list[Suggestion] = field(default_factory=list)
    fit_search: dict[str, Any] = field(default_factory=dict)
    # What torch.cuda.max_memory_allocated / max_memory_reserved would report per phase, and
    # the paged state resident on the device (part of `phases`).
    allocated: dict[str, int] = field(default_factory=dict)
    reserved: dict[str, int] = field(default_factory=dict)
    # why the recipe cannot run on this device at all (a CUDA-only kernel on the CPU): it
    # then never FITS, whatever the bytes say
    cannot_run: str = ""
    resident_paged: dict[str, int] = field(default_factory=dict)
    # Terms priced with generic formulas: the model's architecture is not in the catalog
    # (`sftkit.modelshape.generic`); empty for a catalog family.
    generic: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ verdict

    @property
    def peak_phase(self) -> str:
        return max(PHASES, key=lambda p: (self.phases[p], -PHASES.index(p)))

    @property
    def run_phases(self) -> list[str]:
        """The phases this run goes through (a rollout only where the objective generates)."""
        return [p for p in PHASES if self.phases[p] or p == "load"]

    @property
    def peak_bytes(self) -> int:
        return self.phases[self.peak_phase]

    @property
    def budget_bytes(self) -> int:
        return self.budget.total_bytes

    @property
    def on_gpu(self) -> bool:
        return self.budget.is_gpu

    @property
    def fits(self) -> bool:
        return not self.cannot_run and self.peak_bytes <= self.budget_bytes

    @property
    def headroom_bytes(self) -> int:
        return self.budget_bytes - self.peak_bytes

    @property
    def first_failing_phase(self) -> str | None:
        for phase in PHASES:
            if self.phases[phase] > self.budget_bytes:
                return phase
        return None

    @property
    def paged_spill_bytes(self) -> int:
        """Paged optimizer state that will not fit beside the rest and spills to host RAM."""
        resident = self.resident_paged or dict.fromkeys(PHASES, 0)
        return max(max(self.paged[p] - resident[p] for p in PHASES), 0)

    def figures(self, phase: str) -> dict[str, int]:
        """The phase's allocated, reserved and device-used bytes."""
        return {
            "allocated": self.allocated.get(phase, self.phases[phase]),
            "reserved": self.reserved.get(phase, self.phases[phase]),
            "device_used": self.phases[phase],
        }

    def terms_in(self, phase: str) -> list[MemoryTerm]:
        return [t for t in self.terms if phase in t.phases]

    def dominant_term(self, phase: str) -> MemoryTerm:
        device = [
            t for t in self.terms_in(phase) if t.pool == "device" and t.category != "overhead"
        ]
        return max(device or self.terms_in(phase), key=lambda t: t.bytes)

    def rejection(self) -> str:
        """One paragraph: where it dies, the dominant term, the totals; then the changes."""
        phase = self.first_failing_phase
        if phase is None:
            return ""
        term = self.dominant_term(phase)
        lines = [
            f"{self.model} does not fit: {self.setting}.",
            f"{PHASE_LABELS[phase]}: {term.name} needs {gib(term.bytes)}; the phase needs "
            f"{gib(self.phases[phase])} in all, and the {self.budget.name} has "
            f"{gib(self.budget_bytes)} ({UNIT_NOTE}).",
        ]
        if self.suggestions:
            lines.append("Cheapest changes that fit, each with its predicted peak:")
            width = max(len(s.change) for s in self.suggestions)
            for s in self.suggestions:
                spill = (
                    f", {gib(s.spill_bytes)} paged state spills to host" if s.spill_bytes else ""
                )
                lines.append(
                    f"  - {s.change.ljust(width)}  peak {gib(s.peak_bytes)} "
                    f"({PHASE_LABELS[s.peak_phase]}{spill})  [{' '.join(s.overrides)}]"
                )
        else:
            lines.append("No single change from sftkit's list fits on this device; see the table.")
        return "\n".join(lines)

    # ------------------------------------------------------------------ output

    def to_dict(self) -> dict[str, Any]:
        data = self._fields()
        if self.generic:  # only then: a catalog model's memory.json is as before
            data["generic_terms"] = list(self.generic)
        return data

    def _fields(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_source": self.model_source,
            "architecture": self.architecture,
            "recipe": self.recipe_source,
            "setting": self.setting,
            "unit": "bytes",
            "parameters": self.parameters,
            "trainable_parameters": self.trainable_parameters,
            "peak_bytes": self.peak_bytes,
            "peak_phase": self.peak_phase,
            "budget_bytes": self.budget_bytes,
            "budget": {
                "name": self.budget.name,
                "kind": self.budget.kind,
                "source": self.budget.source,
            },
            "fits": self.fits,
            "cannot_run": self.cannot_run,
            "first_failing_phase": self.first_failing_phase,
            "headroom_bytes": self.headroom_bytes,
            "phases": dict(self.phases),
            "phase_figures": {p: self.figures(p) for p in PHASES},
            "paged_bytes": dict(self.paged),
            "resident_paged_bytes": dict(self.resident_paged),
            "host_bytes": dict(self.host),
            "paged_spill_bytes": self.paged_spill_bytes,
            "terms": [
                {
                    "name": t.name,
                    "phase": phase,
                    "bytes": t.bytes,
                    "category": t.category,
                    "pool": t.pool,
                    "formula": t.formula,
                }
                for t in self.terms
                for phase in t.phases
            ],
            "notes": list(self.notes),
            "suggestions": [s.to_dict() for s in self.suggestions],
            "fit_search": dict(self.fit_search),
        }

    def render(self) -> str:
        from sftkit.memory.result import render_estimate

        return render_estimate(self)


def merge_terms(b: Breakdown) -> list[MemoryTerm]:
    """Parts with the same name and bytes in several phases become one term."""
    merged: dict[tuple[str, int, str], tuple[Part, list[str]]] = {}
    for phase in PHASES:
        for part in b.parts.get(phase, []):
            key = (part.name, part.bytes, part.pool)
            if key in merged:
                merged[key][1].append(phase)
            else:
                merged[key] = (part, [phase])
    return [
        MemoryTerm(p.name, p.bytes, tuple(phases), p.category, p.formula, p.pool)
        for p, phases in merged.values()
    ]


def pool_totals(b: Breakdown, pool: str) -> dict[str, int]:
    return {
        phase: sum(p.bytes for p in b.parts.get(phase, []) if p.pool == pool) for phase in PHASES
    }


def figure_totals(b: Breakdown, figure: str) -> dict[str, int]:
    """Device bytes per phase counted in `figure`: ``allocated`` (tensors and workspaces),
    ``reserved`` (+ the allocator's margin), ``device`` (+ what the allocator never sees;
    paged state not included)."""
    wanted = {
        "allocated": ("allocated",),
        "reserved": ("allocated", "reserved"),
        "device": ("allocated", "reserved", "outside"),
    }[figure]
    return {
        phase: sum(
            p.bytes for p in b.parts.get(phase, []) if p.pool == "device" and p.figure in wanted
        )
        for phase in PHASES
    }


def resident_paged(device: dict[str, int], paged: dict[str, int], budget: int) -> dict[str, int]:
    """Paged state the driver keeps on the device: what fits beside the rest."""
    return {p: min(paged[p], max(0, budget - device[p])) for p in PHASES}


SHORT = {
    "load": "load",
    "rollout": "rollout",
    "forward_backward": "fwd/bwd",
    "optimizer_step": "opt step",
    "later_steps": "later",
    "evaluation": "eval",
}
ORDER = [
    "weights",
    "trainable",
    "gradients",
    "optimizer",
    "activations",
    "logits",
    "communication",
    "other",
    "overhead",
]


def render_estimate(e: Estimate) -> str:
    lines = [
        f"model      {e.model}  ({e.model_source})",
        f"           {e.architecture}",
        f"setting    {e.setting}",
        f"budget     {e.budget.name}: {gib(e.budget_bytes)} ({e.budget.source})",
        f"units      {UNIT_NOTE}; every figure below is in GiB",
        "",
    ]
    rows = _rows(e)
    name_width = min(max([len(name) for name, _ in rows] + [20]), 78)
    columns = e.run_phases
    header = "term".ljust(name_width) + "".join(SHORT[p].rjust(10) for p in columns)
    lines.append(header)
    lines.append("-" * len(header))
    for name, cells in rows:
        shown = name if len(name) <= name_width else name[: name_width - 1] + "…"
        lines.append(
            shown.ljust(name_width)
            + "".join((gib_number(cells[p]) if p in cells else "").rjust(10) for p in columns)
        )
    lines.append("-" * len(header))

    def total(label: str, values: dict[str, int]) -> None:
        lines.append(
            label.ljust(name_width) + "".join(gib_number(values[p]).rjust(10) for p in columns)
        )

    if e.on_gpu:
        total("allocated (torch.cuda.max_memory_allocated)", e.allocated or e.phases)
        total("reserved (torch.cuda.max_memory_reserved)", e.reserved or e.phases)
        total("device used (nvidia-smi; verdict)", e.phases)
    else:
        total("total on device", e.phases)
    if any(e.paged.values()):
        where = "resident in device used; spills to host" if e.on_gpu else "host RAM, in the total"
        total(f"paged pool ({where})", e.paged)
    if any(e.host.values()):
        total("host memory (outside the device)", e.host)
    lines.append("")
    peak = e.peak_phase
    lines.append(f"peak       {gib(e.peak_bytes)} at {PHASE_LABELS[peak]}")
    for note in e.notes:
        lines.append(f"note       {note}")
    if e.paged_spill_bytes:
        lines.append(
            f"note       {gib(e.paged_spill_bytes)} of paged optimizer state will not fit beside the "
            "rest and spills to host RAM (slower optimizer steps)."
        )
    if e.cannot_run:
        lines.append(f"verdict    CANNOT RUN on the {e.budget.name}: {e.cannot_run}.")
    elif e.fits:
        lines.append(
            f"verdict    FITS: peak {gib(e.peak_bytes)} of {gib(e.budget_bytes)} on the "
            f"{e.budget.name}, {gib(e.headroom_bytes)} to spare ({e.peak_bytes / e.budget_bytes:.0%} used)."
        )
    elif not e.on_gpu:
        lines.append(
            f"verdict    peak {gib(e.peak_bytes)} exceeds host RAM ({gib(e.budget_bytes)}) by "
            f"{gib(-e.headroom_bytes)}."
        )
        lines.append("")
        lines.append(e.rejection())
    else:
        lines.append(
            f"verdict    DOES NOT FIT: {gib(e.peak_bytes - e.budget_bytes)} over the {e.budget.name}."
        )
        lines.append("")
        lines.append(e.rejection())
    if e.fit_search:
        lines.append("")
        lines.extend(render_fit(e))
    return "\n".join(lines)


def _rows(e: Estimate) -> list[tuple[str, dict[str, int]]]:
    """One row per term name (a term may take different bytes in different phases)."""
    terms = sorted(e.terms, key=lambda t: ORDER.index(t.category) if t.category in ORDER else 99)
    rows: dict[str, dict[str, int]] = {}
    for t in terms:
        name = t.name if t.pool == "device" else f"{t.name} [{t.pool}]"
        cells = rows.setdefault(name, {})
        for phase in t.phases:
            cells[phase] = cells.get(phase, 0) + t.bytes
    return list(rows.items())


def _distinct(a: int, b: int) -> tuple[str, str]:
    """Two sizes in GiB, with more decimals when two would print them the same (a setting
    just within the card and the next just over it)."""
    if gib(a) != gib(b):
        return gib(a), gib(b)
    return f"{a / GiB_BYTES:.4f} GiB", f"{b / GiB_BYTES:.4f} GiB"


def render_fit(e: Estimate) -> list[str]:
    lines = ["settings that fit (each searched with the rest of the recipe unchanged):"]
    for key, found in e.fit_search.items():
        if "fewest" in found:
            lines.append(
                f"  {key}: fewest that fit = {found['fewest']} (peak {gib(found['peak_bytes'])} per GPU)"
                if found["fewest"] is not None
                else f"  {key}: none up to {found['limit']} fits"
            )
            continue
        if found.get("value") is None:
            lines.append(f"  {key}: none fits (smallest tried: {found.get('smallest_tried')})")
        else:
            peak, over = _distinct(found["peak_bytes"], found.get("next_peak_bytes", 0))
            lines.append(
                f"  {key} = {found['value']}  (peak {peak}; {found['next']} would need {over})"
                if found.get("next") is not None
                else f"  {key} = {found['value']}  (peak {gib(found['peak_bytes'])}; search limit {found['limit']})"
            )
            if found.get("with"):
                changed = ", ".join(f"{k}={v}" for k, v in found["with"].items())
                lines.append(
                    f"    (and {changed}: the same {found['prompts']} prompts per generation "
                    "batch, each with more completions; the micro-batch unchanged)"
                )
            window = found.get("window")
            if window and found["value"] > window:
                lines.append(
                    f"    (memory allows it; the model's position window is {window:,} tokens "
                    "(max_position_embeddings): longer rows need its rope scaled)"
                )
    return lines
