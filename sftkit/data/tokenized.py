"""Tokenized splits, built once and reused: a batched `Dataset.map` over worker processes
turns a prepared split into token ids and trained masks, stored under the prepared directory
(``tokenized/<split>-<key>/``, `datasets`' Arrow files) and memory-mapped back by every later
run, resume or ``sftkit prepare-data`` with the same inputs, without tokenizing.

The key is a hash of everything that decides the ids (`cache_inputs`): the prepared split
(its sha256, and the sources and their checksums it was prepared from), the format and its
options, the template and its options (and a chat template file's content), the reasoning
setting, the tokenizer (vocabulary, merges, special tokens, chat template), the maximum
length, completion-only loss, the objective and sftkit's version. Any change gives another
key and a fresh build; the older builds of the split are pruned to the last `KEPT`. An entry
appears whole or not at all (written beside, then renamed), also when several processes
(the ranks of a launch) build it at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from sftkit import progress
from sftkit._version import __version__
from sftkit.data.example import Example
from sftkit.data.tokenize import Reasoning, encode_all
from sftkit.errors import DataError

if TYPE_CHECKING:
    from sftkit.data.prepare import PreparedData, Split

log = logging.getLogger("sftkit.data")

CACHE = "tokenized"
KEPT = 4  # builds kept per split (a user switching between two tokenizers keeps both)
# Rows per worker process below which one more costs more than it saves: the tokenizer's
# batch encoding already runs on every core, so workers only share the template rendering
# (GSM8K's 7,273 train rows on the 2-core machine: 1.8 s in one process, 2.3 s in two).
ROWS_PER_WORKER = 10_000


class PreparedSplit(Sequence[Example]):
    """One prepared split: its examples (read when first asked for) and where it lies, so a
    training objective can tokenize it through the cache (`tokenized_split`)."""

    def __init__(self, prepared: PreparedData, name: Split) -> None:
        self.prepared = prepared
        self.name = name
        self.path = prepared.split_path(name)
        self._examples: list[Example] | None = None

    @property
    def examples(self) -> list[Example]:
        if self._examples is None:
            from sftkit.data.prepare import read_examples

            self._examples = read_examples(self.path)
        return self._examples

    def __len__(self) -> int:
        return int(self.prepared.counts[self.name])

    @overload
    def __getitem__(self, index: int) -> Example: ...
    @overload
    def __getitem__(self, index: slice) -> list[Example]: ...
    def __getitem__(self, index: int | slice) -> Example | list[Example]:
        return self.examples[index]

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of what makes a tokenizer's ids: a fast tokenizer's whole definition
    (vocabulary, merges, normalizer, added tokens) plus its special tokens and chat template."""
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:  # a slow tokenizer: datasets' own hasher of Python objects
        from datasets.fingerprint import Hasher

        digest.update(Hasher.hash(tokenizer).encode())
    extra = {
        "special": {k: str(v) for k, v in tokenizer.special_tokens_map.items()},
        "chat_template": getattr(tokenizer, "chat_template", None),
        "padding_side": getattr(tokenizer, "padding_side", None),
    }
    digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def cache_inputs(
    split: PreparedSplit, template: Any, tokenizer: Any, recipe: Any, objective: str
) -> dict[str, Any]:
    """Everything the tokenized split depends on (hashed into its key; stored beside it)."""
    manifest = split.prepared.manifest
    entry = manifest.get("files", {}).get(split.path.name, {})
    return {
        "split": split.name,
        "split_sha256": entry.get("sha256"),
        "sources": [[s.get("source"), s.get("sha256")] for s in manifest.get("sources", [])],
        "format": [manifest.get("format"), manifest.get("fingerprint")],
        "template": recipe.data.template.model_dump(mode="json"),
        # what a template reads beyond its options (a chat template file's content)
        "template_identity": getattr(template, "cache_identity", lambda: None)(),
        "reasoning": [recipe.data.reasoning, recipe.data.mask_empty_think],
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_length": recipe.training.max_seq_length,
        "completion_only_loss": recipe.data.completion_only_loss,
        "objective": objective,
        "sftkit": __version__,
    }


def cache_key(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def workers(rows: int, num_proc: int | None) -> int:
    """Worker processes for `rows`: data.num_proc, default the CPUs this process may use,
    never more than one per `ROWS_PER_WORKER` rows."""
    if num_proc is None:
        try:
            num_proc = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not on Linux
            num_proc = os.cpu_count() or 1
    return max(1, min(num_proc, rows // ROWS_PER_WORKER))


def _encode_batch(
    batch: dict[str, list[str]],
    template: Any,
    tokenizer: Any,
    completion_only_loss: bool,
    reasoning: Reasoning,
) -> dict[str, list[list[int]]]:
    examples = [Example.from_dict(json.loads(line)) for line in batch["example"]]
    encoded = encode_all(
        template,
        examples,
        tokenizer,
        completion_only_loss=completion_only_loss,
        reasoning=reasoning,
    )
    return {
        "input_ids": [e.input_ids for e in encoded],
        "completion_mask": [e.trained_mask for e in encoded],
    }


def tokenized_split(
    split: PreparedSplit,
    template: Any,
    tokenizer: Any,
    recipe: Any,
    *,
    objective: str = "sft",
) -> Any:
    """The split as a `datasets.Dataset` of ``input_ids`` and ``completion_mask``: from the
    cache when its key matches, else tokenized (batched, in parallel) and stored first."""
    from datasets import Dataset

    if len(split) == 0:
        raise DataError(f"the {split.name} split is empty: there is nothing to train on.")
    inputs = cache_inputs(split, template, tokenizer, recipe, objective)
    key = cache_key(inputs)
    root = split.prepared.directory / CACHE
    target = root / f"{split.name}-{key}"
    if (target / "inputs.json").is_file():
        with progress.current().stage(f"load tokenized {split.name}"):
            return Dataset.load_from_disk(str(target))
    with progress.current().stage(f"tokenize {split.name}", len(split)) as stage:
        text = split.path.read_text(encoding="utf-8")
        # split on newlines only (not splitlines: a U+2028 inside a JSON string is text)
        lines = [line for line in text.split("\n") if line.strip()]
        procs = workers(len(lines), recipe.data.num_proc)
        dataset = Dataset.from_dict({"example": lines}).map(
            _encode_batch,
            batched=True,
            batch_size=256,
            num_proc=procs if procs > 1 else None,
            remove_columns=["example"],
            fn_kwargs={
                "template": template,
                "tokenizer": tokenizer,
                "completion_only_loss": recipe.data.completion_only_loss,
                "reasoning": Reasoning.of(recipe),
            },
            new_fingerprint=key,
            desc=f"tokenizing {split.name}",
        )
        stage.update(len(lines), note=f"{procs} worker{'s' if procs != 1 else ''}")
        # each process builds beside the target under its own name (the ranks of a launch
        # may all get here at once), then renames it into place; the first one wins
        building = root / f".{split.name}-{key}.partial-{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        dataset.save_to_disk(str(building))
        (building / "inputs.json").write_text(json.dumps(inputs, indent=2) + "\n")
        try:
            os.replace(building, target)
        except OSError:  # another process's build is there: same key, same content
            if not (target / "inputs.json").is_file():
                raise
            shutil.rmtree(building, ignore_errors=True)
        _prune(root, split.name, keep=target)
    return Dataset.load_from_disk(str(target))


def _prune(root: Path, split: str, *, keep: Path) -> None:
    """Remove all but the newest `KEPT` builds of `split`."""
    builds = sorted(
        (p for p in root.glob(f"{split}-*") if p.is_dir() and p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in builds[KEPT - 1 :]:
        log.info("removing the older tokenized build %s", old)
        shutil.rmtree(old, ignore_errors=True)
