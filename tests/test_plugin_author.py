"""What a plugin author needed this week that the API did not allow (issue 20, item 7)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sftkit import MemoryTerm


@pytest.mark.slow
def test_quick_run_twice_in_one_test(quick_run):
    pytest.importorskip("trl")
    first = quick_run()
    second = quick_run("training.max_steps=2")
    assert first != second and first.parent == second.parent
    for run, steps in ((first, 3), (second, 2)):
        record = json.loads((run / "run.json").read_text())
        assert record["status"] == "completed"
        assert (run / "final").is_dir()
        assert (
            max(e.get("step", 0) for e in map(json.loads, (run / "metrics.jsonl").open())) == steps
        )


def test_hooks_marked_every_process_run_on_the_other_processes():
    from sftkit import every_process, hookimpl
    from sftkit.testing import fresh_manager
    from sftkit.training.callbacks import lifecycle_hooks

    seen: list[str] = []

    class Everywhere:
        @every_process
        @hookimpl
        def on_train_start(self, run):
            seen.append("everywhere")

    class MainOnly:
        @hookimpl
        def on_train_start(self, run):
            seen.append("main only")

    manager = fresh_manager()
    manager.register(Everywhere(), "everywhere")
    manager.register(MainOnly(), "main-only")
    lifecycle_hooks(manager, main=True).on_train_start(run=None)
    assert sorted(seen) == ["everywhere", "main only"]
    seen.clear()
    lifecycle_hooks(manager, main=False).on_train_start(run=None)
    assert seen == ["everywhere"]
    manager.unregister("everywhere")
    assert lifecycle_hooks(manager, main=False) is None  # nothing to call elsewhere


def test_relative_paths_in_a_recipe_resolve_against_the_working_directory(tmp_path, monkeypatch):
    """docs/recipes.md says so (and writing-a-plugin.md for a format): a recipe in recipes/ naming `rows.jsonl` reads the file in
    the directory sftkit runs in, and writes `output_dir` there, not beside the recipe."""
    from sftkit.testing import invoke_cli, quickstart_recipe

    work = tmp_path / "work"
    (work / "recipes").mkdir(parents=True)
    (work / "recipes" / "r.yaml").write_text(quickstart_recipe().read_text())
    rows = [{"prompt": f"{i} + 1 =", "completion": f" {i + 1}"} for i in range(40)]
    (work / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(work)
    result = invoke_cli(
        "prepare-data",
        "recipes/r.yaml",
        "data.format.name=prompt-completion",
        "~data.format.options",
        "data.format.options.train_file=rows.jsonl",
        "data.format.options.dev_size=4",
        "output_dir=runs/r",
    )
    assert result.exit_code == 0, result.stderr
    assert (work / "runs" / "r" / "data" / "train.jsonl").is_file()
    assert not (work / "recipes" / "runs").exists()


HOOK_DOCS = Path(__file__).resolve().parent.parent / "docs" / "plugin-hooks.md"


def _said(text: str) -> str:
    return " ".join(HOOK_DOCS.read_text(encoding="utf-8").split()).count(text) and text


def test_the_docs_name_every_memory_category_and_pool():
    from typing import get_args

    from sftkit.memory.terms import Category, Pool

    words = ", ".join(f"`{c}`" for c in get_args(Category)).replace(
        "`other`", "`other` (the default)"
    )
    assert _said(f"`category` is one of {words}")
    assert _said("one of " + ", ".join(f"`{p}`" for p in get_args(Pool))[: len("`device`")])
    for pool in get_args(Pool):
        assert _said(f"`{pool}` (")
    with pytest.raises(ValueError, match="category 'logit'"):
        MemoryTerm("x", 1, ("forward_backward",), category="logit")  # type: ignore[arg-type]


def test_the_docs_name_the_builtin_strategy_tags():
    from sftkit.testing import fresh_registry

    tags = set().union(*(entry.spec.tags for entry in fresh_registry().strategies))
    text = " ".join(HOOK_DOCS.read_text(encoding="utf-8").split())
    said = text[text.index("The built-in strategies use") :][:200]
    assert tags == set(re.findall(r"`(\w+)`", said))


def test_ci_low_and_ci_high_give_an_evaluator_its_interval():
    from sftkit.evaluation.display import interval

    assert _said("metrics carry `ci_low` and `ci_high`")
    assert interval({"accuracy": 0.4, "ci_low": 0.321, "ci_high": 0.51}) == "[32.1, 51.0]"
    assert interval({"accuracy": 0.4}) == "-"


def test_composition_trains_module():
    from sftkit.testing import tiny_recipe

    full = tiny_recipe().strategy_parts
    lora = tiny_recipe("strategy.name=lora").strategy_parts
    assert full.trains_module("lm_head") and not lora.trains_module("lm_head")
    assert _said('`composition.trains_module("lm_head")`')
