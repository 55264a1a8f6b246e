"""Every GPU measurement in one device call: it ends on its own inside 9 minutes, streams each
result to ``$OUT`` the moment it exists, and loses at most the piece of work in flight.

    bash benchmarks/run_gpu.sh                      # on the GPU machine (docs/benchmarks.md)
    DEVICE=cpu TINY=1 bash benchmarks/run_gpu.sh    # the same stages on a CPU, tiny model
    python -m benchmarks.session --out OUT [--device cuda] [--tiny] [--budget-s 420] ...

The stages, in order (the GPU issue's): ``setup`` (nvidia-smi, package versions, the offline
install of the carried wheels, the size of what the call carried), ``model`` (the 8B
architecture from the carried config with random weights, drawn on the device and written
once as safetensors: every point loads it through ``from_pretrained``, which quantizes on
the way in), ``cap`` (the seed's case under a 40 GiB cap: full SFT must run out of memory at
the first optimizer step, QLoRA must train), ``speed`` (the seed's plain TRL script against
``r1_gsm8k_qlora.yaml``, and the low-memory recipe when it exists), ``fast`` (the fast and
long-context points, `benchmarks.grid.fast_points`: the low-memory recipe at 1 x 2048, at
the largest row ``estimate-memory --fit`` predicts under a 10 GiB cap and 5% above it, dense
against mask-free packing, compiled against eager; each line says its attention kernel,
loss head and layer kernels), ``eval`` (the gsm8k evaluator on GSM8K's test problems, today's
settings against the new path), ``rollout`` (GRPO's rollout phase, `benchmarks.rollout`:
``estimate-memory recipes/r1_gsm8k_grpo.yaml --measure --json`` at 256-token completions, the
rollout peak and the KV cache and log-probability tensors against the estimate), ``grid``
(estimator points, most informative first, as many as the budget leaves), ``tests``
(``pytest -m gpu``). No new work starts after ``--budget-s`` seconds; whatever runs is killed at
``--deadline-s``. Every point runs in a process of its own, so an out-of-memory error or a
crash loses only that point.

Into ``--out`` go exactly three files: ``points.jsonl`` (`benchmarks.lines`: one line per
finished piece of work, appended at once), ``run.log`` (this driver's lines and every
subprocess's output, unbuffered) and ``report.md`` (`benchmarks.report.render_session`,
rewritten after every line). Scratch (the model, run directories) lives in ``--bench-dir``.
This process never imports torch: a CUDA context here would sit in every measurement.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.carry import GSM8K_DIR, MODEL_CONFIG, carry_report
from benchmarks.lines import (
    LINE_SCHEMA,
    LOG_FILE,
    POINTS_FILE,
    REPORT_FILE,
    STAGES,
    append_line,
)

REPO = Path(__file__).resolve().parent.parent
# Imported by the measured runs; the GPU image lacks them. A CPU run needs no Liger (its
# kernels are CUDA-only and the rehearsal turns them off).
NEEDED_MODULES = ("trl", "bitsandbytes", "datasets", "liger_kernel", "pydantic", "xxhash")
CUDA_ONLY_MODULES = ("liger_kernel",)
VERSIONED = ("torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "datasets",
             "liger-kernel", "triton", "pydantic", "tokenizers", "safetensors", "pytest")  # fmt: skip
WHEEL_PLATFORM = ("--only-binary=:all:", "--implementation", "cp", "--python-version", "3.12",
                  "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_24_x86_64",
                  "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64")  # fmt: skip
# The tiny model's stand-ins for the grid's sequence lengths.
TINY_SEQ = {512: 64, 1024: 96, 2048: 128}
TINY_OVERRIDES = ("training.liger_kernels=false",)  # Liger needs CUDA
TINY_CAP_OVERRIDES = ("training.max_seq_length=256",)  # the seed's 4 x 1024 is slow on a CPU
TINY_SPEED_OVERRIDES = (
    "training.max_seq_length=256",
    "training.gradient_accumulation_steps=1",
    "data.format.options.dev_size=4",
)
TINY_BASELINE_OVERRIDES = {"gradient_accumulation_steps": 1, "max_length": 256}
# The fast points' rows on the tiny model: 2048 and 8192 stand in as 128 and 256; the
# "largest row" (no cap on a CPU) as 192.
TINY_FAST_SEQ = {2048: 128, 8192: 256}
TINY_MAX_CONTEXT = 192
# The evaluation point: problems per variant and the budget every variant generates (random
# weights never stop early, so each output runs all of it; the 1,319-problem time is
# extrapolated from the rate).
EVAL_LIMIT, EVAL_TOKENS = 32, 256
EVAL_TINY_LIMIT, EVAL_TINY_TOKENS = 8, 16


@dataclass
class Config:
    out: Path
    device: str = "cuda"
    tiny: bool = False
    budget_s: float = 420.0
    deadline_s: float = 525.0
    stages: tuple[str, ...] = STAGES
    limit: int | None = None  # at most this many points per cap/grid stage
    bench: Path = REPO / ".bench"
    shared: Path = REPO / ".gpu-shared"
    site: Path | None = None  # where the carried wheels are installed (default: bench/site)
    point_timeout_s: float = 200.0
    speed_timeout_s: float = 240.0
    eval_timeout_s: float = 150.0
    rollout_timeout_s: float = 180.0
    model_timeout_s: float = 300.0
    min_start_s: float = 45.0  # a point needs at least this long before the deadline
    grid_steps: int = 3
    grid_warmup_steps: int = 1
    speed_steps: int = 5
    speed_warmup_steps: int = 2
    speed_rows: int = 2000
    peak_tflops: float | None = None

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


@dataclass
class ProcessOutcome:
    code: int
    reason: str  # "exit code N", "timed out after N s", "killed at the deadline"
    log_tail: str
    seconds: float


@dataclass
class Session:
    config: Config
    lines: list[dict[str, Any]] = field(default_factory=list)
    not_started: list[str] = field(default_factory=list)
    stopped: str | None = None  # why no later stage can run (no model, no packages)

    def __post_init__(self) -> None:
        self.started = time.monotonic()
        self.config.out.mkdir(parents=True, exist_ok=True)
        self.points_path = self.config.out / POINTS_FILE
        self.log_path = self.config.out / LOG_FILE
        self.report_path = self.config.out / REPORT_FILE
        self.points_path.write_text("")
        self.log = self.log_path.open("a", encoding="utf-8", buffering=1)
        stamp = datetime.now(timezone.utc)
        self.id = f"{stamp:%Y%m%dT%H%M%SZ}-{os.getpid()}"
        self.date = f"{stamp:%Y-%m-%d}"
        self.scratch = self.config.bench / "session"
        shutil.rmtree(self.scratch, ignore_errors=True)  # runs of an earlier call
        self.scratch.mkdir(parents=True)
        self.site = self.config.site or self.config.bench / "site"
        self.model_dir: Path | None = None
        self.versions: dict[str, str] = {}
        self.device: dict[str, Any] = {"type": "cuda" if self.config.cuda else "cpu"}
        self._last_refusal: str | None = None

    # ------------------------------------------------------------------ plumbing

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        line = f"[{self.elapsed():6.1f} s] {text}"
        print(line, flush=True)
        self.log.write(line + "\n")

    def may_start(self, what: str, need_s: float | None = None) -> bool:
        """False (and `what` noted as not started) past the budget, or too near the deadline."""
        need = self.config.min_start_s if need_s is None else need_s
        reason = None
        if self.stopped:
            reason = self.stopped
        elif self.elapsed() > self.config.budget_s:
            reason = f"past the {self.config.budget_s:g} s budget"
        elif self.config.deadline_s - self.elapsed() < need:
            reason = f"under {need:g} s left before the deadline"
        if reason is None:
            return True
        self.not_started.append(what)
        if reason != self._last_refusal:  # once per reason: the report lists every one
            self.say(f"{what} and what follows: not started ({reason})")
            self._last_refusal = reason
        return False

    def run(
        self, command: list[str], timeout_s: float, *, what: str, stdout: Path | None = None
    ) -> ProcessOutcome:
        """Run `command` with its output appended to run.log (its standard output written to
        `stdout` instead, when given: a JSON result); kill its process group at `timeout_s` or
        at the deadline, whichever comes first."""
        limit = max(1.0, min(timeout_s, self.config.deadline_s - self.elapsed()))
        self.say(f"{what}: {' '.join(command[2:])[:300]}")
        self.log.flush()
        offset = self.log_path.stat().st_size
        started = time.monotonic()
        result = stdout.open("w", encoding="utf-8") if stdout else None
        proc = subprocess.Popen(
            command, cwd=REPO, stdout=result or self.log,
            stderr=self.log if result else subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            code = proc.wait(timeout=limit)
            reason = f"exit code {code}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = -9
            at_deadline = limit < timeout_s
            reason = "killed at the deadline" if at_deadline else f"timed out after {limit:.0f} s"
        finally:
            if result:
                result.close()
        seconds = round(time.monotonic() - started, 1)
        with self.log_path.open("rb") as handle:
            handle.seek(offset)
            tail = handle.read()[-4000:].decode("utf-8", errors="replace")
        self.say(f"{what}: {reason}, {seconds} s")
        return ProcessOutcome(code, reason, tail, seconds)

    def record(self, kind: str, name: str, started_s: float, payload: dict[str, Any]) -> dict:
        line = {
            **payload,
            "schema": LINE_SCHEMA,
            "kind": kind,
            "name": name,
            "session": {
                "id": self.id,
                "device": self.config.device,
                "tiny": self.config.tiny,
                "budget_s": self.config.budget_s,
                "deadline_s": self.config.deadline_s,
                "results_dir": self.results_dir_name(),
            },
            "started_s": round(started_s, 1),
            "wall_seconds": round(self.elapsed() - started_s, 1),
        }
        append_line(self.points_path, line)
        self.lines.append(line)
        self.write_report()
        return line

    def write_report(self) -> None:
        from benchmarks.report import render_session

        text = render_session(self.lines, not_started=self.not_started)
        tmp = self.report_path.with_name(REPORT_FILE + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.report_path)

    def hardware_gpu(self) -> str:
        """``hardware.gpu`` for an estimate on this machine: the card's size (nvidia-smi's
        total; an H100's when it gave none), or the host on a CPU."""
        return "cpu" if not self.config.cuda else f"{self.device.get('total_mib', 81559)}MiB"

    def results_dir_name(self) -> str:
        """``benchmarks/results/<device>-<date>``: where this call's files are committed."""
        name = str(self.device.get("name") or self.device["type"]).lower()
        slug = "".join(c if c.isalnum() else "-" for c in name).strip("-")
        return f"{'-'.join(filter(None, slug.split('-')))}-{self.date}"

    # ------------------------------------------------------------------ stages

    def stage_setup(self) -> None:
        started = self.elapsed()
        smi = self._nvidia_smi()
        if smi.get("name"):
            self.device.update(name=smi["name"], total_mib=smi.get("memory_total_mib"))
        elif not self.config.cuda:
            self.device["name"] = "cpu"
        install = self._install()
        self.versions = package_versions()
        carry = carry_report(REPO)
        for problem in carry["problems"]:
            self.say(f"carry: {problem}")
        self.say(
            f"carry: {carry['total_bytes'] / 2**20:.1f} MiB of {carry['limit_bytes'] / 2**20:.0f}"
        )
        missing = self.missing_modules()
        if missing:
            self.stopped = f"missing packages {', '.join(missing)} (carry .whl)"
        self.record(
            "setup",
            "setup",
            started,
            {
                "device": self.device,
                "nvidia_smi": smi,
                "python": platform.python_version(),
                "platform": platform.platform(),
                "versions": self.versions,
                "install": install,
                "carry": carry,
                "missing_modules": missing,
            },
        )

    def _nvidia_smi(self) -> dict[str, Any]:
        if shutil.which("nvidia-smi") is None:
            return {"found": False}
        query = "name,memory.total,driver_version"
        try:
            proc = subprocess.run(
                ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            full = subprocess.run(
                ["nvidia-smi"], capture_output=True, text=True, timeout=30, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            return {"found": True, "error": str(exc)}
        self.log.write(full)
        first = (proc.stdout.strip().splitlines() or [""])[0]
        parts = [p.strip() for p in first.split(",")]
        if len(parts) != 3:
            return {"found": True, "raw": proc.stdout.strip()[:500]}
        return {
            "found": True,
            "name": parts[0],
            "memory_total_mib": int(float(parts[1])),
            "driver": parts[2],
            "gpus": len(proc.stdout.strip().splitlines()),
        }

    def missing_modules(self) -> list[str]:
        needed = [m for m in NEEDED_MODULES if self.config.cuda or m not in CUDA_ONLY_MODULES]
        return [m for m in needed if importlib.util.find_spec(m) is None]

    def _install(self) -> dict[str, Any]:
        """On CUDA, the carried wheels installed offline into `site` when a needed module is
        missing. On a CPU (the rehearsal), whose environment has what a CPU run needs, the
        same wheels are installed for the GPU machine's Python 3.12 into a scratch folder:
        that checks they install offline (one version each, nothing missing), and they are
        not used."""
        wheels = sorted(str(p) for p in (REPO / ".whl").glob("*.whl"))
        missing = self.missing_modules()
        if not wheels:
            self.say("install: no .whl/ (benchmarks/prepare_carry.sh fills it; carry it)")
            return {"wheels": 0, "needed": missing, "installed": False, "rc": None}
        rehearsal = not self.config.cuda or not missing
        target = self.scratch / "site-check" if rehearsal else self.site
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                   "--no-compile", "--no-cache-dir", "--upgrade", "--target", str(target),
                   *(WHEEL_PLATFORM if rehearsal else ()), *wheels]  # fmt: skip
        outcome = self.run(command, 180, what="install")
        if not rehearsal and outcome.code == 0:
            sys.path.insert(0, str(self.site))
            importlib.invalidate_caches()
        if rehearsal:
            shutil.rmtree(target, ignore_errors=True)
        return {
            "wheels": len(wheels),
            "needed": missing,
            "installed": not rehearsal and outcome.code == 0,
            "checked_only": rehearsal,
            "target": str(target),
            "rc": outcome.code,
            "seconds": outcome.seconds,
        }

    def stage_model(self) -> None:
        if not self.may_start("model", need_s=60.0 if self.config.cuda else 5.0):
            self.stopped = self.stopped or "no model"
            return
        started = self.elapsed()
        config_path = self.config.shared / MODEL_CONFIG.relative_to(".gpu-shared")
        gsm8k = self.config.shared / GSM8K_DIR.relative_to(".gpu-shared")
        architecture = architecture_check(config_path)
        out = self.config.bench / ("tiny-random" if self.config.tiny else "r1-8b-random")
        source = ["--tiny"] if self.config.tiny else ["--config", str(config_path)]
        data = ["--data", str(gsm8k)] if (gsm8k / "train.jsonl").is_file() else []
        command = [sys.executable, "-m", "benchmarks.build_random_model", *source, "--out",
                   str(out), "--device", self.config.device, *data]  # fmt: skip
        outcome = self.run(command, self.config.model_timeout_s, what="model")
        marker = out / "random_model.json"
        payload: dict[str, Any] = {"architecture": architecture}
        if outcome.code == 0 and marker.is_file():
            self.model_dir = out
            payload["model"] = {
                **json.loads(marker.read_text()),
                "dir": str(out),
                "config": json.loads((out / "config.json").read_text()),
            }
        else:
            self.stopped = f"no model ({outcome.reason})"
            payload["model"] = {"dir": str(out)}
            payload["failed"] = outcome.reason
            payload["log_tail"] = outcome.log_tail
        self.record("model", out.name, started, payload)

    def _settings(self, kind: str) -> Any:
        from benchmarks.grid import Settings

        extra = [*TINY_OVERRIDES, *(TINY_CAP_OVERRIDES if kind == "cap" else ())]
        gsm8k = self.config.shared / GSM8K_DIR.relative_to(".gpu-shared")

        return Settings(
            model_dir=str(self.model_dir),
            out=str(self.scratch / "points"),
            device=self.config.device,
            steps=self.config.grid_steps,
            warmup_steps=self.config.grid_warmup_steps,
            data_dir=str(self.scratch / "rows"),
            timeout_s=int(self.config.point_timeout_s),
            peak_tflops=self.config.peak_tflops,
            extra_overrides=extra if self.config.tiny else [],
            gsm8k_dir=str(gsm8k) if gsm8k.is_dir() else None,
        )

    def stage_fast(self) -> None:
        """The fast and long-context points (`benchmarks.grid.fast_points`): the largest row
        the estimator fits under the cap is asked of `estimate-memory --fit` first."""
        from benchmarks.grid import FAST_CAP_GIB, LOWMEM_RECIPE, RECIPES, fast_points

        max_context: int | None
        if self.config.tiny:
            max_context = TINY_MAX_CONTEXT  # no cap on a CPU: a row the tiny model times
        else:
            max_context = self._max_context(RECIPES / LOWMEM_RECIPE, FAST_CAP_GIB)
            if max_context is None:
                return
        points = fast_points(max_context, TINY_FAST_SEQ if self.config.tiny else None)
        if self.config.tiny and self.config.limit is None:
            # the rehearsal's budget holds one: the low-memory recipe's every switch, packed
            points = [p for p in points if p.name.startswith("fast-lowmem-max-")]
        if self.config.limit is not None:
            points = points[: self.config.limit]
        for point in points:
            if self.may_start(point.name):
                self.run_point("fast", point)

    def _max_context(self, recipe: Path, cap_gib: float) -> int | None:
        started = self.elapsed()
        command = [sys.executable, "-c", "import sys; from sftkit.cli import run_cli; "
                   "sys.exit(run_cli())", "estimate-memory", str(recipe),
                   f"model.name_or_path={self.model_dir}", "evaluation.before_training=false",
                   "evaluation.after_training=false", f"--gpu={cap_gib:g}GiB", "--fit",
                   "--json"]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
        try:
            found = json.loads(done.stdout)["fit_search"]["training.max_seq_length"]["value"]
        except (ValueError, KeyError, TypeError):
            found = None
        if not found:
            self.say(f"fast: no largest row from estimate-memory --fit ({done.stderr[-300:]})")
            self.not_started.append("fast (no predicted maximum context)")
            return None
        self.say(f"fast: largest row under a {cap_gib:g} GiB cap: {found} tokens "
                 f"({self.elapsed() - started:.0f} s)")  # fmt: skip
        return int(found)

    def stage_points(self, kind: str) -> None:
        from benchmarks.grid import grid_points, session_points

        if kind == "cap":
            points = [p for p in grid_points() if p.cap_gib is not None]
        else:
            # The rehearsal runs the named points only (the rest of the grid is more of the
            # same code path); a GPU call runs as many as the budget leaves.
            points = session_points(
                TINY_SEQ if self.config.tiny else None,
                first_only=self.config.tiny and self.config.limit is None,
            )
        if self.config.limit is not None:
            points = points[: self.config.limit]
        for point in points:
            if self.may_start(point.name):
                self.run_point(kind, point)

    def run_point(self, kind: str, point: Any) -> None:
        from benchmarks.grid import point_spec
        from benchmarks.report import POINT_SCHEMA

        started = self.elapsed()
        settings = self._settings(kind)
        spec = point_spec(point, settings)
        spec_path = self.scratch / "specs" / f"{point.name}.json"
        result_path = self.scratch / "results" / f"{point.name}.json"
        for path in (spec_path, result_path):
            path.parent.mkdir(parents=True, exist_ok=True)
        spec_path.write_text(json.dumps(spec, indent=1))
        command = [sys.executable, "-m", "benchmarks.point", str(spec_path), str(result_path)]
        outcome = self.run(command, self.config.point_timeout_s, what=point.name)
        if outcome.code == 0 and result_path.is_file():
            payload = json.loads(result_path.read_text())
        else:
            oom = "out of memory" in outcome.log_tail.lower()
            payload = {
                "schema": POINT_SCHEMA,
                "point": spec["point"],
                "recipe_file": Path(spec["recipe"]).name,
                "overrides": spec["overrides"],
                "device": self.device,
                "versions": self.versions,
                "predicted": {},
                "measured": {
                    "completed": False,
                    "oom": oom,
                    "oom_phase": "unknown (process died)" if oom else None,
                    "error": outcome.reason,
                },
                "failed": outcome.reason,
                "log_tail": outcome.log_tail,
            }
        payload["point_schema"] = payload.pop("schema", POINT_SCHEMA)
        self.record(kind, point.name, started, payload)

    def stage_speed(self) -> None:
        from benchmarks.compare_speed import RECIPE, RUN_SCHEMA, speed_spec
        from benchmarks.data import load_rows, write_jsonl
        from benchmarks.grid import LOWMEM_RECIPE, RECIPES

        gsm8k = self.config.shared / GSM8K_DIR.relative_to(".gpu-shared")
        rows, source = load_rows(gsm8k if gsm8k.is_dir() else None, self.config.speed_rows)
        out = self.scratch / "speed"
        data_dir = out / "data"
        write_jsonl(rows, data_dir / "train.jsonl")  # both sides read the same rows
        runs: list[tuple[str, str, Path]] = [
            ("baseline", "baseline", RECIPE),
            ("sftkit", "sftkit", RECIPE),
        ]
        if (RECIPES / LOWMEM_RECIPE).is_file():
            runs.append(("sftkit-lowmem", "sftkit", RECIPES / LOWMEM_RECIPE))
        for name, role, recipe in runs:
            if not self.may_start(f"speed {name}"):
                continue
            started = self.elapsed()
            spec = speed_spec(
                name, role, (), recipe=recipe, model_dir=str(self.model_dir), data_dir=data_dir,
                rows=len(rows), device=self.config.device, steps=self.config.speed_steps,
                warmup_steps=self.config.speed_warmup_steps, out=out,
                recipe_overrides=[*TINY_OVERRIDES, *TINY_SPEED_OVERRIDES] if self.config.tiny else [],
                baseline_overrides=TINY_BASELINE_OVERRIDES if self.config.tiny else None,
            )  # fmt: skip
            spec_path = out / "specs" / f"{name}.json"
            result_path = out / "results" / f"{name}.json"
            for path in (spec_path, result_path):
                path.parent.mkdir(parents=True, exist_ok=True)
            spec_path.write_text(json.dumps(spec, indent=1))
            command = [sys.executable, "-m", "benchmarks.compare_speed", "--worker",
                       str(spec_path), str(result_path)]  # fmt: skip
            outcome = self.run(command, self.config.speed_timeout_s, what=f"speed {name}")
            if outcome.code == 0 and result_path.is_file():
                payload = json.loads(result_path.read_text())
            else:
                payload = {
                    "schema": RUN_SCHEMA,
                    "role": role,
                    "device": self.device,
                    "versions": self.versions,
                    "failed": outcome.reason,
                    "log_tail": outcome.log_tail,
                }
            payload["run_schema"] = payload.pop("schema", RUN_SCHEMA)
            payload["data"] = source
            payload["warmup_steps"] = self.config.speed_warmup_steps
            self.record("speed", name, started, payload)

    def stage_eval(self) -> None:
        """The gsm8k evaluator on GSM8K's test problems (carried) with the 8B model: today's
        settings (the recipe's hand-set batch of 8) against the new path (the estimator's
        batch; then with the static cache and compiled decoding), one process, one load."""
        from benchmarks.eval_point import SCHEMA

        if not self.may_start("eval", need_s=120.0 if self.config.cuda else 10.0):
            return
        from benchmarks.data import load_rows, write_jsonl

        started = self.elapsed()
        gsm8k = self.config.shared / GSM8K_DIR.relative_to(".gpu-shared")
        out = self.scratch / "eval"
        out.mkdir(parents=True, exist_ok=True)
        source = f"GSM8K's test split ({gsm8k})"
        if not (gsm8k / "test.jsonl").is_file() or not (gsm8k / "train.jsonl").is_file():
            # A fresh checkout: generated rows of GSM8K's length (the timing needs no real
            # problems; the weights are random anyway).
            rows, source = load_rows(None, 1319 + 400)
            gsm8k = out / "data"
            write_jsonl(rows[:400], gsm8k / "train.jsonl")
            write_jsonl(rows[400:], gsm8k / "test.jsonl")
        spec = {
            "recipe": str(REPO / "recipes" / "r1_gsm8k_qlora.yaml"),
            "overrides": [
                f"model.name_or_path={self.model_dir}",
                f"data.format.options.source={gsm8k}",
                f"hardware.gpu={self.hardware_gpu()}",
                f"output_dir={out / 'run'}",
                *(TINY_OVERRIDES if self.config.tiny else ()),
            ],
            "device": self.config.device,
            "limit": EVAL_TINY_LIMIT if self.config.tiny else EVAL_LIMIT,
            "max_new_tokens": EVAL_TINY_TOKENS if self.config.tiny else EVAL_TOKENS,
            "variants": {
                "today": {"batch_size": 8, "merged_copy": False},  # the quantized base
                "new": {},
                "new-static": {"static_cache": True},
            },
        }
        spec_path, result_path = out / "spec.json", out / "result.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        command = [sys.executable, "-m", "benchmarks.eval_point", str(spec_path), str(result_path)]
        outcome = self.run(command, self.config.eval_timeout_s, what="eval gsm8k")
        payload: dict[str, Any] = {"eval_schema": SCHEMA, "device": self.device, "data": source}
        if result_path.is_file():
            payload.update(json.loads(result_path.read_text()))
            payload["eval_schema"] = payload.pop("schema", SCHEMA)
        if outcome.code != 0:
            payload["failed"] = outcome.reason
            payload["log_tail"] = outcome.log_tail
        self.record("eval", "gsm8k-test", started, payload)

    def stage_rollout(self) -> None:
        """GRPO's rollout phase against its prediction (`benchmarks.rollout`): one
        ``estimate-memory --measure --json`` process on the session's model. A JSON object
        is a result whatever the exit code (1: measure mode found a row off, 3: the estimate
        does not fit); without one (a crash, out of memory, a timeout) the line says why."""
        from benchmarks import rollout

        if not self.may_start("rollout", need_s=90.0 if self.config.cuda else 10.0):
            return
        started = self.elapsed()
        out = self.scratch / "rollout"
        out.mkdir(parents=True, exist_ok=True)
        overrides = [
            *rollout.overrides(self.model_dir or "", self.hardware_gpu(), tiny=self.config.tiny),
            *(TINY_OVERRIDES if self.config.tiny else ()),
        ]
        result_path = out / "estimate.json"
        outcome = self.run(
            rollout.command(overrides), self.config.rollout_timeout_s, what="rollout",
            stdout=result_path,
        )  # fmt: skip
        payload: dict[str, Any] = {
            "recipe_file": rollout.RECIPE.name,
            "overrides": overrides,
            "device": self.device,
            "versions": self.versions,
            "returncode": outcome.code,
            "predicted": {},
            "measured": {},
        }
        try:
            estimate = json.loads(result_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            estimate = None
        if isinstance(estimate, dict) and isinstance(estimate.get("measured"), dict):
            payload["rollout"] = rollout.summarize(estimate)
            payload["measured"] = estimate.pop("measured")
            payload["predicted"] = estimate  # the whole estimate, as a point records it
            summary = payload["rollout"]
            self.say(
                f"rollout: {'ok' if summary['ok'] else 'MISMATCH'} on {summary['device']}; "
                + "; ".join(
                    f"{r['what']}: {r['predicted_bytes']:,} predicted, "
                    f"{r['measured_bytes']:,} measured" for r in summary["rows"]
                )
            )  # fmt: skip
        else:
            payload["failed"] = outcome.reason
            payload["log_tail"] = outcome.log_tail
        self.record("rollout", rollout.RECIPE.stem, started, payload)

    def stage_tests(self) -> None:
        if not self.may_start("pytest -m gpu", need_s=60.0 if self.config.cuda else 10.0):
            return
        started = self.elapsed()
        command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                   "tests"]  # fmt: skip
        outcome = self.run(command, self.config.deadline_s, what="pytest -m gpu")
        lines = [t for t in outcome.log_tail.splitlines() if t.strip()]
        summary = lines[-1].strip("= ").strip() if lines else ""
        payload = {"returncode": outcome.code, "summary": summary}
        if outcome.code not in (0, 5):  # 5: nothing collected (all deselected)
            payload["failed"] = outcome.reason
            payload["log_tail"] = outcome.log_tail
        self.record("tests", "pytest -m gpu", started, payload)

    def finish(self) -> None:
        started = self.elapsed()
        self.record(
            "end",
            "end",
            started,
            {
                "not_started": list(self.not_started),
                "budget_s": self.config.budget_s,
                "elapsed_s": round(self.elapsed(), 1),
                "stopped": self.stopped,
            },
        )
        self.say(
            f"done: {len(self.lines)} lines in {self.points_path}; "
            f"commit {', '.join(p.name for p in (self.points_path, self.report_path))} as "
            f"benchmarks/results/{self.results_dir_name()}/"
        )
        self.log.close()

    def main(self) -> int:
        self.say(f"session {self.id}: stages {', '.join(self.config.stages)}")
        steps = {
            "setup": self.stage_setup,
            "model": self.stage_model,
            "cap": lambda: self.stage_points("cap"),
            "speed": self.stage_speed,
            "fast": self.stage_fast,
            "eval": self.stage_eval,
            "rollout": self.stage_rollout,
            "grid": lambda: self.stage_points("grid"),
            "tests": self.stage_tests,
        }
        for stage in self.config.stages:
            self.say(f"=== {stage} ===")
            if (
                stage in ("cap", "speed", "fast", "eval", "rollout", "grid")
                and self.model_dir is None
                and not self.stopped
            ):
                self._reuse_model()
            steps[stage]()
        self.finish()
        return 0

    def _reuse_model(self) -> None:
        # A call without the model stage uses the model an earlier call built (warm machine).
        out = self.config.bench / ("tiny-random" if self.config.tiny else "r1-8b-random")
        if (out / "random_model.json").is_file():
            self.model_dir = out
        else:
            self.stopped = "no model (run the model stage)"


def architecture_check(config_path: Path) -> dict[str, Any]:
    """The carried 8B config, resolved by sftkit's own census (torch-free)."""
    if not config_path.is_file():
        return {"config": str(config_path), "found": False}
    try:
        from sftkit.modelshape import shape_from_config

        config = json.loads(config_path.read_text())
        shape = shape_from_config(config, name=config_path.stem, source=str(config_path))
    except Exception as exc:  # recorded, not raised: the line says what was wrong
        return {"config": str(config_path), "found": True, "error": f"{type(exc).__name__}: {exc}"}
    return {"config": str(config_path), "found": True, "parameters": shape.parameters}


def package_versions() -> dict[str, str]:
    out = {}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="The call's $OUT.")
    parser.add_argument("--device", default="cuda", help="cuda or cpu.")
    parser.add_argument("--tiny", action="store_true", help="The tiny model (rehearsal).")
    parser.add_argument("--budget-s", type=float, default=420.0, help="Start nothing after.")
    parser.add_argument("--deadline-s", type=float, default=525.0, help="Kill what runs at.")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"Of {', '.join(STAGES)}.")
    parser.add_argument("--limit", type=int, default=None, help="Points per cap/grid stage.")
    parser.add_argument("--bench-dir", type=Path, default=REPO / ".bench")
    parser.add_argument("--shared-dir", type=Path, default=REPO / ".gpu-shared")
    parser.add_argument("--site", type=Path, default=None, help="Install target of the wheels.")
    parser.add_argument("--peak-tflops", type=float, default=None)
    args = parser.parse_args(argv)
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stages {unknown}; known: {', '.join(STAGES)}")
    config = Config(
        out=args.out.resolve(),
        device=args.device,
        tiny=args.tiny,
        budget_s=args.budget_s,
        deadline_s=args.deadline_s,
        stages=tuple(s for s in STAGES if s in stages),
        limit=args.limit,
        bench=args.bench_dir.resolve(),
        shared=args.shared_dir.resolve(),
        site=args.site,
        peak_tflops=args.peak_tflops,
    )
    if args.tiny:
        config.point_timeout_s = config.speed_timeout_s = config.model_timeout_s = 120.0
        config.rollout_timeout_s = 120.0
        config.min_start_s = 10.0
        config.grid_steps = config.speed_steps = 2
        config.grid_warmup_steps = config.speed_warmup_steps = 1
        config.speed_rows = 80
    site = config.site or config.bench / "site"
    # Every subprocess sees the installed wheels and this checkout, offline and unbuffered.
    parts = [str(site), str(REPO), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in parts if p))
    os.environ.update(
        PYTHONUNBUFFERED="1",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        SFTKIT_DISABLE_PLUGIN_AUTOLOAD="1",
    )
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))
    return Session(config).main()


if __name__ == "__main__":
    raise SystemExit(main())
