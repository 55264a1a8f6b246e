"""The `Estimate`: terms by phase, the peak, the budget and the verdict, as data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sftkit.memory.budget import MemoryBudget
from sftkit.memory.estimator import Breakdown
from sftkit.memory.parts import Part
from sftkit.memory.terms import PHASE_LABELS, PHASES, MemoryTerm
from sftkit.memory.units import UNIT_NOTE, gib


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
    phases: dict[str, int]  # device bytes per phase (paged and host pools excluded)
    paged: dict[str, int]  # paged (unified memory) bytes per phase
    host: dict[str, int]
    budget: MemoryBudget
    setting: str  # one line: strategy, optimizer, batch, sequence, GPUs
    recipe_source: str = ""
    notes: list[str] = field(default_factory=list)
    suggestions: list[Suggestion] = field(default_factory=list)
    fit_search: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ verdict

    @property
    def peak_phase(self) -> str:
        return max(PHASES, key=lambda p: (self.phases[p], -PHASES.index(p)))

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
        return self.peak_bytes <= self.budget_bytes

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
        spill = 0
        for phase in PHASES:
            over = self.phases[phase] + self.paged[phase] - self.budget_bytes
            spill = max(spill, min(over, self.paged[phase]))
        return max(spill, 0)

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
            "first_failing_phase": self.first_failing_phase,
            "headroom_bytes": self.headroom_bytes,
            "phases": dict(self.phases),
            "paged_bytes": dict(self.paged),
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
        from sftkit.memory.render import render_estimate

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
