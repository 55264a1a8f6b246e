"""The plugin docs' examples run as written.

Every ``python`` block of docs/writing-a-plugin.md is either a module of the imaginary
`acme_sftkit` package (first line ``# file: PATH``), written to disk here, registered with
the test kit and exercised, or an excerpt of the sftkit-lion plugin (``# from: PATH``),
which must appear verbatim in that file. plugin-hooks.md's snippets must compile and import
only public names.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

import sftkit
from sftkit.testing import FAST_OVERRIDES, invoke_cli, registered

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "writing-a-plugin.md"
HOOKS = ROOT / "docs" / "plugin-hooks.md"


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), re.M | re.S)


def _tagged(tag: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for block in _python_blocks(GUIDE):
        first, _, body = block.partition("\n")
        if first.startswith(f"# {tag}: "):
            out.setdefault(first.removeprefix(f"# {tag}: ").strip(), []).append(body)
    return out


def test_every_guide_block_is_a_module_or_a_verified_excerpt():
    blocks = _python_blocks(GUIDE)
    assert len(blocks) >= 12
    for block in blocks:
        assert block.startswith(("# file: ", "# from: ")), block[:80]
    kinds = {"qa_format", "terse_template", "contains_eval", "budget", "csv_log", "workspace"}
    kinds |= {"z_loss", "dft"}
    strategies_and_engines = {"dropout_strategy", "layer_decay", "ring_engine"}
    assert {Path(p).stem for p in _tagged("file")} >= kinds | strategies_and_engines


@pytest.mark.parametrize(
    ("path", "body"), [(p, b) for p, bodies in _tagged("from").items() for b in bodies]
)
def test_excerpt_is_copied_verbatim(path, body):
    assert body in (ROOT / path).read_text(encoding="utf-8"), f"docs excerpt drifted from {path}"


@pytest.mark.parametrize("doc", [GUIDE, HOOKS], ids=lambda p: p.name)
def test_snippets_compile_and_import_only_public_names(doc):
    for block in _python_blocks(doc):
        if not block.startswith("# from: "):  # excerpts may be partial; they are checked above
            ast.parse(block)  # a syntax error fails here
        for names in re.findall(r"^\s*from sftkit import (\([^)]*\)|.+)$", block, flags=re.M):
            imported = [n for n in re.split(r"[\s,()]+", names) if n]
            missing = [n for n in imported if n not in sftkit.__all__]
            assert not missing, f"{doc.name} imports non-public {missing}"


# --------------------------------------------------------------------------- acme_sftkit


@pytest.fixture(scope="module")
def acme(tmp_path_factory):
    """The guide's modules on disk and importable: a namespace of the imported modules."""
    root = tmp_path_factory.mktemp("acme")
    for path, bodies in _tagged("file").items():
        (target := root / path).parent.mkdir(parents=True, exist_ok=True)
        target.write_text("\n".join(bodies), encoding="utf-8")
    (root / "acme_sftkit" / "__init__.py").write_text("")
    sys.path.insert(0, str(root))
    import importlib

    names = [Path(p).stem for p in _tagged("file") if p.startswith("acme_sftkit/")]
    modules = {name: importlib.import_module(f"acme_sftkit.{name}") for name in names}
    yield types.SimpleNamespace(root=root, **modules)
    sys.path.remove(str(root))
    for name in [m for m in sys.modules if m == "acme_sftkit" or m.startswith("acme_sftkit.")]:
        del sys.modules[name]


def _qa_files(directory: Path) -> tuple[Path, Path]:
    rows = [
        {"q": f"What is {a} plus {a}?", "a": f"{2 * a}", "final": str(2 * a)} for a in range(40)
    ]
    train, test = directory / "train.jsonl", directory / "test.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:32]))
    test.write_text("".join(json.dumps(r) + "\n" for r in rows[32:]))
    return train, test


def test_the_guides_test_module_passes(acme):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(acme.root), str(ROOT)])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_acme.py"],
        cwd=acme.root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


def test_validate_recipe_problem_reads_as_documented(acme, tmp_path):
    train, _ = _qa_files(tmp_path)
    result = invoke_cli(
        "validate",
        "quickstart",
        "data.format.name=qa-jsonl",
        f"data.format.options={{train_file: {train}}}",
        plugins=[acme.qa_format],
    )
    assert result.exit_code == 2
    documented = re.search(
        r"^recipe\.yaml: (evaluation\.evaluators\.0: .*)$", GUIDE.read_text(), re.M
    )
    assert documented and documented.group(1) in result.stderr, result.stderr


def test_budget_and_workspace_reach_the_estimate(acme):
    with registered(acme.budget, acme.workspace) as registry:
        from sftkit import estimate, load_recipe

        result = estimate(load_recipe("quickstart", ["hardware.gpu=ACME-A48"], registry=registry))
    assert result.budget.name == "acme-a48" and result.budget.total_bytes == 48 * 2**30
    (term,) = [t for t in result.terms if t.name == "acme attention workspace"]
    assert term.bytes == 4 * 4096 * 128  # the tiny Llama's hidden size
    assert "load" not in term.phases


def test_the_strategy_is_priced_like_full_sft(acme):
    from sftkit import estimate, load_recipe

    with registered(acme.dropout_strategy) as registry:
        mine = estimate(
            load_recipe("quickstart", ["strategy.name=full-sft-dropout"], registry=registry)
        )
        full = estimate(load_recipe("quickstart", registry=registry))
    assert mine.phases == full.phases and mine.trainable_parameters == full.trainable_parameters


def test_the_engine_shards_the_optimizer_state_and_sets_its_buckets(acme, tmp_path):
    from sftkit import estimate, load_recipe
    from sftkit.distributed.trainer import trainer_arguments

    r1 = "recipes/r1_gsm8k_full.yaml"
    with registered(acme.ring_engine) as registry:
        one = estimate(load_recipe(r1, ["optimizer.name=adamw"], registry=registry))
        ring = load_recipe(
            r1,
            [
                "optimizer.name=adamw",
                "distributed.engine=ring",
                "distributed.options.bucket_mb=50",
                "hardware.num_gpus=4",
            ],
            registry=registry,
        )
        four = estimate(ring)

    def category(est, name):
        return sum(t.bytes for t in est.terms_in("optimizer_step") if t.category == name)

    assert category(four, "optimizer") == -(-category(one, "optimizer") // 4)
    assert category(four, "weights") == category(one, "weights")
    assert "Ring" in four.setting
    assert trainer_arguments(ring.recipe, tmp_path, use_cpu=True)["ddp_bucket_cap_mb"] == 50


def test_on_log_gets_step_and_elapsed_time(acme, tmp_path):
    from sftkit.testing import fresh_manager
    from sftkit.training.callbacks import HooksCallback

    manager = fresh_manager()
    assert manager.register(acme.csv_log.plugin, "acme-csv")
    from sftkit.training.trainer import RunClock

    view = types.SimpleNamespace(run_dir=tmp_path)
    clock = RunClock(started=time.perf_counter())
    callback = HooksCallback(
        types.SimpleNamespace(view=lambda: view, metrics={}, clock=clock), manager.hook
    )
    callback.on_train_begin(None, types.SimpleNamespace(global_step=0), None)
    callback.on_log(None, types.SimpleNamespace(global_step=7), None, logs={"loss": 1.5})
    callback.on_log(None, types.SimpleNamespace(global_step=7), None, logs={"eval_loss": 2.0})
    header, row = (tmp_path / "losses.csv").read_text().splitlines()
    step, elapsed, loss = row.split(",")
    assert header == "step,elapsed_s,loss" and step == "7" and loss == "1.5"
    assert 0 <= float(elapsed) < 60


def test_the_loss_head_and_objective_are_listed_validated_and_priced(acme):
    plugins = [acme.z_loss, acme.dft]
    heads = invoke_cli("list", "loss_heads", plugins=plugins)
    objectives = invoke_cli("list", "objectives", plugins=plugins)
    assert "z-loss" in heads.stdout and "chunked" in heads.stdout, heads.stderr
    assert "dft" in objectives.stdout and "sft" in objectives.stdout, objectives.stderr
    ok = invoke_cli(
        "validate", "quickstart", "training.loss=z-loss", "training.objective=dft",
        plugins=plugins,
    )  # fmt: skip
    assert ok.exit_code == 0, ok.stderr
    typo = invoke_cli("validate", "quickstart", "training.loss=z-los", plugins=plugins)
    assert typo.exit_code == 2 and "z-loss" in typo.stderr, typo.stderr
    assert "training.loss" in typo.stderr
    from sftkit import estimate, load_recipe
    from sftkit.memory import activations
    from sftkit.memory.estimator import shape_for
    from sftkit.memory.setup import setup_from_recipe

    with registered(*plugins) as registry:
        resolved = load_recipe("quickstart", ["training.loss=z-loss"], registry=registry)
        mine = estimate(resolved)
        full = estimate(load_recipe("quickstart", ["training.loss=full"], registry=registry))
        setup = setup_from_recipe(resolved, shape_for(resolved), on_gpu=False)
    assert "loss computed by z-loss." in mine.notes and "full fp32 logits" in full.notes[-1]
    b, s = setup.micro_batch_size, setup.seq_len  # 32 x 128 tokens, vocabulary 128
    assert activations.loss_saved_bytes(setup, b, s) == b * s * (4 * 128 + 20)


@pytest.mark.slow
def test_the_loss_head_and_objective_train(acme, tmp_path):
    run_dir = tmp_path / "run"
    result = invoke_cli(
        "run", "quickstart", *FAST_OVERRIDES, "training.loss=z-loss", "training.objective=dft",
        "--output-dir", str(run_dir), plugins=[acme.z_loss, acme.dft],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    import torch

    args = torch.load(run_dir / "checkpoints" / "checkpoint-3" / "training_args.bin",
                      weights_only=False)  # fmt: skip
    assert type(args).__name__ == "DftConfig" and args.loss_type == "dft"


@pytest.mark.slow
def test_format_template_strategy_and_logger_train_together(acme, tmp_path):
    train, test = _qa_files(tmp_path)
    run_dir = tmp_path / "run"
    result = invoke_cli(
        "run",
        "quickstart",
        *FAST_OVERRIDES,
        "strategy.name=full-sft-dropout",
        "data.format.name=qa-jsonl",
        f"data.format.options={{train_file: {train}, test_file: {test}, dev_size: 4}}",
        "data.template.name=terse",
        "~data.template.options",
        "--output-dir",
        str(run_dir),
        plugins=[acme.qa_format, acme.terse_template, acme.dropout_strategy, acme.csv_log.plugin],
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    rows = (run_dir / "losses.csv").read_text().splitlines()
    assert rows[0] == "step,elapsed_s,loss" and [r.split(",")[0] for r in rows[1:]] == [
        "1",
        "2",
        "3",
    ]
    config = json.loads((run_dir / "final" / "config.json").read_text())
    assert config["attention_dropout"] == pytest.approx(0.1)
    prepared = [
        json.loads(line) for line in (run_dir / "data" / "train.jsonl").read_text().splitlines()
    ]
    assert len(prepared) == 28 and prepared[0]["prompt"].startswith("What is")

    preview = invoke_cli(
        "preview",
        "quickstart",
        "data.format.name=qa-jsonl",
        f"data.format.options={{train_file: {train}, test_file: {test}, dev_size: 4}}",
        "data.template.name=terse",
        "~data.template.options",
        f"output_dir={run_dir}",
        "-n",
        "1",
        plugins=[acme.qa_format, acme.terse_template],
    )
    assert preview.exit_code == 0, preview.stderr
    assert "Q: What is" in preview.stdout


@pytest.mark.slow
def test_the_evaluator_scores_generations(acme, tmp_path):
    out = tmp_path / "eval"
    result = invoke_cli(
        "eval",
        "quickstart",
        *FAST_OVERRIDES,
        f"output_dir={tmp_path}",
        "-e",
        "contains-answer",
        "--limit",
        "3",
        "--output-dir",
        str(out),
        plugins=[acme.contains_eval],
    )
    assert result.exit_code == 0, result.stderr
    (metrics_file,) = out.rglob("metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert metrics["evaluator"] == "contains-answer" and metrics["n"] == 3
    assert 0.0 <= metrics["metrics"]["contains"] <= 1.0
    predictions = (metrics_file.parent / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 3 and "output" in json.loads(predictions[0])
