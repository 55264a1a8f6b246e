"""The benchmark harness on CPU: FLOPs arithmetic, the random model, one grid point end to end
with a tiny model, and the report rendered from its JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import flops  # noqa: E402
from benchmarks.build_random_model import TINY_CONFIG  # noqa: E402

R1_CONFIG = REPO.parent / "shared" / "models" / "deepseek-r1-distill-llama-8b.json"


def _shape(config: dict):
    from sftkit.modelshape import shape_from_config

    return shape_from_config(config, name="test", source="test")


def _r1_config() -> dict:
    if R1_CONFIG.is_file():
        return json.loads(R1_CONFIG.read_text())
    # The same numbers, for checkouts without ../shared (see shared/models/README.md).
    return {
        **TINY_CONFIG,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "head_dim": 128,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
    }


def test_flops_of_the_8b_architecture_by_hand():
    shape = _shape(_r1_config())
    assert shape.parameters == 8_030_261_248
    # Per layer: q 4096x4096, k and v 1024x4096, o 4096x4096, gate/up/down 3 x 4096x14336.
    per_layer = 2 * 4096 * 4096 + 2 * 1024 * 4096 + 3 * 4096 * 14336
    assert per_layer == 218_103_808
    assert flops.matmul_parameters(shape) == 32 * per_layer + 128256 * 4096 == 7_504_658_432
    # 12 L (H Q) T = 12 * 32 * 4096 * 2048
    assert flops.attention_flops_per_token(shape, 2048) == 3_221_225_472
    assert flops.flops_per_token(shape, 2048) == 45_027_950_592 + 3_221_225_472
    assert flops.flops_per_token(shape, 512) == 45_027_950_592 + 805_306_368


def test_flops_of_the_tiny_model_by_hand():
    shape = _shape(TINY_CONFIG)
    # q 64x64, k and v 32x64, o 64x64, MLP 3 x 64x128, two layers; head 1024x64.
    assert flops.matmul_parameters(shape) == 2 * (4096 + 2048 + 2048 + 4096 + 24576) + 65536
    assert flops.flops_per_token(shape, 16) == 6 * 139_264 + 12 * 2 * 64 * 16 == 860_160


def test_mfu_and_device_table():
    h100 = flops.device_peak("NVIDIA H100 80GB HBM3")
    assert h100.flops == 989.4e12
    assert flops.device_peak("NVIDIA H100 PCIe").flops == 756e12
    assert flops.device_peak("NVIDIA H200").flops == 989.4e12
    assert flops.device_peak("NVIDIA A100-SXM4-40GB").flops == 312e12
    assert flops.device_peak("NVIDIA L40S").flops == 362.05e12
    assert flops.device_peak("NVIDIA L4").flops == 121e12
    assert flops.device_peak("cpu").flops is None
    assert flops.device_peak("cpu", override_tflops=1.5).flops == 1.5e12
    # 5,000 tokens/s of 48.25 GFLOP each on a 989.4 TFLOP/s device: 24.4%.
    value = flops.mfu(5000, 48_249_176_064, h100.flops)
    assert value == pytest.approx(5000 * 48_249_176_064 / 989.4e12)
    assert round(value, 4) == 0.2438
    assert flops.mfu(5000, 48_249_176_064, None) is None


# --------------------------------------------------------------------------- pure parts


def test_tokenizer_ids_fill_the_model_vocabulary():
    from benchmarks.data import synthetic_rows
    from benchmarks.tokenizer import SPECIAL, build_tokenizer

    texts = [f"{r['question']}\n{r['answer']}" for r in synthetic_rows(200)]
    tokenizer = build_tokenizer(texts, bos_token_id=1000, vocab_size=1024)
    assert len(tokenizer) == 1000 + len(SPECIAL) <= 1024
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (1000, 1001)
    assert tokenizer.pad_token_id not in (tokenizer.bos_token_id, tokenizer.eos_token_id)
    text = "Weng earns 12 dollars an hour. 48/2 = 24\n#### 24"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert max(ids) < 1000 and tokenizer.decode(ids) == text
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A"}], tokenize=False
    )
    assert chat == "<|begin_of_text|><|User|>Q?<|Assistant|>A<|end_of_text|>"
    with pytest.raises(ValueError, match="no room"):
        build_tokenizer(texts, bos_token_id=1022, vocab_size=1024)


def test_synthetic_rows_have_gsm8k_lengths():
    from benchmarks.data import ANSWER_CHARS, QUESTION_CHARS, long_rows, synthetic_rows

    rows = synthetic_rows(2000, seed=3)
    assert rows == synthetic_rows(2000, seed=3)
    mean_q = sum(len(r["question"]) for r in rows) / len(rows)
    mean_a = sum(len(r["answer"]) for r in rows) / len(rows)
    assert abs(mean_q - QUESTION_CHARS[0]) < 0.05 * QUESTION_CHARS[0]
    assert abs(mean_a - ANSWER_CHARS[0]) < 0.05 * ANSWER_CHARS[0]
    assert all(r["answer"].splitlines()[-1].startswith("#### ") for r in rows)
    assert all(len(r["answer"].split()) >= 300 for r in long_rows(3, min_words=300))


def test_grid_points_and_selections():
    from benchmarks.grid import grid_points, select

    points = grid_points()
    names = [p.name for p in points]
    assert len(points) == 42 == len(set(names))
    assert len(select(points, "full", (512, 2048))) == 42
    cap = select(points, "cap", (512, 2048))
    assert [p.name for p in cap] == [
        "seed-case-full-sft+adamw-cap40",
        "seed-case-qlora-nf4+paged-adamw-8bit-cap40",
    ]
    assert all(p.seq_len is None and p.overrides()[-1].startswith("optimizer.name=") for p in cap)
    core = select(points, "core", (512, 2048))
    assert len(core) == 15
    assert len(select(points, "cap,core,cap", (512, 2048))) == 17
    assert [p.name for p in select(points, "lora+*-s512-b1-gc", (512, 2048))] == [
        "lora+adamw-s512-b1-gc"
    ]
    with pytest.raises(SystemExit, match="matches no point"):
        select(points, "nope*", (512, 2048))


def test_every_grid_point_is_a_valid_recipe(registry):
    """Overrides are checked by sftkit's own loader (torch-free), so a typo fails here, not on
    the GPU machine."""
    from benchmarks.grid import grid_points
    from sftkit.recipe.load import load_recipe

    for point in grid_points():
        recipe = load_recipe(str(point.recipe), point.overrides(), registry=registry).recipe
        assert (recipe.strategy.name, recipe.optimizer.name) == (point.strategy, point.optimizer)
        if point.seq_len is not None:
            assert recipe.training.max_seq_length == point.seq_len
            assert recipe.training.micro_batch_size == point.batch
            assert recipe.training.gradient_checkpointing is point.checkpointing


def test_phase_meter_folds_repeated_phases_on_cpu():
    from benchmarks.phases import PhaseMeter

    meter = PhaseMeter("cpu")
    meter.start("load")
    meter.start("forward_backward")  # ends load
    assert meter.current == "forward_backward"
    meter.end()
    for _ in range(3):
        meter.start("later_steps")
        meter.end()
    phases = meter.as_dict()
    assert list(phases) == ["load", "forward_backward", "later_steps"]
    assert all(p["peak_allocated"] is None and p["host_max_rss"] > 0 for p in phases.values())
    with pytest.raises(RuntimeError):
        meter.end()


GiB = 2**30


def _gpu_point(name: str, phases: dict, measured: dict, paged: dict | None = None) -> dict:
    from benchmarks.report import POINT_SCHEMA

    return {
        "schema": POINT_SCHEMA,
        "name": name,
        "point": {"cap_gib": 40.0},
        "device": {"type": "cuda", "name": "NVIDIA H100 80GB HBM3"},
        "predicted": {
            "budget_bytes": 40 * GiB,
            "phases": {**phases, "evaluation": 99 * GiB},  # not run by the grid: ignored
            "paged_bytes": paged or {},
        },
        "measured": measured,
    }


def test_report_judges_error_and_verdicts():
    from benchmarks.report import judge, prediction

    ran = _gpu_point(
        "qlora",
        {
            "load": 8 * GiB,
            "forward_backward": 18 * GiB,
            "optimizer_step": 9 * GiB,
            "later_steps": 18 * GiB,
        },
        {"completed": True, "oom": False, "peak_device_used": 20 * GiB},
        paged={"optimizer_step": 1 * GiB, "later_steps": 1 * GiB},
    )
    j = judge(ran)
    # later_steps: 18 GiB on the device + 1 GiB paged state resident = 19 GiB vs 20 measured.
    assert j["prediction"].used_bytes == 19 * GiB and j["prediction"].phase == "later_steps"
    assert j["verdict"] == "right" and j["error_pct"] == pytest.approx(-5.0)

    oom = _gpu_point(
        "full-adamw",
        {
            "load": 17 * GiB,
            "forward_backward": 39 * GiB,
            "optimizer_step": 63 * GiB,
            "later_steps": 70 * GiB,
        },
        {"completed": False, "oom": True, "oom_phase": "optimizer_step"},
    )
    j = judge(oom)
    assert j["prediction"].first_over == "optimizer_step" and not j["prediction"].fits
    assert (j["verdict"], j["phase_right"], j["error_pct"]) == ("right", True, None)

    # Predicted to fit, but it ran out of memory: wrong. Paged state beyond the budget spills.
    wrong = _gpu_point(
        "x",
        {
            "load": 1 * GiB,
            "forward_backward": 39 * GiB,
            "optimizer_step": 30 * GiB,
            "later_steps": 39 * GiB,
        },
        {"completed": False, "oom": True, "oom_phase": "forward_backward"},
        paged={"later_steps": 5 * GiB},
    )
    assert prediction(wrong["predicted"]).used_bytes == 40 * GiB
    assert judge(wrong)["verdict"] == "wrong" and judge(wrong)["phase_right"] is False


def test_report_renders_points_and_speed(tmp_path):
    from benchmarks.report import SPEED_SCHEMA, render

    (tmp_path / "a.json").write_text(
        json.dumps(
            _gpu_point(
                "qlora",
                {
                    "load": 8 * GiB,
                    "forward_backward": 18 * GiB,
                    "optimizer_step": 9 * GiB,
                    "later_steps": 18 * GiB,
                },
                {
                    "completed": True,
                    "peak_device_used": 20 * GiB,
                    "tokens_per_second": 3000,
                    "mfu": 0.25,
                },
                paged={"later_steps": 1 * GiB},
            )
        )
    )
    speed = {
        "schema": SPEED_SCHEMA,
        "name": "cmp",
        "device": {"type": "cuda", "name": "H100"},
        "runs": [
            {
                "name": "baseline",
                "role": "baseline",
                "tokens_per_second": 1000,
                "peak_device_used": 10 * GiB,
            },
            {
                "name": "sftkit",
                "role": "sftkit",
                "tokens_per_second": 1600,
                "peak_device_used": 9 * GiB,
            },
        ],
    }
    (tmp_path / "speed.json").write_text(json.dumps(speed))
    (tmp_path / "junk.json").write_text("[1, 2]")
    text = render([tmp_path])
    assert "| qlora | 40 GiB | 19.00 (later_steps) | fits | 20.00 (–) |" in text
    assert "| -5.0 | right | 3,000 | 25.0% |" in text
    assert (
        "1 GPU point(s): verdict right for 1 of 1; estimate within 10% of the measured peak for 1 of 1"
        in text
    )
    assert "| sftkit | 1,600 | 1.60x | 9.00 |" in text
    assert "target (>= 1.5x at no more memory) met" in text


# --------------------------------------------------------------------------- end to end on CPU


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from benchmarks.build_random_model import build

    out = tmp_path_factory.mktemp("bench") / "tiny-random"
    record = build(TINY_CONFIG, out, device="cpu", seed=0)
    assert not record["reused"]
    assert build(TINY_CONFIG, out, device="cpu", seed=0)["reused"]
    return out, record


def test_random_model_directory_loads_like_a_checkpoint(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, record = tiny_model
    shape = _shape(TINY_CONFIG)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.num_parameters() == shape.parameters == record["parameters"] == 205_120
    assert record["weight_bytes"] == 2 * shape.parameters  # bf16
    assert model.dtype == torch.bfloat16
    assert torch.equal(model.model.norm.weight, torch.ones(64, dtype=torch.bfloat16))
    assert 0.015 < model.lm_head.weight.float().std().item() < 0.025
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.eos_token_id == TINY_CONFIG["eos_token_id"] and len(tokenizer) <= 1024


def _run_module(args: list[str]) -> str:
    import subprocess

    env = {**__import__("os").environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _rehearse(out: Path, bench: Path, **env: str) -> tuple[list[dict], str]:
    """`benchmarks/run_gpu.sh` as the device call runs it, on the CPU with the tiny model."""
    import os
    import subprocess

    environment = {
        **os.environ,
        "PYTHON": sys.executable,
        "PYTHONPATH": str(REPO),
        "DEVICE": "cpu",
        "TINY": "1",
        "OUT": str(out),
        "BENCH_DIR": str(bench),
        **env,
    }
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "run_gpu.sh")],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from benchmarks.lines import read_lines

    return read_lines(out / "points.jsonl"), proc.stdout


def _check_out_folder(out: Path, lines: list[dict]) -> None:
    """What the device call brings back: the three files, every line valid, the report whole."""
    from benchmarks.lines import MAX_OUT_FILES, OUT_FILES, validate_line
    from benchmarks.report import SESSION_SECTIONS

    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted(OUT_FILES) and len(files) <= MAX_OUT_FILES
    assert [problem for line in lines for problem in validate_line(line)] == []
    assert lines[0]["kind"] == "setup" and lines[-1]["kind"] == "end"
    assert len({line["session"]["id"] for line in lines}) == 1
    report = (out / "report.md").read_text()
    assert report.startswith("# CPU rehearsal with the tiny model (not GPU figures)")
    positions = [report.index(section) for section in SESSION_SECTIONS]
    assert positions == sorted(positions)
    log = (out / "run.log").read_text()
    assert "=== setup ===" in log and "done:" in log


def test_session_rehearsal_one_point_per_stage_on_cpu(tmp_path):
    """The one-call session on CPU, one point per stage (the full rehearsal is
    test_full_rehearsal_on_cpu): the files it leaves, and each kind of line checked through
    the real path (estimate-memory --json, sftkit's runner under the measuring callback, the
    seed's TRL script)."""
    out = tmp_path / "out"
    lines, stdout = _rehearse(
        out,
        tmp_path / "bench",
        STAGES="setup,model,cap,speed,grid",
        LIMIT="1",
        SHARED_DIR=str(tmp_path / "no-shared"),  # as in a fresh checkout: generated rows
    )
    _check_out_folder(out, lines)
    from benchmarks.grid import LOWMEM_RECIPE

    kinds = [line["kind"] for line in lines]
    # the seed's script and sftkit's QLoRA recipe, and the low-memory recipe where it exists
    speeds = ["speed"] * (3 if (REPO / "recipes" / LOWMEM_RECIPE).is_file() else 2)
    assert kinds == ["setup", "model", "cap", *speeds, "grid", "end"]
    by_name = {line["name"]: line for line in lines}
    assert "commit points.jsonl, report.md as benchmarks/results/cpu-" in stdout

    setup = by_name["setup"]
    assert setup["device"]["type"] == "cpu" and setup["versions"]["torch"]
    assert setup["carry"]["limit_bytes"] == 64 * 2**20 and setup["missing_modules"] == []
    model = by_name["tiny-random"]["model"]
    assert model["parameters"] == 205_120 and model["config"]["hidden_size"] == 64

    cap = by_name["seed-case-full-sft+adamw-cap40"]
    assert cap["point"]["cap_gib"] == 40.0 and cap["device"]["cap_bytes"] is None  # no CPU cap
    assert cap["recipe_resolved"]["strategy"]["name"] == "full-sft"

    name = "qlora-nf4+paged-adamw-8bit-s128-b1-gc"
    record = by_name[name]
    predicted, measured = record["predicted"], record["measured"]
    assert predicted["exit_code"] == 0 and predicted["budget"]["kind"] == "cpu"
    assert set(predicted["phases"]) >= {"load", "forward_backward", "optimizer_step", "later_steps"}
    assert measured["completed"] and not measured["oom"] and measured["error"] is None
    assert list(measured["phases"]) == ["load", "forward_backward", "optimizer_step", "later_steps"]
    assert all(
        p["host_max_rss"] > 0 and p["peak_allocated"] is None for p in measured["phases"].values()
    )
    # Every step is exactly one micro-batch of the full sequence length.
    assert [s["tokens"] for s in measured["steps"]] == [128, 128, 128]
    assert measured["measured_tokens"] == 256 and measured["tokens_per_second"] > 0
    assert measured["flops_per_token"] == flops.flops_per_token(_shape(TINY_CONFIG), 128)
    assert measured["mfu"] is None  # no MFU on a CPU
    # The tensors that exist, exactly: the LoRA adapters and their gradients, the optimizer state.
    census = measured["census"]
    assert (
        census["parameters"]["frozen uint8"]
        == sum(g.total for g in _shape(TINY_CONFIG).linear_groups()) // 2
    )  # NF4: two weights per byte
    assert measured["trainable_parameters"] == predicted["trainable_parameters"]
    assert census["gradients"] > 0 and census["optimizer_state"]["device"] > 0
    assert record["recipe_resolved"]["training"]["max_seq_length"] == 128
    assert record["model"]["config"]["num_hidden_layers"] == 2

    speed = {line["name"]: line for line in lines if line["kind"] == "speed"}
    lowmem = {"sftkit-lowmem"} if len(speeds) == 3 else set()
    assert set(speed) == {"baseline", "sftkit"} | lowmem
    for run in speed.values():
        assert run["measured"]["completed"], run
        assert run["tokens_per_second"] > 0 and run["mean_tokens_per_example"] > 50
        assert run["peak_device_used"] is None and run["host_max_rss"] > 0
    assert speed["baseline"]["micro_batch_size"] == 1  # the seed's 1 x 8 (8 -> 1 tiny)
    assert speed["baseline"]["kernels"]["loss_head"] == "trl"
    assert speed["sftkit"]["kernels"]["attention"] == "sdpa"  # the recipe's dense mask
    assert speed["sftkit"]["recipe_file"] == "r1_gsm8k_qlora.yaml"

    report = (out / "report.md").read_text()
    assert f"| {name} |" in report and "CPU smoke, ran" in report and "n/a (CPU)" in report
    assert "| baseline |" in report and "| sftkit |" in report
    assert "must run out of memory at optimizer_step; ran uncapped (CPU" in report
    end = lines[-1]
    assert "lora+adamw-s128-b1-gc" not in end["not_started"]  # LIMIT, not the budget


def test_session_eval_stage_on_cpu(tmp_path):
    """The eval stage (docs/benchmarks.md): today's settings, the new path and the static
    cache on one loaded model, each variant's rate and the extrapolated 1,319-problem time."""
    out = tmp_path / "out"
    lines, _ = _rehearse(
        out, tmp_path / "bench", STAGES="model,eval", SHARED_DIR=str(tmp_path / "no-shared")
    )
    from benchmarks.lines import validate_line

    (line,) = [line for line in lines if line["kind"] == "eval"]
    assert validate_line(line) == [] and "failed" not in line, line.get("log_tail")
    assert "synthetic" in line["data"]  # no carried GSM8K: rows of its length
    variants = line["variants"]
    assert list(variants) == ["today", "new", "new-static"]
    assert variants["today"]["batch_size_used"] == 8 and not variants["today"]["merged_copy_used"]
    assert variants["new"]["merged_copy_used"]  # NF4 base, and host RAM has room for the copy
    for v in variants.values():
        assert v["n"] == 8 and v["problems_per_second"] > 0
        # the line rounds seconds to 0.01 s, so the extrapolation may differ by 1319/8 of that
        slack = 1319 / 8 * 0.005 + 0.05
        assert v["gsm8k_test_seconds"] == pytest.approx(1319 * v["seconds"] / 8, abs=slack)
    assert "## Evaluation: the GSM8K test" in (out / "report.md").read_text()


def test_session_rollout_stage_on_cpu(tmp_path):
    """The rollout stage: `estimate-memory recipes/r1_gsm8k_grpo.yaml --measure --json` on
    the session's model, the KV cache and the kept log-probabilities byte for byte (a CPU
    measures no peak), one line and its report section."""
    out = tmp_path / "out"
    lines, stdout = _rehearse(out, tmp_path / "bench", STAGES="model,rollout")
    from benchmarks.lines import validate_line

    (line,) = [line for line in lines if line["kind"] == "rollout"]
    assert validate_line(line) == [] and "failed" not in line, line.get("log_tail")
    assert line["returncode"] == 0 and line["recipe_file"] == "r1_gsm8k_grpo.yaml"
    assert "~model.adapter" in line["overrides"] and "hardware.gpu=cpu" in line["overrides"]
    assert line["predicted"]["phases"]["rollout"] > 0 and line["measured"]["device"] == "cpu"
    summary = line["rollout"]
    # 8 x 4 completions of 32 tokens after the 64-token prompt (the tiny sizes)
    assert "micro-batch 8 x 96 tokens" in summary["setting"] and summary["ok"] is True
    assert summary["measured"] is None and summary["predicted"]["device used"] > 0
    rows = {row["what"]: row for row in summary["rows"]}
    assert set(rows) == {
        "rollout: KV cache, 95 of 96 tokens",
        "rollout: reference log-probabilities",
    }
    assert all(r["exact"] and r["predicted_bytes"] == r["measured_bytes"] for r in rows.values())
    # 2 layers x keys and values x 32 sequences x 95 tokens x 2 KV heads x 16 x fp32
    assert (
        rows["rollout: KV cache, 95 of 96 tokens"]["measured_bytes"] == 2 * 2 * 32 * 95 * 2 * 16 * 4
    )
    assert "rollout: ok on cpu; rollout: KV cache, 95 of 96 tokens: 1,556,480 predicted" in stdout
    report = (out / "report.md").read_text()
    section = report[report.index("## GRPO's rollout phase") : report.index("## Estimator grid")]
    assert "Measure mode on cpu: **ok** (exit code 0)" in section
    assert "not measured (CPU smoke: no CUDA counters" in section
    assert "| rollout: KV cache, 95 of 96 tokens | 1,556,480 | 1,556,480 | ok |" in section


def test_session_records_a_failed_rollout_and_goes_on(tmp_path):
    """A rollout process that exits without a result (here estimate-memory's bad input: no
    model) keeps its line, saying why; the session goes on to its end."""
    session = _session(tmp_path)
    session.model_dir = tmp_path / "no-model"
    session.stage_rollout()
    assert session.may_start("grid")  # nothing stopped
    session.finish()
    from benchmarks.lines import read_lines, validate_line

    rollout, end = read_lines(tmp_path / "out" / "points.jsonl")
    assert validate_line(rollout) == [] and rollout["kind"] == "rollout"
    assert rollout["failed"] == "exit code 2" and rollout["returncode"] == 2
    assert "no-model" in rollout["log_tail"] and "rollout" not in rollout
    assert end["kind"] == "end" and end["not_started"] == []
    report = (tmp_path / "out" / "report.md").read_text()
    assert "- r1_gsm8k_grpo.yaml: failed (exit code 2); measure mode printed no result" in report


def test_rollout_report_on_cuda_says_predicted_against_measured_peak():
    """The rollout section of a CUDA line: the rollout phase's three peaks with their error,
    the term rows, a mismatch named (byte counts made up: no GPU figure)."""
    from benchmarks.report import render_rollout
    from benchmarks.rollout import PEAK_ROW, summarize

    def row(what, predicted, measured, exact):
        ok = predicted == measured if exact else abs(predicted - measured) <= 0.1 * measured
        return {"what": what, "predicted_bytes": predicted, "measured_bytes": measured,
                "exact": exact, "ok": ok}  # fmt: skip

    rows = [
        row("weights", 100, 100, True),
        row("rollout: KV cache, 767 of 768 tokens", 2000, 2000, True),
        row("rollout: reference log-probabilities", 64, 32, True),
        row(f"{PEAK_ROW}: allocated", 900, 1000, False),
        row(f"{PEAK_ROW}: reserved", 1000, 1000, False),
        row(f"{PEAK_ROW}: device used", 1500, 1200, False),
        row("first forward/backward: device used", 1000, 1000, False),
    ]
    estimate = {
        "setting": "s",
        "phase_figures": {"rollout": {"allocated": 900, "reserved": 1000, "device_used": 1500}},
        "measured": {"device": "a card", "ok": False, "rows": rows, "notes": ["rollout: n"]},
    }
    summary = summarize(estimate)
    assert summary["measured"] == {"allocated": 1000, "reserved": 1000, "device used": 1200}
    assert summary["peak_ok"] == {"allocated": True, "reserved": True, "device used": False}
    assert [r["what"] for r in summary["rows"]] == [r["what"] for r in rows[1:3]]
    line = {"recipe_file": "r.yaml", "overrides": ["a=b"], "device": {"type": "cuda"},
            "returncode": 1, "rollout": summary, "measured": estimate["measured"]}  # fmt: skip
    text = render_rollout([line])
    assert "Measure mode on a card: **MISMATCH** (exit code 1)" in text
    assert "| allocated | 0.00 | 0.00 | -10.0 | ok |" in text
    assert "| device used | 0.00 | 0.00 | +25.0 | OFF |" in text
    assert "| rollout: reference log-probabilities | 64 | 32 | MISMATCH |" in text
    assert "other rows (the static terms; on CUDA each phase's peaks): 2 of 2 ok." in text
    assert "- rollout: n" in text and "_Not run._" in render_rollout([])


def test_run_gpu_runs_every_stage_by_default():
    from benchmarks.lines import STAGES

    script = (REPO / "benchmarks" / "run_gpu.sh").read_text()
    assert f"${{STAGES:-{','.join(STAGES)}}}" in script


@pytest.mark.slow
@pytest.mark.skipif(
    __import__("os").environ.get("SFTKIT_REHEARSAL") != "1",
    reason="the full CPU rehearsal (about 3 minutes): nox -s rehearsal, or SFTKIT_REHEARSAL=1",
)
def test_full_rehearsal_on_cpu(tmp_path):
    """`DEVICE=cpu TINY=1 bash benchmarks/run_gpu.sh`: every stage, under 3 minutes, and the
    carry (this checkout's .whl and .gpu-shared, filled by benchmarks/prepare_carry.sh) under
    the 64 MiB a device call may carry."""
    import time

    from benchmarks.lines import STAGES

    out = tmp_path / "out"
    started = time.monotonic()
    lines, _ = _rehearse(out, tmp_path / "bench")
    seconds = time.monotonic() - started
    _check_out_folder(out, lines)
    assert {line["kind"] for line in lines} == {*STAGES, "end"}
    assert [line for line in lines if line.get("failed")] == []
    assert lines[-1]["not_started"] == [] and seconds < 180, seconds
    setup = lines[0]
    assert setup["carry"]["ok"], setup["carry"]["problems"]
    assert setup["install"]["rc"] == 0 and setup["install"]["checked_only"]
    model = next(line for line in lines if line["kind"] == "model")
    assert model["architecture"]["parameters"] == 8_030_261_248
    assert sum(line["kind"] == "grid" for line in lines) >= 5


# --------------------------------------------------------------------------- the session's parts


def test_session_points_run_the_most_informative_first():
    from benchmarks.grid import LOWMEM_RECIPE, RECIPES, grid_points, session_points

    points = session_points()
    names = [p.name for p in points]
    assert names[:5] == [
        "qlora-nf4+paged-adamw-8bit-s2048-b1-gc",
        "lora+adamw-s2048-b1-gc",
        "qlora-nf4+paged-adamw-8bit-s512-b4-nogc",
        "full-sft+paged-adamw-8bit-s512-b1-gc",
        "lora-8bit+adamw-8bit-s1024-b1-gc",
    ]
    lowmem = (RECIPES / LOWMEM_RECIPE).is_file()
    assert ("r1_gsm8k_qlora_lowmem-s2048-b1" in names) is lowmem
    assert len(names) == len(set(names))
    # After the named ones, every point of the grid (not the cap, which is its own stage).
    grid = {p.name for p in grid_points() if p.cap_gib is None}
    assert grid <= set(names) and len(names) == len(grid) + 1 + lowmem
    tiny = session_points({512: 64, 1024: 96, 2048: 128}, first_only=True)
    assert [p.seq_len for p in tiny[:5]] == [128, 128, 64, 64, 96]


def test_every_session_point_is_a_valid_recipe(registry):
    from benchmarks.grid import session_points
    from sftkit.recipe.load import load_recipe

    for point in session_points(first_only=True):
        recipe = load_recipe(str(point.recipe), point.overrides(), registry=registry).recipe
        assert (recipe.training.max_seq_length, recipe.training.micro_batch_size) == (
            point.seq_len,
            point.batch,
        )


def _line(kind: str = "grid", **extra) -> dict:
    from benchmarks.lines import LINE_SCHEMA

    base = {
        "schema": LINE_SCHEMA,
        "kind": kind,
        "name": "x",
        "session": {"id": "s"},
        "started_s": 1.0,
        "wall_seconds": 2.0,
    }
    return {**base, **extra}


def test_line_schema_names_what_is_missing():
    from benchmarks.lines import validate_line

    assert validate_line(_line("tests", returncode=0, summary="4 skipped")) == []
    assert validate_line(_line("end", not_started=[], budget_s=420)) == []
    assert validate_line(_line("end", not_started=[], budget_s=True)) == [
        "end 'x': 'budget_s' is bool"
    ]
    assert validate_line(_line("nope")) == ["nope 'x': unknown kind (one of setup, model, "
                                            "cap, speed, fast, eval, rollout, grid, tests, "
                                            "end)"]  # fmt: skip
    rollout = _line("rollout", device={}, returncode=0, predicted={}, measured={})
    assert validate_line(rollout) == [
        "rollout 'x': no 'rollout' (a line that measured summarizes it)"
    ]
    assert validate_line({**rollout, "failed": "exit code 2", "returncode": 2}) == []
    point = _line(
        point={}, device={}, versions={}, predicted={"phases": {}},
        measured={"completed": True, "phases": {"load": {"seconds": 1}}},
    )  # fmt: skip
    problems = validate_line(point)
    assert "grid 'x': measured has no 'oom_phase'" in problems
    assert any("measured phase load lacks peak_allocated" in p for p in problems)
    assert "grid 'x': no 'recipe_resolved' (needed to re-estimate it later)" in problems
    # A point that died keeps its line and is not held to the measured schema.
    died = {**point, "failed": "timed out after 200 s", "measured": {"completed": False}}
    assert validate_line(died) == []
    assert validate_line([1]) == ["a line is list, not an object"]


def test_points_file_keeps_complete_lines_only(tmp_path):
    from benchmarks.lines import append_line, read_lines

    path = tmp_path / "points.jsonl"
    append_line(path, _line("tests", returncode=0, summary="ok"))
    with path.open("a") as handle:
        handle.write('{"kind": "grid", "name": "cut sho')  # a call killed mid-write
    assert [line["kind"] for line in read_lines(path)] == ["tests"]


def _session(tmp_path, **config):
    from benchmarks.session import Config, Session

    return Session(Config(out=tmp_path / "out", device="cpu", bench=tmp_path / "b", **config))


def test_session_starts_nothing_past_its_budget_and_kills_at_its_deadline(tmp_path):
    import time

    session = _session(tmp_path, budget_s=1.0, deadline_s=2.0, min_start_s=0.5)
    assert session.may_start("first")
    started = time.monotonic()
    outcome = session.run(
        [sys.executable, "-c", "import time; print('sleeping', flush=True); time.sleep(60)"],
        60, what="sleeper",
    )  # fmt: skip
    assert outcome.reason == "killed at the deadline" and time.monotonic() - started < 10
    assert "sleeping" in outcome.log_tail
    assert not session.may_start("second") and not session.may_start("third")
    session.finish()
    from benchmarks.lines import read_lines

    end = read_lines(tmp_path / "out" / "points.jsonl")[-1]
    assert end["kind"] == "end" and end["not_started"] == ["second", "third"]
    log = (tmp_path / "out" / "run.log").read_text()
    assert "sleeping" in log and "second and what follows: not started (past the 1 s budget)" in log
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Stopped by the budget or the deadline: second, third." in report


def test_session_results_folder_is_device_and_date(tmp_path):
    session = _session(tmp_path)
    assert session.results_dir_name() == f"cpu-{session.date}"
    session.device.update(type="cuda", name="NVIDIA H200")
    assert session.results_dir_name() == f"nvidia-h200-{session.date}"
    session.device["name"] = "NVIDIA H100 80GB HBM3"
    assert session.results_dir_name() == f"nvidia-h100-80gb-hbm3-{session.date}"


def test_carry_check_counts_the_tree_and_the_carried_folders(tmp_path):
    from benchmarks.carry import LIMIT_BYTES, carry_report, tree_bytes, wheel_problems

    (tmp_path / "src.py").write_text("x" * 1000)
    (tmp_path / ".bench").mkdir()
    (tmp_path / ".bench" / "model.safetensors").write_bytes(b"\0" * 5000)  # never carried
    assert tree_bytes(tmp_path) == 1000  # no git here: the walk skips ignored folders
    whl = tmp_path / ".whl"
    whl.mkdir()
    for name in ("trl-1.16.0-py3-none-any.whl", "trl-1.17.0-py3-none-any.whl"):
        (whl / name).write_bytes(b"w")
    with (whl / "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl").open("wb") as f:
        f.truncate(LIMIT_BYTES)  # sparse: its size without the disk space
    files, problems = wheel_problems(whl)
    assert len(files) == 3
    assert problems[0] == "two versions of trl in .whl/ (1.16.0, 1.17.0): the install stops"
    assert problems[1].startswith(".whl/ lacks datasets, dill")
    report = carry_report(tmp_path)
    assert report["paths"] == {".whl": LIMIT_BYTES + 2, ".gpu-shared": None}
    assert report["total_bytes"] == LIMIT_BYTES + 1002 and not report["ok"]
    assert any("over the 64 MiB a call may carry" in p for p in report["problems"])
    assert any(p.startswith(".gpu-shared/models/deepseek") for p in report["problems"])


# --------------------------------------------------------------------------- the regression test


def _committed_points() -> list[tuple[str, dict]]:
    from benchmarks.regression import measured_points, result_files

    return [(path.parent.name, line) for path in result_files() for line in measured_points(path)]


def test_committed_results_are_found_and_valid():
    """At least the CPU rehearsal is committed; any GPU folder is found the same way."""
    from benchmarks.lines import read_lines, validate_line
    from benchmarks.regression import RESULTS, result_files

    files = result_files()
    assert files, f"no */points.jsonl under {RESULTS}"
    assert any(path.parent.name.startswith("cpu-") for path in files)
    for path in files:
        lines = read_lines(path)
        assert [problem for line in lines for problem in validate_line(line)] == [], path
        devices = {line["session"]["device"] for line in lines}
        assert len(devices) == 1 and (devices == {"cpu"}) == path.parent.name.startswith("cpu-")


@pytest.mark.parametrize(
    "folder,line",
    _committed_points(),
    ids=[f"{f}/{line['name']}" for f, line in _committed_points()],
)
def test_committed_measurement_holds_with_the_current_estimator(folder, line):
    """Every committed point, re-estimated now: within 10% of the measured device-used and
    every verdict right on a GPU (the cap included); exact census and verdict on a CPU."""
    from benchmarks.regression import check_line, reestimate

    check = check_line(line, reestimate(line))
    assert check.ok, f"{folder}/{check.name}: " + "; ".join(check.problems)


def _cpu_line() -> dict:
    import copy

    line = next(line for _, line in _committed_points() if line["name"].startswith("qlora"))
    return copy.deepcopy(line)


def test_regression_check_catches_a_miss_on_a_gpu_point():
    """A committed point dressed as a GPU measurement: the check follows the measured peak
    and the verdict, so a drifting estimator fails."""
    from benchmarks.regression import check_line, reestimate
    from benchmarks.report import prediction

    line = _cpu_line()
    fresh = reestimate(line)
    predicted = prediction(fresh).used_bytes
    line["device"] = {"type": "cuda", "name": "NVIDIA H200"}
    line["measured"].update(completed=True, oom=False, peak_device_used=int(predicted / 1.05))
    check = check_line(line, fresh)
    assert check.ok and check.verdict == "right" and check.error_pct == pytest.approx(5, abs=0.01)
    line["measured"]["peak_device_used"] = int(predicted / 0.8)  # the estimate 20% low
    check = check_line(line, fresh)
    assert not check.ok and "-20.0% off the measured peak device-used" in check.problems[0]
    # It ran out of memory although the estimate says it fits: the verdict is wrong.
    line["measured"].update(completed=False, oom=True, oom_phase="optimizer_step")
    check = check_line(line, fresh)
    assert check.problems[0] == (
        "verdict wrong: the estimate fits, the point ran out of memory in optimizer_step"
    )
    # Predicted out of memory at a phase (a budget below it), measured elsewhere.
    small = {**fresh, "budget_bytes": fresh["phases"]["forward_backward"] - 1}
    line["measured"]["oom_phase"] = "load"
    check = check_line(line, small)
    assert check.verdict == "right" and check.problems == [
        "out-of-memory phase wrong: predicted forward_backward, measured load"
    ]
    line["measured"].update(oom=False, error="timed out after 200 s")
    assert not check_line(line, fresh).judged


def test_regression_check_catches_a_miss_on_a_cpu_point():
    from benchmarks.regression import check_line, reestimate

    line = _cpu_line()
    fresh = reestimate(line)
    assert check_line(line, fresh).ok
    line["measured"]["census"]["gradients"] *= 2
    line["measured"]["trainable_parameters"] += 1
    problems = check_line(line, fresh).problems
    assert problems[0].startswith("trainable parameters: measured")
    assert problems[1].startswith("gradient bytes: counted") and "(-50.0%)" in problems[1]


# --------------------------------------------------------------------------- on a GPU


@pytest.mark.gpu
def test_session_on_cuda_one_point_per_stage(tmp_path):
    """The one-call session on CUDA with the tiny model: CUDA peaks in every phase, the cap
    applied, every verdict right, and the regression check passing on what it measured."""
    from benchmarks.regression import check_line, reestimate

    out = tmp_path / "out"
    lines, _ = _rehearse(
        out, tmp_path / "bench", DEVICE="cuda", STAGES="setup,model,cap,grid", LIMIT="1"
    )
    points = [line for line in lines if line["kind"] in ("cap", "grid")]
    assert [line["kind"] for line in points] == ["cap", "grid"]
    assert points[0]["device"]["cap_bytes"] == 40 * 2**30
    for line in points:
        measured = line["measured"]
        assert measured["completed"], measured.get("error")
        for phase in measured["phases"].values():
            assert 0 < phase["peak_allocated"] <= phase["peak_reserved"] < phase["peak_device_used"]
        check = check_line(line, reestimate(line))
        assert check.verdict == "right" and check.judged


@pytest.mark.gpu
def test_phase_meter_sees_cuda_allocations():
    import torch

    from benchmarks.phases import PhaseMeter

    meter = PhaseMeter("cuda")
    meter.start("alloc")
    block = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    record = meter.end()
    del block
    meter.close()
    assert record.peak_allocated >= 256 * 2**20
    assert record.peak_reserved >= record.peak_allocated
    # The driver's view adds the CUDA context to what the allocator reserved.
    assert record.peak_device_used > record.peak_reserved


@pytest.mark.gpu
def test_grid_points_on_cuda_record_cuda_peaks(tiny_model, tmp_path):
    from benchmarks.report import judge

    model_dir, _ = tiny_model
    names = "qlora-nf4+paged-adamw-8bit-s96-b1-gc,full-sft+adamw-s96-b4-nogc"
    _run_module(
        ["benchmarks.grid", "--model-dir", str(model_dir), "--out", str(tmp_path), "--device", "cuda",
         "--seq-lens", "96,128", "--select", names, "--steps", "2", "--peak-tflops", "100"]
    )  # fmt: skip
    for name in names.split(","):
        record = json.loads((tmp_path / f"{name}.json").read_text())
        measured = record["measured"]
        assert record["device"]["type"] == "cuda" and measured["completed"], measured.get("error")
        for phase in measured["phases"].values():
            assert 0 < phase["peak_allocated"] <= phase["peak_reserved"] < phase["peak_device_used"]
        assert 0 < measured["mfu"] < 1
        assert judge(record)["verdict"] == "right"  # a tiny model fits any card


@pytest.mark.gpu
def test_out_of_memory_is_recorded_with_its_phase(tiny_model, tmp_path):
    """Under a cap smaller than the weights the point runs out of memory while loading, and
    the estimator (asked about the same cap) says so."""
    from benchmarks.grid import Point, Settings, run_point
    from benchmarks.report import judge

    model_dir, record = tiny_model
    cap_gib = record["weight_bytes"] / 4 / 2**30
    settings = Settings(
        model_dir=str(model_dir), out=str(tmp_path), device="cuda", steps=1, warmup_steps=1,
        data_dir=str(tmp_path / "data"), timeout_s=300,
    )  # fmt: skip
    result = run_point(Point("full-sft", "adamw", None, None, None, cap_gib=cap_gib), settings)
    measured = result["measured"]
    assert measured["oom"] and measured["oom_phase"] == "load", measured
    verdict = judge(result)
    assert verdict["verdict"] == "right" and verdict["phase_right"]


@pytest.mark.gpu
def test_speed_comparison_on_cuda_with_liger(tiny_model, tmp_path):
    pytest.importorskip("liger_kernel")
    model_dir, _ = tiny_model
    _run_module(
        ["benchmarks.compare_speed", "--model-dir", str(model_dir), "--out", str(tmp_path),
         "--device", "cuda", "--steps", "2", "--warmup-steps", "1", "--rows", "200",
         "--variants", "sftkit-no-liger", "--override", "training.max_seq_length=256",
         "--override", "data.format.options.dev_size=4"]
    )  # fmt: skip
    runs = {r["name"]: r for r in json.loads((tmp_path / "speed.json").read_text())["runs"]}
    assert set(runs) == {"baseline", "sftkit", "sftkit-no-liger"}
    for run in runs.values():
        assert run["measured"]["completed"], run
        assert run["peak_device_used"] > run["peak_allocated"] > 0


def test_optimizer_state_census_counts_shared_storage_once():
    """bitsandbytes gives every 8-bit state the same quantization maps: counted once."""
    import bitsandbytes as bnb
    import torch

    from benchmarks.point import state_census

    params = [torch.nn.Parameter(torch.randn(8192)) for _ in range(3)]
    optimizer = bnb.optim.AdamW8bit(params, min_8bit_size=4096)
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer.step()
    # Per tensor: two uint8 states (8192 B each) and two fp32 absmax of 32 blocks; two shared
    # 256-entry fp32 maps for all three.
    assert state_census(optimizer) == {
        "device": 3 * (2 * 8192 + 2 * 32 * 4) + 2 * 256 * 4,
        "paged": 0,
    }


def test_the_seed_baseline_uses_the_seeds_exact_settings():
    from benchmarks.seed_baseline import SEED_LORA, SEED_TRAINING, formatting_func

    assert "target_modules" not in SEED_LORA  # PEFT's default for Llama: q_proj, v_proj
    assert (SEED_LORA["r"], SEED_LORA["lora_alpha"], SEED_LORA["lora_dropout"]) == (32, 16, 0.05)
    assert SEED_TRAINING == {
        "num_train_epochs": 1,
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 8,
        "learning_rate": 5e-5,
        "logging_steps": 10,
        "save_strategy": "epoch",
        "max_length": 2048,
        "gradient_checkpointing": True,
        "optim": "paged_adamw_8bit",
    }
    text = formatting_func({"question": "1 + 1?", "answer": "2\n#### 2"})
    assert text.startswith("You are a careful math tutor.")
    assert text.endswith("Problem:\n1 + 1?\n\nSolution:\n2\n#### 2")


def test_fast_points_run_the_long_context_pair_around_the_prediction():
    from benchmarks.grid import FAST_CAP_GIB, fast_points

    points = fast_points(30912)
    names = [p.name for p in points]
    assert names[0] == "fast-lowmem-s2048"
    assert names[1:3] == [
        f"fast-lowmem-max-s30912-cap{FAST_CAP_GIB:g}",
        f"fast-lowmem-max+5pct-s32512-cap{FAST_CAP_GIB:g}",
    ]
    assert all(p.packed for p in points)
    dense, free = points[3], points[4]
    assert "training.mask_free_packing=false" in dense.overrides()
    assert "training.mask_free_packing=true" in free.overrides()
    assert "training.compile=true" in points[6].overrides()
