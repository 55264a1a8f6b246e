"""Preparing a recipe's data: read the format's source, split off dev, check for test/train
leaks, write train/dev/test JSONL and a manifest; and loading those splits back.

The prepared directory is ``data.prepared_dir`` or ``<output_dir>/data``. Its manifest holds a
fingerprint of the format and options, so a run never silently trains on data prepared with
other options, and the sha256 of every prepared file and local source, checked again before
the preparation is reused: a source changed since, or a prepared file edited, is an error
rather than stale data. The manifest is written last (and removed first when data is
prepared again), so a preparation cut short is never taken for a finished one.

Preparing never writes into the directory a source file lives in (nor over a source).
Duplicate questions in train, and dev questions that are also in train, are counted and
warned about; so are test questions found in train/dev.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sftkit import atomic, progress
from sftkit._version import __version__
from sftkit.data.example import Example
from sftkit.data.readers import ReadLimits, read_limits, sha256_file
from sftkit.errors import DataError
from sftkit.runpaths import RunPaths
from sftkit.specs import load_factory

if TYPE_CHECKING:
    from sftkit.recipe.load import ResolvedRecipe

log = logging.getLogger("sftkit.data")

Split = Literal["train", "dev", "test"]
SPLITS: tuple[Split, ...] = ("train", "dev", "test")
MANIFEST = "manifest.json"
SHOWN_SKIPPED = 20
# Options that change how rows are read but not which rows a clean source yields.
NOT_FINGERPRINTED = frozenset({"skip_bad_rows"})
# Options added to built-in formats after data had been prepared with them: left out of the
# fingerprint while at these values, so an earlier preparation still matches.
ADDED_OPTIONS: dict[str, dict[str, Any]] = {
    "gsm8k": {
        "revision": None,
        "train_split": "train",
        "test_split": "test",
        "train_file": None,
        "test_file": None,
    },
    "chat": {"tools_field": "tools"},
    "prompt-completion": {
        "source": None,
        "config": None,
        "revision": None,
        "train_split": "train",
        "test_split": "test",
    },
}


@dataclass
class PreparedData:
    directory: Path
    manifest: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    reused: bool = False

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.manifest["counts"])

    def split_path(self, split: Split) -> Path:
        return split_path(self.directory, split)


def split_path(directory: Path, split: Split) -> Path:
    """Where a prepared split lives: ``<prepared dir>/<split>.jsonl``."""
    return directory / f"{split}.jsonl"


def prepared_dir(resolved: ResolvedRecipe) -> Path:
    data = resolved.recipe.data
    return (
        Path(data.prepared_dir)
        if data.prepared_dir
        else RunPaths(Path(resolved.recipe.output_dir)).data
    )


def _prepared_dir_key(resolved: ResolvedRecipe) -> str:
    return "data.prepared_dir" if resolved.recipe.data.prepared_dir else "the run's data directory"


def _fingerprinted(name: str, options: Any) -> dict[str, Any]:
    dumped = options.model_dump(mode="json")
    added = ADDED_OPTIONS.get(name, {})
    return {
        k: v
        for k, v in dumped.items()
        if k not in NOT_FINGERPRINTED and not (k in added and added[k] == v)
    }


def _shadowing(resolved: ResolvedRecipe, component: Any) -> dict[str, str]:
    """A plugin's format that took a built-in's name is told apart from the built-in (whose
    fingerprint stays what it always was)."""
    shadowing = resolved.registry.formats.shadowed().get(component.spec.name)
    if shadowing and shadowing[0].plugin == component.plugin:
        return {"plugin": component.plugin}
    return {}


def fingerprint(resolved: ResolvedRecipe) -> str:
    mixture = resolved.recipe.data.mixture
    if mixture is not None:
        section = mixture.model_dump(mode="json", exclude={"skip_bad_rows"})
        for source, component in zip(section["datasets"], resolved.mixture, strict=True):
            source["format"]["options"] = _fingerprinted(component.spec.name, component.options)
            source["format"].update(_shadowing(resolved, component))
        payload: dict[str, Any] = {"format": "mixture", "mixture": section}
    else:
        name = resolved.data_format.spec.name
        payload = {"format": name, "options": _fingerprinted(name, resolved.data_format.options)}
        payload.update(_shadowing(resolved, resolved.data_format))
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def prepare_data(
    resolved: ResolvedRecipe,
    *,
    directory: Path | None = None,
    force: bool = False,
    skip_bad_rows: bool | None = None,
) -> PreparedData:
    """Prepare train/dev/test for `resolved` into `directory` (default: `prepared_dir`).

    Reuses an existing preparation with the same fingerprint unless `force`; refuses to
    replace one made with other options unless `force`.
    """
    named = "--output" if directory else _prepared_dir_key(resolved)
    directory = directory or prepared_dir(resolved)
    if os.path.lexists(directory) and not directory.is_dir():
        raise DataError(
            f"{named} {directory} is a file, not a directory: prepared data is a directory "
            "that sftkit writes train/dev/test JSONL and manifest.json into.",
            hint=f"Point {named} at a directory (a new one is created); the data to read "
            "goes in data.format.options.source.",
        )
    expected = fingerprint(resolved)
    existing = read_manifest(directory)
    if existing is not None and not force:
        if existing.get("fingerprint") == expected:
            return PreparedData(directory, existing, verify_manifest(directory, existing), True)
        raise DataError(
            f"{directory} holds data prepared with other format options "
            f"(fingerprint {existing.get('fingerprint')}, this recipe's is {expected}).",
            hint="Re-prepare it with `sftkit prepare-data RECIPE --force`, or set "
            "data.prepared_dir to another directory.",
        )
    with progress.current().stage("prepare data"):
        return _prepare(resolved, directory, expected, skip_bad_rows)


def _prepare(
    resolved: ResolvedRecipe, directory: Path, expected: str, skip_bad_rows: bool | None
) -> PreparedData:
    mixture = resolved.recipe.data.mixture
    # dev_size, split_seed, skip_bad_rows: the format's options, or the mixture's
    options: Any = mixture if mixture is not None else resolved.data_format.options
    skip = options.skip_bad_rows if skip_bad_rows is None else skip_bad_rows
    mixed: list[dict[str, Any]] = []
    data = resolved.recipe.data
    with read_limits(ReadLimits(data.max_row_bytes, data.max_file_bytes)):
        if mixture is not None:
            from sftkit.data.mixture import read_mixture

            raw, mixed = read_mixture(resolved, skip_bad_rows=skip)
        else:
            fmt = load_factory(resolved.data_format.spec.factory)(options)
            raw = fmt.read(skip_bad_rows=skip)
    check_not_a_source(directory, raw.report.sources)
    warnings: list[str] = []
    train, dev = split_dev(raw.train, dev_size=options.dev_size, seed=options.split_seed)
    duplicates, dev_in_train = count_duplicates(train, dev)
    if duplicates:
        warnings.append(
            f"{duplicates} train question{'s are' if duplicates != 1 else ' is'} a repeat of an "
            "earlier one: repeated rows weigh more in training."
        )
    if dev_in_train:
        warnings.append(
            f"{dev_in_train} of {len(dev)} dev questions also appear in train: dev scores will "
            "overstate generalisation."
        )
    test = raw.test or []
    if not test:
        warnings.append("the source has no test split: evaluators on 'test' will have no rows.")
    leaks = find_leaks(test, train + dev)
    if leaks:
        sample = ", ".join(f"{t} = {s}" for t, s in leaks[:3])
        warnings.append(
            f"{len(leaks)} test question{'s' if len(leaks) != 1 else ''} also appear"
            f"{'s' if len(leaks) == 1 else ''} in train/dev (e.g. {sample}): test scores "
            "will overstate generalisation."
        )
    if raw.report.skipped:
        warnings.append(
            f"skipped {len(raw.report.skipped)} malformed row(s); first: {raw.report.skipped[0]}"
        )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)  # until the new one is whole
    files: dict[str, Any] = {}
    splits: tuple[tuple[Split, list[Example]], ...] = (
        ("train", train),
        ("dev", dev),
        ("test", test),
    )
    for name, rows in splits:
        path = split_path(directory, name)
        _write_jsonl(path, rows)
        files[path.name] = {"rows": len(rows), "sha256": sha256_file(path)}
    manifest = {
        "format": "mixture" if mixture is not None else resolved.data_format.spec.name,
        "options": options.model_dump(mode="json"),
        **({"mixture": mixed} if mixed else {}),
        "fingerprint": expected,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sftkit_version": __version__,
        "sources": [vars(s) for s in raw.report.sources],
        "counts": {"train": len(train), "dev": len(dev), "test": len(test)},
        "split": {"dev_size": len(dev), "split_seed": options.split_seed},
        "skipped_rows": len(raw.report.skipped),
        "skipped": raw.report.skipped[:SHOWN_SKIPPED],
        "duplicates_in_train": duplicates,
        "dev_in_train": dev_in_train,
        "test_in_train": len(leaks),
        "test_in_train_examples": [list(pair) for pair in leaks[:SHOWN_SKIPPED]],
        "files": files,
        "warnings": warnings,
    }
    _write_json(directory / MANIFEST, manifest)
    for warning in warnings:
        log.info(warning)  # to the log file; the caller shows PreparedData.warnings
    return PreparedData(directory, manifest, warnings)


def split_dev(
    train: list[Example], *, dev_size: int, seed: int
) -> tuple[list[Example], list[Example]]:
    """A seeded, reproducible dev split: `dev_size` rows drawn from train, the rest in order."""
    if dev_size > len(train) - 1 and dev_size > 0:
        raise DataError(
            f"dev_size={dev_size} leaves no training rows: the source has {len(train)}.",
            hint="Lower data.format.options.dev_size.",
        )
    picked = set(random.Random(seed).sample(range(len(train)), dev_size))
    dev = [ex for i, ex in enumerate(train) if i in picked]
    rest = [ex for i, ex in enumerate(train) if i not in picked]
    return rest, dev


def find_leaks(test: list[Example], train: list[Example]) -> list[tuple[str, str]]:
    """(test id, train id) for every test question whose normalised text is in train."""
    seen = {ex.prompt_key(): ex.id for ex in train}
    return [(ex.id, seen[ex.prompt_key()]) for ex in test if ex.prompt_key() in seen]


def count_duplicates(train: list[Example], dev: list[Example]) -> tuple[int, int]:
    """(train rows repeating an earlier train question, dev rows whose question is in train)."""
    seen: set[str] = set()
    repeats = 0
    for example in train:
        key = example.prompt_key()
        repeats += key in seen
        seen.add(key)
    return repeats, sum(example.prompt_key() in seen for example in dev)


def _local_sources(sources: list[Any]) -> list[Path]:
    """The source files of a read that are local files (not the hub, not generated)."""
    out = []
    for source in sources:
        name = source["source"] if isinstance(source, dict) else source.source
        if ":" in name.split("/", 1)[0] and not Path(name).exists():
            continue  # "hub:org/name[train]", "generated:..."
        out.append(Path(name))
    return out


def check_not_a_source(directory: Path, sources: list[Any]) -> None:
    """`DataError` if preparing into `directory` would write where a source file lives."""
    target = directory.resolve()
    outputs = [split_path(directory, s) for s in SPLITS] + [directory / MANIFEST]
    for source in _local_sources(sources):
        same_place = source.resolve().parent == target
        clobbers = any(o.exists() and source.exists() and o.samefile(source) for o in outputs)
        if same_place or clobbers:
            raise DataError(
                f"the prepared data would be written into {directory}, where the source "
                f"{source} lives: preparing would write over or beside the raw data.",
                hint="Set data.prepared_dir to another directory (the default is "
                "<output_dir>/data).",
            )


def verify_manifest(directory: Path, manifest: dict[str, Any]) -> list[str]:
    """Check a preparation before it is reused: each prepared file and each local source
    still has the sha256 the manifest recorded. `DataError` if not; notes otherwise."""
    notes: list[str] = []
    for name, entry in manifest.get("files", {}).items():
        path = directory / name
        if not path.is_file() or sha256_file(path) != entry.get("sha256"):
            state = "is missing" if not path.is_file() else "has changed since it was prepared"
            raise DataError(
                f"{path} {state} (its manifest records another sha256): the prepared data "
                "is not what the manifest describes.",
                hint="Prepare it again with `sftkit prepare-data RECIPE --force` (a resumed "
                "run needs the data it started with).",
            )
    for source in manifest.get("sources", []):
        digest = source.get("sha256")
        path = Path(str(source.get("source", "")))
        if not digest or not _local_sources([source]):
            continue
        if not path.exists():
            notes.append(f"the source {path} is gone; using the data prepared from it.")
        elif sha256_file(path) != digest:
            raise DataError(
                f"the source {path} has changed since {directory} was prepared from it "
                f"(sha256 {digest[:12]}... then): the prepared data is stale.",
                hint="Prepare it again with `sftkit prepare-data RECIPE --force`, or point "
                "data.prepared_dir elsewhere (a resumed run needs the data it started with).",
            )
    return notes


def read_manifest(directory: Path) -> dict[str, Any] | None:
    path = directory / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}.", hint="Re-prepare with --force.") from exc
    return manifest


def ensure_prepared(resolved: ResolvedRecipe) -> PreparedData:
    """The recipe's prepared data, preparing it first if the directory has none."""
    return prepare_data(resolved)


def load_split(resolved: ResolvedRecipe, split: Split) -> list[Example]:
    """The examples of one split, preparing the data first if needed."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}.")
    prepared = ensure_prepared(resolved)
    return read_examples(prepared.split_path(split))


def peek_split(resolved: ResolvedRecipe, split: Split) -> tuple[list[Example], list[str]]:
    """A split and the preparation's warnings, writing nothing: from an up-to-date
    preparation if there is one, else prepared in a temporary directory (`sftkit preview`)."""
    directory = prepared_dir(resolved)
    existing = read_manifest(directory)
    if existing is not None and existing.get("fingerprint") == fingerprint(resolved):
        return read_examples(split_path(directory, split)), []
    with tempfile.TemporaryDirectory(prefix="sftkit-preview-") as tmp:
        prepared = prepare_data(resolved, directory=Path(tmp))
        return read_examples(prepared.split_path(split)), prepared.warnings


def read_examples(path: Path) -> list[Example]:
    examples = []
    try:
        with path.open(encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        examples.append(Example.from_dict(json.loads(line)))
                    except (json.JSONDecodeError, KeyError, TypeError) as exc:
                        raise DataError(
                            f"{path}:{line_no}: not a prepared example ({exc}).",
                            hint="Re-prepare with `sftkit prepare-data RECIPE --force`.",
                        ) from exc
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}.") from exc
    return examples


def _write_jsonl(path: Path, rows: list[Example]) -> None:
    with atomic.writing(path) as handle:
        for row in rows:
            handle.write(json.dumps(row.to_dict(), ensure_ascii=False) + "\n")


def _write_json(path: Path, data: Any) -> None:
    atomic.write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
