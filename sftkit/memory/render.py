"""Plain-text rendering of an estimate: a table of terms by phase, then the verdict."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sftkit.memory.terms import PHASE_LABELS, PHASES
from sftkit.memory.units import UNIT_NOTE, gib, gib_number

if TYPE_CHECKING:
    from sftkit.memory.result import Estimate

SHORT = {
    "load": "load",
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
    header = "term".ljust(name_width) + "".join(SHORT[p].rjust(10) for p in PHASES)
    lines.append(header)
    lines.append("-" * len(header))
    for name, cells in rows:
        shown = name if len(name) <= name_width else name[: name_width - 1] + "…"
        lines.append(
            shown.ljust(name_width)
            + "".join((gib_number(cells[p]) if p in cells else "").rjust(10) for p in PHASES)
        )
    lines.append("-" * len(header))
    lines.append(
        "total on device".ljust(name_width)
        + "".join(gib_number(e.phases[p]).rjust(10) for p in PHASES)
    )
    if any(e.paged.values()):
        lines.append(
            "paged pool (spills to host)".ljust(name_width)
            + "".join(gib_number(e.paged[p]).rjust(10) for p in PHASES)
        )
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
    if e.fits:
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
            lines.append(
                f"  {key} = {found['value']}  (peak {gib(found['peak_bytes'])}; "
                f"{found['next']} would need {gib(found['next_peak_bytes'])})"
                if found.get("next") is not None
                else f"  {key} = {found['value']}  (peak {gib(found['peak_bytes'])}; search limit {found['limit']})"
            )
    return lines
