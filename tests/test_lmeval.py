"""The lm-eval evaluator: lm-evaluation-harness in-process on the evaluated model, its results
stored like sftkit's evaluators, local offline tasks, and a clean exit 2 without the extra."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from sftkit.evaluation.lmeval import harness_metrics, harness_predictions, metric_name

REPO = Path(__file__).resolve().parent.parent
GSM8K = Path(os.environ.get("SFTKIT_GSM8K_DIR", REPO.parent / "shared" / "data" / "gsm8k"))


def test_harness_results_become_sftkit_metrics_with_stderr() -> None:
    results = {
        "arith": {
            "alias": "arith",
            "exact_match,strict-match": 0.5,
            "exact_match_stderr,strict-match": 0.1,
            "exact_match,flexible-extract": 0.75,
            "exact_match_stderr,flexible-extract": "N/A",
        }
    }
    metrics, primary, stderr = harness_metrics(results, ["arith"])
    assert primary == "strict_match" and stderr == 0.1
    assert metrics == {
        "strict_match": 0.5,
        "strict_match_stderr": 0.1,
        "flexible_extract": 0.75,
    }
    two, primary, _ = harness_metrics({**results, "b": {"acc,none": 0.2}}, ["arith", "b"])
    assert primary == "arith/strict_match" and two["b/acc"] == 0.2
    assert metric_name("acc_norm", "none") == "acc_norm"


def test_harness_samples_become_one_prediction_per_problem() -> None:
    sample = {
        "doc_id": 0,
        "target": "7",
        "arguments": [["Q: 3 + 4?\nA:", {"until": ["Q:"]}]],
        "resps": [["3 + 4 = 7\n#### 7"]],
    }
    samples = {
        "arith": [
            {
                **sample,
                "filter": "strict-match",
                "filtered_resps": ["7"],
                "metrics": ["exact_match"],
                "exact_match": 1.0,
            },
            {
                **sample,
                "filter": "flexible-extract",
                "filtered_resps": ["7"],
                "metrics": ["exact_match"],
                "exact_match": 1.0,
            },
        ]
    }
    (row,) = harness_predictions(samples, ["arith"])
    assert row["output"] == "3 + 4 = 7\n#### 7" and row["prompt"] == "Q: 3 + 4?\nA:"
    assert row["filtered"] == {"strict-match": "7", "flexible-extract": "7"}
    assert row["scores"] == {"strict_match": 1.0, "flexible_extract": 1.0}


def test_without_lm_eval_the_evaluator_exits_2_before_loading_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sftkit.cli import run_cli
    from sftkit.evaluation import lmeval

    monkeypatch.setattr(lmeval, "missing", lambda modules: list(modules))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path / "run", tasks="[arith]", include="[]"))
    assert run_cli(["eval", str(recipe), "--output-dir", str(tmp_path / "out")]) == 2
    shown = capsys.readouterr()
    assert "the lm-eval evaluator needs the Python package 'lm_eval'" in shown.out + shown.err
    assert "sftkit[lm-eval]" in shown.out + shown.err


def test_without_lm_eval_a_run_exits_2_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sftkit.cli import run_cli
    from sftkit.evaluation import lmeval

    monkeypatch.setattr(lmeval, "missing", lambda modules: list(modules))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(out=tmp_path / "run", tasks="[arith]", include="[]"))
    assert run_cli(["run", str(recipe), "training.max_steps=1"]) == 2
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


RECIPE = """
model: {{name_or_path: "builtin:tiny-llama", dtype: float32, random_init: true}}
strategy: {{name: full-sft}}
optimizer: {{name: adamw}}
data:
  format: {{name: synthetic-arithmetic, options: {{train_size: 16, test_size: 6, dev_size: 3}}}}
  template: {{name: tutor, options: {{instruction: ""}}}}
hardware: {{gpu: cpu}}
evaluation:
  evaluators:
    - {{name: lm-eval, options: {{tasks: {tasks}, include_path: {include}, batch_size: 1}}}}
output_dir: {out}
"""


@pytest.fixture(scope="module")
def tiny() -> Any:
    """The quickstart's model (random weights) with its data, template and tokenizer."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("lm_eval")
    import tempfile

    from sftkit.evaluation.runner import build_template, load_examples
    from sftkit.modeling import load_base
    from sftkit.recipe.load import load_recipe_text
    from sftkit.testing import fresh_registry

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        resolved = load_recipe_text(
            RECIPE.format(out=Path(tmp) / "run", tasks="[x]", include="[]"),
            registry=fresh_registry(),
        )
        model, tokenizer = load_base(resolved)
        yield (
            resolved,
            model,
            tokenizer,
            build_template(resolved),
            load_examples(resolved, "test", None),
        )
    torch.set_num_threads(threads)


def lm_eval_component(resolved: Any, **options: Any) -> Any:
    from sftkit.recipe.load import Component

    entry = resolved.registry.evaluators.entry("lm-eval")
    return Component(entry.spec, entry.spec.options_model(**options), entry.plugin)


def test_lm_eval_on_a_local_task_scores_the_same_outputs_as_gsm8k(
    tiny: Any, tmp_path: Path
) -> None:
    """The quickstart's test problems as a local lm-eval task, prompts rendered with the
    recipe's template: the harness generates the same greedy outputs on the same in-memory
    model as sftkit's gsm8k evaluator, and its strict-match equals gsm8k's, per problem."""
    from sftkit.evaluation.base import read_result, write_result
    from sftkit.evaluation.lmeval import split_rows, write_gsm8k_task
    from sftkit.evaluation.runner import _with_options, score

    resolved, model, tokenizer, template, examples = tiny
    rows = split_rows(examples, template, tokenizer)
    write_gsm8k_task(tmp_path / "tasks", "qs_arith", rows, max_gen_toks=12)
    component = lm_eval_component(
        resolved, tasks=["qs_arith"], include_path=[str(tmp_path / "tasks")], batch_size=1
    )
    harness = score(resolved, model, tokenizer, component)
    gsm8k_component = resolved.registry.evaluators.entry("gsm8k")
    options = gsm8k_component.spec.options_model(
        max_new_tokens=12, batch_size=1, stop_at_answer=False
    )
    from sftkit.recipe.load import Component

    ours = score(
        resolved,
        model,
        tokenizer,
        _with_options(Component(gsm8k_component.spec, options, "builtin"), {}),
    )
    assert harness.n == ours.n == len(examples)
    assert harness.metrics["strict_match"] == ours.metrics["strict_match"]
    assert harness.metrics["flexible_extract"] == ours.metrics["flexible_extract"]
    for theirs, mine in zip(harness.predictions, ours.predictions, strict=True):
        assert theirs["output"] == mine["output"]  # the same greedy text
        assert theirs["filtered"]["strict-match"] == mine["strict_match"]
    assert harness.primary == "strict_match" and "strict_match_stderr" in harness.metrics
    assert 0.0 <= harness.metrics["ci_low"] <= harness.metrics["ci_high"] <= 1.0
    out = write_result(harness, tmp_path / "after-lm-eval-qs_arith", stage="after", model="x")
    stored = read_result(out)
    assert stored is not None and stored.split == "qs_arith" and stored.n == len(examples)
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert {"prompt", "target", "output", "filtered", "scores"} <= set(json.loads(lines[0]))


@pytest.mark.skipif(not (GSM8K / "test.jsonl").exists(), reason="no local GSM8K copy")
def test_lm_eval_on_a_local_copy_of_gsm8k(tiny: Any, tmp_path: Path) -> None:
    """GSM8K's own test file as a local copy of the harness's gsm8k task (offline)."""
    from sftkit.evaluation.lmeval import gsm8k_file_rows, write_gsm8k_task
    from sftkit.evaluation.runner import score

    resolved, model, tokenizer, _, _ = tiny
    rows = gsm8k_file_rows(GSM8K / "test.jsonl")
    assert len(rows) == 1319
    write_gsm8k_task(
        tmp_path, "gsm8k_local", rows, max_gen_toks=4, doc_to_text="Question: {{question}}\nAnswer:"
    )
    component = lm_eval_component(
        resolved, tasks=["gsm8k_local"], include_path=[str(tmp_path)], limit=3, batch_size=3
    )
    result = score(resolved, model, tokenizer, component)
    assert result.n == 3 and result.split == "gsm8k_local"
    assert result.predictions[0]["prompt"].startswith("Question: Janet")
    assert result.predictions[0]["target"].endswith("#### 18")
    assert set(result.metrics) >= {"strict_match", "flexible_extract"}


def test_an_unknown_task_is_a_clear_error(tiny: Any, tmp_path: Path) -> None:
    from sftkit.errors import DataError
    from sftkit.evaluation.runner import score

    resolved, model, tokenizer, _, _ = tiny
    component = lm_eval_component(resolved, tasks=["no_such_task"], include_path=[str(tmp_path)])
    with pytest.raises(DataError, match="unknown task"):
        score(resolved, model, tokenizer, component)
