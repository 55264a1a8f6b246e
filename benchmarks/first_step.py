"""Time from `sftkit run` to the first training step, and the data stage's share of it.

    python -m benchmarks.first_step --model .bench/tiny-random --data ../shared/data/gsm8k \
        --work .bench/first-step [--baseline-src DIR] [--runs 2]

Each run is a fresh `sftkit run` process (imports included) on GSM8K train with the chat
template and the model directory's locally built tokenizer (`benchmarks.build_random_model
--tiny --data ...`), one step, no evaluation. All runs of one code share `data.prepared_dir`
and write to their own output directory, as a second run with another learning rate does:
run 1 prepares and tokenizes, run 2 finds whatever its code keeps. The clock stops when the
first step's loss is logged (the `on_log` hook); the child also times the run's data stage
(`sftkit.training.stages.data.prepare` less loading the tokenizer: reading, splitting, tokenizing;
`datasets` imported before the run, its import timed apart). `--baseline-src`
names a source tree of another sftkit (e.g. `git archive` of an earlier commit) timed the same
way first, and the ratios compare against it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

RECIPE = """
model: {{name_or_path: "{model}", dtype: float32, random_init: false}}
strategy: {{name: full-sft}}
optimizer: {{name: adamw}}
data:
  format: {{name: gsm8k, options: {{source: "{data}", dev_size: 200}}}}
  template: {{name: chat}}
  prepared_dir: "{prepared}"
training:
  micro_batch_size: 4
  max_steps: 1
  max_seq_length: 512
  logging_steps: 1
  save_steps: 1000
  precision: fp32
  gradient_checkpointing: false
hardware: {{gpu: cpu}}
output_dir: "{output}"
"""


def child(recipe: Path, out: Path) -> None:
    """Run `sftkit run recipe`; write the data stage's seconds and the clock at the first
    logged step to `out`, then exit at once. `datasets` is imported first (its import is
    timed apart): both codes import it in the data stage, and TRL needs it regardless, so the
    data stage's figure is the preparation itself."""
    started = time.time()
    import datasets  # noqa: F401

    import_datasets_s = time.time() - started
    import sftkit.modeling
    from sftkit import hookspecs
    from sftkit.cli import run_cli
    from sftkit.plugins import make_plugin_manager
    from sftkit.training.stages import data

    timings: dict[str, Any] = {"tokenizer_s": 0.0, "import_datasets_s": import_datasets_s}
    prepare = data.prepare
    load_tokenizer = sftkit.modeling.load_tokenizer

    def timed_tokenizer(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        try:
            return load_tokenizer(*args, **kwargs)
        finally:
            timings["tokenizer_s"] += time.time() - start

    def timed_prepare(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        try:
            return prepare(*args, **kwargs)
        finally:
            timings["data_stage_s"] = time.time() - start

    data.prepare = timed_prepare  # type: ignore[assignment]
    sftkit.modeling.load_tokenizer = timed_tokenizer  # the stage imports it when it runs

    class FirstStep:
        @hookspecs.hookimpl
        def on_log(self, run: Any, logs: dict[str, float]) -> None:
            if "loss" in logs:
                timings["first_step_at"] = time.time()
                timings["sftkit"] = str(Path(sftkit.modeling.__file__).parent.parent)
                out.write_text(json.dumps(timings))
                os._exit(0)

    manager = make_plugin_manager(autoload=False)
    manager.register(FirstStep(), "first-step")
    code = run_cli(["run", str(recipe)], manager=manager)
    raise SystemExit(f"the run ended (exit {code}) before a training step was logged")


def time_runs(
    src: Path, args: argparse.Namespace, label: str, work: Path
) -> list[dict[str, float]]:
    shutil.rmtree(work, ignore_errors=True)  # every repetition starts with nothing prepared
    prepared = work / "prepared"
    results = []
    for run in range(1, args.runs + 1):
        recipe = work / f"run{run}.yaml"
        recipe.parent.mkdir(parents=True, exist_ok=True)
        recipe.write_text(
            RECIPE.format(
                model=args.model.resolve(),
                data=args.data.resolve(),
                prepared=prepared.resolve(),
                output=(work / f"run{run}").resolve(),
            )
        )
        out = work / f"run{run}.json"
        out.unlink(missing_ok=True)
        env = {**os.environ, "PYTHONPATH": str(src), "SFTKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
        start = time.time()
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.first_step", "--child", str(recipe), str(out)],
            env={**env, "PYTHONPATH": f"{src}{os.pathsep}{REPO}"},
            cwd=work,  # not REPO: `python -m` puts the working directory first on sys.path
            capture_output=True,
            text=True,
        )
        if not out.is_file():
            raise SystemExit(
                f"{label} run {run} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        timing = json.loads(out.read_text())
        result = {
            "run": run,
            "to_first_step_s": round(timing["first_step_at"] - start, 2),
            "data_stage_s": round(timing["data_stage_s"], 2),
            # the data stage less loading the tokenizer (importing transformers, mostly),
            # which the model stage would pay otherwise: reading, splitting, tokenizing
            "preparation_s": round(timing["data_stage_s"] - timing["tokenizer_s"], 2),
            "import_datasets_s": round(timing["import_datasets_s"], 2),
        }
        result["sftkit"] = timing["sftkit"]
        print(
            f"{label:>8} run {run}: {result['to_first_step_s']:6.2f} s to the first step; data "
            f"stage {result['data_stage_s']:5.2f} s, of which preparation "
            f"{result['preparation_s']:5.2f} s",
            flush=True,
        )
        results.append(result)
    return results


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="GSM8K directory")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--baseline-src", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="Repetitions (medians reported)")
    args = parser.parse_args()
    codes = {"current": REPO}
    if args.baseline_src is not None:
        codes = {"baseline": args.baseline_src.resolve(), **codes}
    timed: dict[str, list[list[dict[str, Any]]]] = {label: [] for label in codes}
    for repetition in range(args.repeat):  # interleaved, so that load on the machine hits both
        for label, src in codes.items():
            timed[label].append(time_runs(src, args, label, args.work / f"{label}-{repetition}"))
    median: dict[str, dict[int, dict[str, float]]] = {}
    for label, repetitions in timed.items():
        median[label] = {
            run: {
                key: statistics.median(r[run - 1][key] for r in repetitions)
                for key in ("to_first_step_s", "data_stage_s", "preparation_s")
            }
            for run in range(1, args.runs + 1)
        }
        for run, values in median[label].items():
            print(
                f"median of {args.repeat}, {label} run {run}: {values['to_first_step_s']:.2f} s "
                f"to the first step, preparation {values['preparation_s']:.2f} s"
            )
    if "baseline" in median:
        base, new = median["baseline"], median["current"]
        for key in ("to_first_step_s", "preparation_s"):
            for run in new:
                ratio = base[1][key] / max(new[run][key], 1e-9)
                same = base[run][key] / max(new[run][key], 1e-9)
                print(
                    f"{key}: baseline first run / current run {run} = {ratio:.1f}x; "
                    f"baseline run {run} / current run {run} = {same:.1f}x"
                )
    out = {"runs": timed, "median": median, "load_average": os.getloadavg()}
    (args.work / "first_step.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
