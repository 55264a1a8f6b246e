"""`sftkit preview`: tokenized examples with trained/masked tokens marked, and lengths."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from sftkit.data.prepare import peek_split
from sftkit.data.tokenize import IGNORE_INDEX, Encoded, Reasoning, encode_all
from sftkit.specs import load_factory

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe


OPEN, CLOSE = "\u27e6", "\u27e7"  # marks trained spans where there is no colour


def render_tokens(encoded: Encoded, tokenizer: Any, *, marks: bool = False) -> Text:
    """Each token's text (special tokens as written, newlines as ⏎), masked ones dim,
    trained ones bold green; with `marks`, trained spans are also wrapped in ⟦ ⟧ so the
    difference survives plain-text output (logs, CI)."""
    text = Text()
    trained_before = False
    for token_id, label in zip(encoded.input_ids, encoded.labels, strict=True):
        trained = label != IGNORE_INDEX
        if marks and trained != trained_before:
            text.append(OPEN if trained else CLOSE, style="bold")
        trained_before = trained
        piece = tokenizer.decode([token_id], skip_special_tokens=False)
        piece = piece.replace("\n", "\u23ce\n")
        text.append(piece, style="bold green" if trained else "dim")
    if marks and trained_before:
        text.append(CLOSE, style="bold")
    return text


def trained_spans(encoded: Encoded) -> int:
    """Runs of trained tokens (one per trained assistant turn of a conversation)."""
    flags = [label != IGNORE_INDEX for label in encoded.labels]
    return sum(1 for i, on in enumerate(flags) if on and (i == 0 or not flags[i - 1]))


def length_stats(encoded: list[Encoded], max_length: int) -> dict[str, Any]:
    lengths = sorted(len(e.input_ids) for e in encoded)
    over = [e for e in encoded if len(e.input_ids) > max_length]
    return {
        "examples": len(lengths),
        "min": lengths[0] if lengths else 0,
        "median": statistics.median(lengths) if lengths else 0,
        "p95": lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))] if lengths else 0,
        "max": lengths[-1] if lengths else 0,
        "over_max_length": len(over),
        # Truncation keeps the start: these lose their EOS and never learn to stop.
        "completion_cut": sum(1 for e in over if e.prompt_length < max_length),
        "no_completion_left": sum(1 for e in over if e.prompt_length >= max_length),
        "trained_tokens": sum(e.trained_tokens for e in encoded),
        "total_tokens": sum(lengths),
    }


def preview(resolved: ResolvedRecipe, console: Console, *, count: int, split: str) -> None:
    from sftkit.modeling import load_tokenizer

    recipe = resolved.recipe
    tokenizer = load_tokenizer(recipe)
    template = load_factory(resolved.template.spec.factory)(resolved.template.options)
    examples, _ = peek_split(resolved, split)  # type: ignore[arg-type]  # warnings: logged
    encoded = encode_all(
        template,
        examples,
        tokenizer,
        completion_only_loss=recipe.data.completion_only_loss,
        reasoning=Reasoning.of(recipe),
    )
    marks = console.no_color or not console.is_terminal
    legend = (
        f"{OPEN}trained{CLOSE}, the rest masked (no loss)"
        if marks
        else "[dim]dim = masked (no loss)[/dim], [bold green]green = trained[/bold green]"
    )
    console.print(
        f"[bold]{split}[/bold]: {len(examples)} examples, format {resolved.data_label}, "
        f"template {resolved.template.spec.name}, completion-only loss "
        f"{'on' if recipe.data.completion_only_loss else 'off'}, reasoning "
        f"{recipe.data.reasoning}"
        f"{' (empty think blocks masked)' if recipe.data.mask_empty_think else ''}. {legend}."
    )
    for example, enc in list(zip(examples, encoded, strict=True))[:count]:
        spans = trained_spans(enc)
        console.rule(
            f"{example.id}: {len(enc.input_ids)} tokens, {enc.trained_tokens} trained"
            + (f" in {spans} spans" if spans > 1 else ""),
            style="cyan",
        )
        console.print(render_tokens(enc, tokenizer, marks=marks))
    stats = length_stats(encoded, recipe.training.max_seq_length)
    table = Table(title=f"token lengths ({split}, max_seq_length {recipe.training.max_seq_length})")
    for key in ("examples", "min", "median", "p95", "max", "over_max_length", "completion_cut"):
        table.add_column(key.replace("_", " "), justify="right")
    table.add_row(
        *(
            str(stats[k])
            for k in (
                "examples",
                "min",
                "median",
                "p95",
                "max",
                "over_max_length",
                "completion_cut",
            )
        )
    )
    console.print(table)
    share = stats["trained_tokens"] / max(stats["total_tokens"], 1)
    console.print(
        f"{stats['trained_tokens']:,} of {stats['total_tokens']:,} tokens trained ({share:.0%})."
    )
    if stats["over_max_length"]:
        console.print(
            f"[yellow]{stats['over_max_length']} example(s) exceed max_seq_length and are "
            f"truncated; {stats['completion_cut']} lose the end of their answer (and EOS), "
            f"{stats['no_completion_left']} have no answer left and are dropped.[/yellow] "
            "Raise training.max_seq_length or filter long examples."
        )
