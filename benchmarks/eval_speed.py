"""Evaluation speed on a CPU: `sftkit eval` of two code trees, back to back, on one trained
quickstart run, against the same evaluation inside `sftkit run`.

    python -m benchmarks.eval_speed --run-dir /tmp/eb/qs --code today=/tmp/eb/today \
        --code new=. [--override today:KEY=VALUE] [--limit 200] [--rounds 3] \
        [--out /tmp/eb/eval_speed.json]

`--run-dir` is a finished `sftkit run recipes/quickstart.yaml` (trained first with the last
``--code`` tree when it does not exist). Each round runs, for every tree in turn,
``sftkit eval RUN_DIR --limit N --output-dir <scratch>`` in a fresh process with that tree
first on ``PYTHONPATH``, exactly as a user types it (no ``OMP_WAIT_POLICY`` or thread count
in the environment unless the caller's shell has one), and reads the evaluation's own
``elapsed_s`` from its metrics.json (generation and scoring; model loading excluded) and the
process's wall time. The in-run figure is the run's ``eval/after-gsm8k`` ``elapsed_s``: the
same evaluator on the same problems inside ``sftkit run``.

A tree is a directory holding a ``sftkit/`` package: the working tree, or an earlier commit
unpacked with ``git archive COMMIT sftkit | tar -x -C DIR``. The machine may be shared, so
trees alternate within each round and the report gives medians and ratios, not one run's
seconds. Prints one line per measurement, then the summary; `--out` keeps it as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "quickstart.yaml"
SCHEMA = "sftkit-benchmark-eval-speed/1"


def sftkit_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from sftkit.cli import main; main()", *args]


def tree_env(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(tree.resolve())
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def imported_from(tree: Path) -> str:
    """Where a process set up as `measure` sets it up imports sftkit from (checked: a tree
    that silently ran another tree's code would make the comparison meaningless)."""
    code = "import sftkit; print(sftkit.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=tree_env(tree),
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def train(run_dir: Path, tree: Path) -> None:
    print(f"training {run_dir} with {tree} ...", flush=True)
    subprocess.run(
        sftkit_command("run", str(RECIPE), "--output-dir", str(run_dir.resolve())),
        env=tree_env(tree),
        cwd=tempfile.gettempdir(),  # import the tree's sftkit, not the working directory's
        check=True,
    )


def in_run_seconds(run_dir: Path) -> tuple[float, int]:
    doc = json.loads((run_dir / "eval" / "after-gsm8k" / "metrics.json").read_text())
    return float(doc["elapsed_s"]), int(doc["n"])


def measure(
    run_dir: Path, tree: Path, limit: int, scratch: Path, overrides: list[str]
) -> dict[str, Any]:
    """One `sftkit eval` of `run_dir` with `tree`'s code, in a fresh process."""
    out = scratch / f"out-{time.monotonic_ns()}"
    run_dir = run_dir.resolve()
    started = time.perf_counter()
    command = ("eval", str(run_dir), *overrides, "--limit", str(limit), "--output-dir", str(out))
    done = subprocess.run(
        sftkit_command(*command),
        env=tree_env(tree),
        cwd=scratch,  # not the checkout: `python -c` puts the working directory on sys.path first
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"sftkit eval with {tree} failed:\n{done.stdout}\n{done.stderr}")
    metrics = next(out.rglob("metrics.json"))
    doc = json.loads(metrics.read_text())
    shutil.rmtree(out, ignore_errors=True)
    return {
        "elapsed_s": float(doc["elapsed_s"]),
        "wall_s": round(wall, 3),
        "n": int(doc["n"]),
        "accuracy": doc["metrics"].get("accuracy"),
        "batch_size": doc["options"].get("batch_size_used", doc["options"].get("batch_size")),
    }


def summarize(
    trees: dict[str, Path],
    results: dict[str, list[dict[str, Any]]],
    in_run: float,
    n_run: int,
    tree_in_run: dict[str, float],
) -> dict[str, Any]:
    summary: dict[str, Any] = {"in_run_elapsed_s": in_run, "in_run_n": n_run, "trees": {}}
    for name, rows in results.items():
        elapsed = statistics.median(r["elapsed_s"] for r in rows)
        reference = tree_in_run.get(name, in_run)
        n = rows[0]["n"]
        summary["trees"][name] = {
            "path": str(trees[name]),
            "median_elapsed_s": round(elapsed, 3),
            "median_wall_s": round(statistics.median(r["wall_s"] for r in rows), 3),
            "examples_per_s": round(n / elapsed, 2),
            "in_run_elapsed_s": reference,
            "eval_over_in_run": round(elapsed / reference, 2),
            "accuracy": rows[0]["accuracy"],
            "runs": rows,
        }
    names = list(results)
    if len(names) >= 2:
        first, last = summary["trees"][names[0]], summary["trees"][names[-1]]
        summary["speedup"] = round(last["examples_per_s"] / first["examples_per_s"], 2)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument(
        "--code",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="a code tree to measure (repeatable; the first is the baseline, the last is "
        "the new path and trains the run when it is missing)",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE",
        help="a recipe override for one tree's evaluations (repeatable), e.g. the batch size "
        "a recipe of that tree's time set",
    )
    parser.add_argument(
        "--in-run-dir",
        action="append",
        default=[],
        metavar="NAME=RUN_DIR",
        help="the in-run figure for one tree: a quickstart run that tree trained (default: "
        "--run-dir's, for every tree)",
    )
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    trees = {}
    for item in args.code:
        name, _, path = item.partition("=")
        trees[name] = Path(path)
        if not (trees[name] / "sftkit" / "__init__.py").exists():
            parser.error(f"--code {item}: {path} has no sftkit/ package")
    overrides: dict[str, list[str]] = {name: [] for name in trees}
    for item in args.override:
        name, _, override = item.partition(":")
        if name not in trees:
            parser.error(f"--override {item}: no --code named {name}")
        overrides[name].append(override)
    imports = {name: imported_from(tree) for name, tree in trees.items()}
    for name, path in imports.items():
        print(f"{name}: sftkit from {path}", flush=True)
        if not Path(path).resolve().is_relative_to(trees[name].resolve()):
            parser.error(f"--code {name}: python imports sftkit from {path}, not from the tree")
    if not (args.run_dir / "eval" / "after-gsm8k" / "metrics.json").exists():
        train(args.run_dir, list(trees.values())[-1])
    in_run, n_run = in_run_seconds(args.run_dir)
    print(f"in-run evaluation: {n_run} problems in {in_run:.2f} s", flush=True)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory(prefix="eval-speed-") as scratch:
        for round_ in range(args.rounds):
            for name, tree in trees.items():
                row = measure(args.run_dir, tree, args.limit, Path(scratch), overrides[name])
                results[name].append(row)
                print(
                    f"round {round_ + 1} {name}: {row['n']} problems in {row['elapsed_s']:.2f} s"
                    f" ({row['n'] / row['elapsed_s']:.1f}/s, batch {row['batch_size']}, "
                    f"accuracy {row['accuracy']:.3f}), process {row['wall_s']:.1f} s",
                    flush=True,
                )
    tree_in_run = {}
    for item in args.in_run_dir:
        name, _, path = item.partition("=")
        tree_in_run[name] = in_run_seconds(Path(path))[0]
    summary = {"schema": SCHEMA, **summarize(trees, results, in_run, n_run, tree_in_run)}
    summary["overrides"] = overrides
    summary["imports"] = imports
    summary["machine"] = {"cpus": os.cpu_count(), "load_average": os.getloadavg()}
    print(json.dumps({k: v for k, v in summary.items() if k != "trees"}))
    for name, tree_summary in summary["trees"].items():
        shown = {k: v for k, v in tree_summary.items() if k != "runs"}
        print(f"{name}: {json.dumps(shown)}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
