"""What a plugin author needed this week that the API did not allow (issue 20, item 7)."""

from __future__ import annotations

import json

import pytest


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
