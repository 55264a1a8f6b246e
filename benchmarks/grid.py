"""The measurement grid: each point is a shipped recipe with overrides, run for a few steps in a
process of its own, its peak memory measured per phase next to what `sftkit estimate-memory`
predicted for it.

    python -m benchmarks.grid --model-dir .bench/r1-8b-random --out .bench/results/grid \
        --select cap,core [--device cuda] [--budget-s 540]
    python -m benchmarks.grid --model-dir .bench/tiny-random --out /tmp/grid --device cpu \
        --select 'qlora-nf4+paged-adamw-8bit-s512-b1-gc' --seq-lens 32 --steps 2

The grid (the GPU issue's): strategies qlora-nf4, lora-8bit and lora (bf16 base) with their
recipes' optimizers, full-sft with paged-adamw-8bit and with adamw; sequence 512 and 2048;
micro-batch 1 and 4; gradient checkpointing on and off (40 points), plus the seed's case under a
40 GiB cap (``torch.cuda.set_per_process_memory_fraction``): full SFT with AdamW, which must run
out of memory at the first optimizer step, and the QLoRA recipe, which must run (2 points).

Selections: ``cap`` (those 2), ``core`` (each strategy/optimizer pair at s512-b1 with
checkpointing, s2048-b4 with and without: 15), ``full`` (all 42), or shell patterns over point
names. A point whose result file exists is skipped (``--redo`` runs it again), and no point
starts once ``--budget-s`` seconds have passed, so a long grid runs as several calls of the
same command. One result JSON per point (see `benchmarks.report`).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.report import POINT_SCHEMA, render_points, summarize_points

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "recipes"

# The recipe each strategy is measured from, and overrides that turn it into that strategy.
STRATEGY_RECIPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "qlora-nf4": ("r1_gsm8k_qlora.yaml", ()),
    "lora-8bit": ("r1_gsm8k_lora8bit.yaml", ()),
    "lora": ("r1_gsm8k_lora8bit.yaml", ("strategy.name=lora",)),
    "full-sft": ("r1_gsm8k_full.yaml", ()),
}
PAIRS: tuple[tuple[str, str], ...] = (
    ("qlora-nf4", "paged-adamw-8bit"),
    ("lora-8bit", "adamw-8bit"),
    ("lora", "adamw"),
    ("full-sft", "paged-adamw-8bit"),
    ("full-sft", "adamw"),
)
SEQ_LENS = (512, 2048)
BATCHES = (1, 4)
CAP_GIB = 40.0
CAP_GPU = "A100-40GB"  # the seed's card: 40960 MiB = 40 GiB, the same bytes as the cap
# Issue 13's lightest recipe: measured (at 1 x 2048, as that issue asks) once it exists.
LOWMEM_RECIPE = "r1_gsm8k_qlora_lowmem.yaml"


@dataclass(frozen=True)
class Point:
    strategy: str
    optimizer: str
    seq_len: int | None  # None: the recipe's own
    batch: int | None
    checkpointing: bool | None
    cap_gib: float | None = None
    # A recipe measured as it is (its own strategy and optimizer), only reshaped.
    recipe_file: str | None = None
    # The fast and long-context points: their own name, switches, and packed rows of
    # GSM8K-length documents (the grid's points train one long document per row).
    label: str | None = None
    extra: tuple[str, ...] = ()
    packed: bool = False

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        if self.cap_gib is not None:
            return f"seed-case-{self.strategy}+{self.optimizer}-cap{self.cap_gib:g}"
        gc = {True: "-gc", False: "-nogc", None: ""}[self.checkpointing]
        label = (
            Path(self.recipe_file).stem if self.recipe_file else f"{self.strategy}+{self.optimizer}"
        )
        return f"{label}-s{self.seq_len}-b{self.batch}{gc}"

    @property
    def recipe(self) -> Path:
        return RECIPES / (self.recipe_file or STRATEGY_RECIPES[self.strategy][0])

    def overrides(self) -> list[str]:
        out = (
            []
            if self.recipe_file
            else [*STRATEGY_RECIPES[self.strategy][1], f"optimizer.name={self.optimizer}"]
        )
        if self.seq_len is not None:
            out.append(f"training.max_seq_length={self.seq_len}")
        if self.batch is not None:
            out.append(f"training.micro_batch_size={self.batch}")
        if self.checkpointing is not None:
            out.append(f"training.gradient_checkpointing={str(self.checkpointing).lower()}")
        return [*out, *self.extra]


def grid_points(seq_lens: tuple[int, ...] = SEQ_LENS) -> list[Point]:
    points = [
        Point(strategy, optimizer, seq, batch, gc)
        for strategy, optimizer in PAIRS
        for seq in seq_lens
        for batch in BATCHES
        for gc in (True, False)
    ]
    points += [
        Point("full-sft", "adamw", None, None, None, cap_gib=CAP_GIB),
        Point("qlora-nf4", "paged-adamw-8bit", None, None, None, cap_gib=CAP_GIB),
    ]
    return points


FAST_RECIPE = "r1_gsm8k_qlora.yaml"
FAST_CAP_GIB = 10.0  # the long-context pair: a cap whose largest row (about 31k tokens on
# the 8B model, by the estimate) still trains a step in tens of seconds
FAST_ROW = 8192  # packed rows where the s x s mask starts to cost


def fast_points(max_context: int, seq_map: dict[int, int] | None = None) -> list[Point]:
    """The fast and long-context points (issue 23), most informative first: the low-memory
    recipe at 1 x 2048; at the largest row the estimator fits under a `FAST_CAP_GIB` cap
    (`max_context`, found by ``estimate-memory --fit`` at that cap) and 5% above it (expect
    it to run, then to run out of memory); packed rows with the dense mask against without
    it; compiled decoder layers against eager ones. Each keeps its recipe's kernels."""

    def seq(n: int) -> int:
        return (seq_map or {}).get(n, n)

    above = -(-int(max_context * 1.05) // 64) * 64
    lowmem = dict(strategy="lowmem", optimizer="recipe", batch=1, checkpointing=None,
                  recipe_file=LOWMEM_RECIPE, packed=True)  # fmt: skip
    packed = dict(strategy="qlora-nf4", optimizer="paged-adamw-8bit", batch=1,
                  checkpointing=True, recipe_file=FAST_RECIPE, packed=True)  # fmt: skip
    mask_free = "training.mask_free_packing=true"
    return [
        Point(seq_len=seq(2048), label=f"fast-lowmem-s{seq(2048)}", **lowmem),  # type: ignore[arg-type]
        Point(seq_len=max_context, cap_gib=FAST_CAP_GIB,
              label=f"fast-lowmem-max-s{max_context}-cap{FAST_CAP_GIB:g}", **lowmem),  # type: ignore[arg-type]
        Point(seq_len=above, cap_gib=FAST_CAP_GIB,
              label=f"fast-lowmem-max+5pct-s{above}-cap{FAST_CAP_GIB:g}", **lowmem),  # type: ignore[arg-type]
        Point(seq_len=seq(FAST_ROW), label=f"fast-packed-dense-mask-s{seq(FAST_ROW)}",
              extra=("training.mask_free_packing=false",), **packed),  # type: ignore[arg-type]
        Point(seq_len=seq(FAST_ROW), label=f"fast-packed-mask-free-s{seq(FAST_ROW)}",
              extra=(mask_free,), **packed),  # type: ignore[arg-type]
        Point(seq_len=seq(2048), label=f"fast-eager-s{seq(2048)}",
              extra=(mask_free, "training.compile=false"), **packed),  # type: ignore[arg-type]
        Point(seq_len=seq(2048), label=f"fast-compiled-s{seq(2048)}",
              extra=(mask_free, "training.compile=true"), **packed),  # type: ignore[arg-type]
    ]  # fmt: skip


def session_points(
    seq_map: dict[int, int] | None = None, *, first_only: bool = False
) -> list[Point]:
    """Grid points in the order the one-call session runs them, most informative first (the
    GPU issue's order): QLoRA and LoRA at 1 x 2048 with checkpointing, QLoRA at 4 x 512
    without, full SFT with paged AdamW 8-bit at 1 x 512, lora-8bit at 1 x 1024, the low-memory
    recipe at 1 x 2048 when it exists; then the rest of the core selection, then the rest of
    the grid (`first_only`: only the named ones). `seq_map` maps these sequence lengths to
    others (a tiny model's rehearsal)."""

    def seq(n: int) -> int:
        return (seq_map or {}).get(n, n)

    first = [
        Point("qlora-nf4", "paged-adamw-8bit", seq(2048), 1, True),
        Point("lora", "adamw", seq(2048), 1, True),
        Point("qlora-nf4", "paged-adamw-8bit", seq(512), 4, False),
        Point("full-sft", "paged-adamw-8bit", seq(512), 1, True),
        Point("lora-8bit", "adamw-8bit", seq(1024), 1, True),
    ]
    if (RECIPES / LOWMEM_RECIPE).is_file():
        first.append(Point("lowmem", "recipe", seq(2048), 1, None, recipe_file=LOWMEM_RECIPE))
    if first_only:
        return first
    seq_lens = (seq(512), seq(2048))
    rest = [p for p in grid_points(seq_lens) if p.cap_gib is None]
    ordered = first + select(rest, "core", seq_lens) + rest
    return list(dict.fromkeys(ordered))


def select(points: list[Point], selection: str, seq_lens: tuple[int, ...]) -> list[Point]:
    short, long = min(seq_lens), max(seq_lens)
    chosen: list[Point] = []
    for word in (w.strip() for w in selection.split(",") if w.strip()):
        if word == "full":
            matched = points
        elif word == "cap":
            matched = [p for p in points if p.cap_gib is not None]
        elif word == "core":
            matched = [
                p
                for p in points
                if p.cap_gib is None
                and (
                    (p.seq_len == short and p.batch == 1 and p.checkpointing)
                    or (p.seq_len == long and p.batch == max(BATCHES))
                )
            ]
        else:
            matched = [p for p in points if fnmatch.fnmatchcase(p.name, word)]
            if not matched:
                names = ", ".join(p.name for p in points[:3])
                raise SystemExit(f"--select {word!r} matches no point (names look like {names})")
        chosen.extend(p for p in matched if p not in chosen)
    return chosen


@dataclass
class Settings:
    model_dir: str
    out: str
    device: str
    steps: int
    warmup_steps: int
    data_dir: str
    timeout_s: int
    peak_tflops: float | None = None
    extra_overrides: list[str] = field(default_factory=list)
    gsm8k_dir: str | None = None  # packed points' documents (else generated, same length)


def point_spec(point: Point, settings: Settings) -> dict:
    """What `benchmarks.point` reads: the point, its recipe and overrides, the settings."""
    return {
        "name": point.name,
        "point": asdict(point),
        "recipe": str(point.recipe),
        "overrides": point.overrides() + list(settings.extra_overrides),
        "settings": asdict(settings),
    }


def run_point(point: Point, settings: Settings) -> dict:
    """Run one point in a fresh process; return its result (a failure record if it crashed)."""
    out = Path(settings.out)
    spec_path = out / "specs" / f"{point.name}.json"
    result_path = out / f"{point.name}.json"
    log_path = out / "logs" / f"{point.name}.log"
    for path in (spec_path, log_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(point_spec(point, settings), indent=1))
    # The run directory is the harness's scratch space: a rerun (--redo) starts it afresh
    # (sftkit itself never overwrites a run).
    shutil.rmtree(out / "runs" / point.name, ignore_errors=True)
    started = time.perf_counter()
    command = [sys.executable, "-m", "benchmarks.point", str(spec_path), str(result_path)]
    env = {**os.environ, "PYTHONPATH": _pythonpath()}
    with log_path.open("w") as log:
        try:
            code = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                timeout=settings.timeout_s, check=False,
            ).returncode  # fmt: skip
            reason = f"exit code {code}"
        except subprocess.TimeoutExpired:
            code, reason = -1, f"timed out after {settings.timeout_s} s"
    if code == 0 and result_path.is_file():
        return dict(json.loads(result_path.read_text()))
    # The process died without writing a result (killed, crashed): record that, with the log.
    tail = log_path.read_text(errors="replace")[-3000:] if log_path.is_file() else ""
    record = {
        "schema": POINT_SCHEMA,
        "name": point.name,
        "point": asdict(point),
        "device": {"type": "cuda" if settings.device.startswith("cuda") else "cpu"},
        "predicted": {},
        "measured": {"completed": False, "oom": "out of memory" in tail.lower(), "error": reason},
        "log_tail": tail,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    if record["measured"]["oom"]:
        record["measured"]["oom_phase"] = "unknown (process died)"
    result_path.write_text(json.dumps(record, indent=1))
    return record


def _pythonpath() -> str:
    parts = [str(REPO), *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    return os.pathsep.join(dict.fromkeys(parts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True, help="benchmarks.build_random_model output.")
    parser.add_argument("--out", type=Path, required=True, help="Directory for result JSONs.")
    parser.add_argument("--device", default="cuda", help="cuda or cpu.")
    parser.add_argument("--select", default="core", help="cap, core, full, or name patterns.")
    parser.add_argument("--seq-lens", default=",".join(map(str, SEQ_LENS)))
    parser.add_argument("--steps", type=int, default=3, help="Measured steps after warm-up.")
    parser.add_argument("--warmup-steps", type=int, default=1)
    parser.add_argument("--data", default=None, help="Directory for the generated token rows.")
    parser.add_argument("--timeout-s", type=int, default=420, help="Per point.")
    parser.add_argument("--budget-s", type=float, default=None, help="Start no point after this.")
    parser.add_argument("--redo", action="store_true", help="Run points that have results.")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--list", action="store_true", help="Print the selected points and exit.")
    parser.add_argument("--override", action="append", default=[], help="Extra recipe override.")
    args = parser.parse_args(argv)

    seq_lens = tuple(int(s) for s in args.seq_lens.split(","))
    points = select(grid_points(seq_lens), args.select, seq_lens)
    if args.list:
        for point in points:
            print(point.name)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        model_dir=str(Path(args.model_dir).resolve()),
        out=str(args.out.resolve()),
        device=args.device,
        steps=args.steps,
        warmup_steps=args.warmup_steps,
        data_dir=str(Path(args.data).resolve() if args.data else args.out.resolve() / "data"),
        timeout_s=args.timeout_s,
        peak_tflops=args.peak_tflops,
        extra_overrides=list(args.override),
    )
    started = time.perf_counter()
    results: list[dict] = []
    skipped: list[str] = []
    for point in points:
        result_path = args.out / f"{point.name}.json"
        if result_path.is_file() and not args.redo:
            results.append(json.loads(result_path.read_text()))
            continue
        if args.budget_s is not None and time.perf_counter() - started > args.budget_s:
            skipped.append(point.name)
            continue
        print(f"[{time.perf_counter() - started:6.0f} s] {point.name} ...", flush=True)
        result = run_point(point, settings)
        results.append(result)
        measured = result.get("measured") or {}
        status = (
            f"OOM in {measured.get('oom_phase')}" if measured.get("oom")
            else "ran" if measured.get("completed") else f"failed ({measured.get('error')})"
        )  # fmt: skip
        print(f"           {status}, {result.get('wall_seconds')} s", flush=True)
    print()
    print(summarize_points(results))
    print(render_points(results))
    if skipped:
        print(f"{len(skipped)} point(s) not started (--budget-s): run the same command again.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
