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
