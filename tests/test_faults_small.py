"""The small things of issue 21 (case 17): compare rows stay unambiguous, a report is rebuilt
without matplotlib, saved models get the umask's mode, the bundled recipes' headers say what
the estimate prices, a switched component keeps the options it also takes, the quickstart's
duration is said one way, and transformers' bars drive sftkit's stages. ("completed in ..."
over a resumed run is checked in test_faults.py's SIGINT case, the merged export's mode in
test_faults_signals.py.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sftkit.cli import run_cli
from sftkit.recipe.load import load_recipe_text

ROOT = Path(__file__).resolve().parent.parent


def fake_run(directory: Path, **data_options: object) -> Path:
    """A run directory as far as `compare` and `report` read one."""
    recipe = yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text())
    recipe["data"]["format"]["options"].update(data_options)
    directory.mkdir(parents=True)
    (directory / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (directory / "run.json").write_text(json.dumps({"status": "completed", "steps": 2}))
    (directory / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"step": s, "loss": 2.0 / s, "learning_rate": 1e-3}) + "\n" for s in (1, 2)
        )
    )
    return directory


def test_compare_never_cuts_a_recipe_key(tmp_path, capsys, monkeypatch):
    long = "/a/long/path/to/a/local/dataset/directory/holding/the/training/split/files"
    a = fake_run(tmp_path / "a")
    b = fake_run(tmp_path / "b", train_size=3001, test_size=201, dev_size=101, name_hint=long)
    recipe = yaml.safe_load((b / "recipe.yaml").read_text())
    del recipe["data"]["format"]["options"]["name_hint"]
    recipe["model"]["name_or_path"] = long
    (b / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.setenv("COLUMNS", "80")
    assert run_cli(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    for key in ("train_size", "test_size", "dev_size"):
        assert f"data.format.options.{key} " in out  # whole, so each row says which
    assert "…" not in out and "..." not in out


HIDE_MATPLOTLIB = """
import importlib.abc, sys
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"matplotlib", "torch", "transformers"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NotInstalled())
from sftkit.cli import run_cli
sys.exit(run_cli(sys.argv[1:]))
"""


def test_report_without_matplotlib_keeps_the_plots_and_says_so(tmp_path):
    run = fake_run(tmp_path / "run")
    (run / "loss.png").write_bytes(b"\x89PNG drawn by the run")
    result = subprocess.run(
        [sys.executable, "-c", HIDE_MATPLOTLIB, "report", str(run)],
        env={**os.environ, "PYTHONPATH": str(ROOT), "SFTKIT_DISABLE_PLUGIN_AUTOLOAD": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "matplotlib is not installed, so the plots were not redrawn" in result.stderr
    assert "loss.png" in (run / "report.md").read_text()
    assert (run / "loss.png").read_bytes() == b"\x89PNG drawn by the run"


def test_published_checkpoints_get_the_umasks_mode(tmp_path):
    from sftkit.training.checkpoints import publish

    partial = tmp_path / ".partial" / "final"
    partial.mkdir(parents=True)
    weights = partial / "model.safetensors"
    weights.write_bytes(b"weights")
    weights.chmod(0o600)  # as safetensors writes it
    previous = os.umask(0o027)
    try:
        publish(partial, tmp_path / "final", kind="final", step=1)
    finally:
        os.umask(previous)
    assert (tmp_path / "final" / "model.safetensors").stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("name", ["r1_gsm8k_qlora", "r1_gsm8k_lora8bit"])
def test_recipe_headers_say_the_adapter_dtype_the_estimate_prices(name, registry):
    from sftkit.memory import estimate

    path = ROOT / "recipes" / f"{name}.yaml"
    text = path.read_text()
    header = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    said = re.search(r"LoRA adapters \(.*?\) train in (\w+)", header)
    assert said, header
    result = estimate(load_recipe_text(text, registry=registry, source=str(path)))
    term = next(t for t in result.to_dict()["terms"] if t["name"].startswith("LoRA adapters"))
    assert f", {said.group(1)} (" in term["name"]


LORA = """
model: {name_or_path: "builtin:tiny-llama"}
strategy: {name: qlora-nf4, options: {rank: 4, alpha: 8, dropout: 0.0, quant_type: fp4}}
optimizer: {name: adamw}
data: {format: {name: synthetic-arithmetic}}
"""


def test_switching_strategy_keeps_the_options_the_new_one_takes(registry):
    resolved = load_recipe_text(LORA, ["strategy.name=lora"], registry=registry)
    options = resolved.strategy.options
    assert (options.rank, options.alpha, options.dropout) == (4, 8, 0.0)
    (note,) = resolved.notes
    assert "does not take (quant_type), kept rank, alpha, dropout" in note


def test_the_quickstart_duration_is_said_one_way():
    said = "about 1.5 minutes"
    for path in ("README.md", "docs/quickstart.md", "recipes/quickstart.yaml"):
        text = (ROOT / path).read_text()
        assert said in text, path
        assert "a few minutes" not in text, path


def test_transformers_bars_advance_sftkits_stages(tmp_path):
    transformers = pytest.importorskip("transformers")
    from sftkit import progress
    from sftkit.quiet import quiet_libraries

    advanced: dict[str, tuple[int | None, int]] = {}

    class Recording(progress.Display):
        def open(self, name, total=None, **kwargs):  # type: ignore[override]
            stage = super().open(name, total, **kwargs)
            advance = stage.advance

            def counted(steps: int = 1) -> None:
                done = advanced.get(name, (total, 0))[1]
                advanced[name] = (total, done + steps)
                advance(steps)

            stage.advance = counted  # type: ignore[method-assign]
            return stage

    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1,
    )  # fmt: skip
    with quiet_libraries(), progress.use(Recording()):  # as the CLI does around a command
        transformers.LlamaForCausalLM(config).save_pretrained(tmp_path, max_shard_size="20KB")
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    for stage in ("write shards", "load weights"):
        total, done = advanced[stage]
        assert total and done == total > 1, (stage, advanced)
