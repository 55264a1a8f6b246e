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


def test_grid_point_end_to_end_on_cpu(tiny_model, tmp_path):
    """One grid point through the real path: estimate-memory --json, sftkit's runner under the
    measuring callback, the JSON record, and the report rendered from it."""
    from benchmarks.report import POINT_SCHEMA, render

    model_dir, _ = tiny_model
    name = "qlora-nf4+paged-adamw-8bit-s96-b1-gc"
    stdout = _run_module(
        ["benchmarks.grid", "--model-dir", str(model_dir), "--out", str(tmp_path), "--device", "cpu",
         "--seq-lens", "96,128", "--select", name, "--steps", "2", "--warmup-steps", "1"]
    )  # fmt: skip
    assert f"| {name} |" in stdout
    record = json.loads((tmp_path / f"{name}.json").read_text())
    assert record["schema"] == POINT_SCHEMA and record["device"]["type"] == "cpu"
    predicted, measured = record["predicted"], record["measured"]
    assert predicted["exit_code"] == 0 and predicted["budget"]["kind"] == "cpu"
    assert set(predicted["phases"]) >= {"load", "forward_backward", "optimizer_step", "later_steps"}
    assert measured["completed"] and not measured["oom"] and measured["error"] is None
    assert list(measured["phases"]) == ["load", "forward_backward", "optimizer_step", "later_steps"]
    assert all(
        p["host_max_rss"] > 0 and p["peak_allocated"] is None for p in measured["phases"].values()
    )
    # Every step is exactly one micro-batch of the full sequence length.
    assert [s["tokens"] for s in measured["steps"]] == [96, 96, 96]
    assert measured["measured_tokens"] == 192 and measured["tokens_per_second"] > 0
    assert measured["flops_per_token"] == flops.flops_per_token(_shape(TINY_CONFIG), 96)
    assert measured["mfu"] is None  # no MFU on a CPU
    # The tensors that exist, exactly: the LoRA adapters and their gradients, the optimizer state.
    census = measured["census"]
    assert (
        census["parameters"]["frozen uint8"]
        == sum(g.total for g in _shape(TINY_CONFIG).linear_groups()) // 2
    )  # NF4: two weights per byte
    assert measured["trainable_parameters"] == predicted["trainable_parameters"]
    assert census["gradients"] > 0 and census["optimizer_state"]["device"] > 0
    text = render([tmp_path])
    assert "CPU smoke, ran" in text and "n/a (CPU)" in text


def test_speed_comparison_end_to_end_on_cpu(tiny_model, tmp_path):
    from benchmarks.report import SPEED_SCHEMA

    model_dir, _ = tiny_model
    stdout = _run_module(
        ["benchmarks.compare_speed", "--model-dir", str(model_dir), "--out", str(tmp_path),
         "--device", "cpu", "--steps", "1", "--warmup-steps", "1", "--rows", "40",
         "--variants", "none", "--override", "training.max_seq_length=256",
         "--override", "training.liger_kernels=false",
         "--override", "training.gradient_accumulation_steps=1",
         "--override", "data.format.options.dev_size=4",
         "--baseline-override", "gradient_accumulation_steps=1",
         "--baseline-override", "max_length=256"]
    )  # fmt: skip
    assert "| baseline |" in stdout and "| sftkit |" in stdout
    combined = json.loads((tmp_path / "speed.json").read_text())
    assert combined["schema"] == SPEED_SCHEMA and combined["data"].startswith("synthetic")
    runs = {r["name"]: r for r in combined["runs"]}
    assert set(runs) == {"baseline", "sftkit"}
    for run in runs.values():
        assert run["measured"]["completed"], run
        assert run["tokens_per_second"] > 0 and run["mean_tokens_per_example"] > 50
        assert run["peak_device_used"] is None and run["host_max_rss"] > 0
    assert runs["baseline"]["micro_batch_size"] == 4


# --------------------------------------------------------------------------- on a GPU


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
