"""`sftkit launch` end to end on a CPU: two gloo processes of the tiny Llama train the same
steps as one process on the same global batch (DDP through `accelerate launch`, FSDP2 through
`torchrun`), rank 0 alone writes the run directory, the final model reloads and equals the
single-process result, and a sharded FSDP run resumed from its checkpoint continues exactly.

Each launch starts real worker processes (about half a minute each on two cores), so the
multi-process tests are marked slow; they still run in the default suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("accelerate")

from tiny_models import config_dir, recipe_text  # noqa: E402

from sftkit.cli import run_cli  # noqa: E402
from sftkit.modeling import load_trained  # noqa: E402
from sftkit.recipe.load import load_recipe  # noqa: E402
from sftkit.testing import fresh_registry  # noqa: E402
from sftkit.training.runner import run_recipe  # noqa: E402

STEPS = 6
GLOBAL_BATCH = 8
PROMPT = "<s>Question: Ann has 3 pens. Ann gets 4 more. How many pens does Ann have?\nAnswer:\n"


def write_recipe(root: Path, name: str, **kwargs: Any) -> Path:
    defaults: dict[str, Any] = {"train_rows": 65, "max_steps": STEPS}
    path = root / f"{name}.yaml"
    path.write_text(recipe_text(root / "model", root / "runs" / name, **{**defaults, **kwargs}))
    return path


def launch(recipe: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`sftkit launch` in a fresh interpreter, as a user would run it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-c", "from sftkit.cli import main; main()", "launch", str(recipe)]
    done = subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"launch failed ({done.returncode}):\n{done.stderr[-6000:]}"
    return done


def events(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in events(run_dir) if "loss" in e}


def final_logits(run_dir: Path) -> Any:
    model, tokenizer = load_trained(run_dir)
    ids = tokenizer(PROMPT, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("launch")
    config_dir(root / "model")
    return root


@pytest.fixture(scope="module")
def single(workspace: Path) -> Path:
    """The reference: one process, micro-batch = the global batch of the launched runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        recipe = write_recipe(workspace, "single", micro_batch_size=GLOBAL_BATCH)
        resolved = load_recipe(recipe, registry=fresh_registry())
        return run_recipe(resolved).run_dir
    finally:
        torch.set_num_threads(threads)


def assert_same_training(run_dir: Path, single: Path) -> None:
    got, want = losses(run_dir), losses(single)
    assert sorted(got) == list(range(1, STEPS + 1))
    for step, loss in want.items():
        assert got[step] == pytest.approx(loss, rel=1e-4, abs=1e-5), f"step {step}"
    assert torch.allclose(final_logits(run_dir), final_logits(single), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_ddp_two_processes_match_one(workspace, single):
    recipe = write_recipe(workspace, "ddp", micro_batch_size=GLOBAL_BATCH // 2)
    done = launch(recipe, "--nproc", "2", "--launcher", "accelerate")
    run_dir = workspace / "runs" / "ddp"
    assert f"completed: {run_dir}" in done.stdout and "on 2 processes" in done.stdout
    assert_same_training(run_dir, single)
    # tokenized once, by the launcher: one build of the train split, no rank's partial
    assert "tokenized: train" in done.stdout + done.stderr
    built = sorted(p.name for p in (run_dir / "data" / "tokenized").iterdir())
    assert len([name for name in built if name.startswith("train-")]) == 1, built
    assert not [name for name in built if name.startswith(".")], built
    # Rank 0 alone wrote the logs: one event per step, no copies from rank 1.
    steps = [e["step"] for e in events(run_dir) if "loss" in e]
    assert steps == sorted(set(steps))
    saved = (run_dir / "recipe.yaml").read_text()
    assert "engine: ddp" in saved and "num_gpus: 2" in saved  # what the launch implied
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    assert (run_dir / "distributed" / "accelerate_config.yaml").is_file()
    memory = json.loads((run_dir / "memory.json").read_text())
    assert memory, "the launcher pre-flighted memory like sftkit run"


@pytest.mark.slow
def test_fsdp2_two_processes_match_one_and_resume_from_shards(workspace, single):
    extra = "distributed: {engine: fsdp}"
    half = write_recipe(
        workspace,
        "fsdp",
        micro_batch_size=GLOBAL_BATCH // 2,
        max_steps=3,
        save_steps=3,
        extra=extra,
    )
    launch(half, "--nproc", "2", "--launcher", "torchrun")
    run_dir = workspace / "runs" / "fsdp"
    checkpoint = run_dir / "checkpoints" / "checkpoint-3"
    # Sharded checkpoint: one distributed-checkpoint directory written by both ranks.
    assert any(p.name.startswith("pytorch_model_fsdp") for p in checkpoint.iterdir())
    assert sorted(losses(run_dir)) == [1, 2, 3]

    whole = write_recipe(
        workspace, "fsdp", micro_batch_size=GLOBAL_BATCH // 2, save_steps=3, extra=extra
    )
    launch(whole, "--nproc", "2", "--launcher", "torchrun", "--resume")
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed" and record["steps"] == STEPS
    assert record["resumed_from"].endswith("checkpoint-3")
    # Steps 4-6 continue from the shards exactly as the uninterrupted single process did.
    assert_same_training(run_dir, single)
    assert (run_dir / "final" / "model.safetensors").is_file()  # gathered, not sharded


QLORA = {
    "strategy": "qlora-nf4",
    # fp32 model and compute: the storage dtype FSDP flattens; no dropout, whose masks differ
    # between one process and two.
    "strategy_options": {"rank": 8, "alpha": 16, "dropout": 0.0, "compute_dtype": "float32"},
    "optimizer_options": {"lr": 1e-2},
    "max_steps": 4,
}


@pytest.mark.slow
def test_qlora_fsdp2_shards_the_4bit_base_and_matches_one_process(workspace):
    """QLoRA under FSDP: the NF4 weights are stored in the compute dtype so fully_shard can
    flatten them with the rest; two processes train the adapters one process trains."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = write_recipe(workspace, "qlora1", micro_batch_size=GLOBAL_BATCH, **QLORA)
        run_recipe(load_recipe(one, registry=fresh_registry()))
    finally:
        torch.set_num_threads(threads)
    two = write_recipe(
        workspace,
        "qlora2",
        micro_batch_size=GLOBAL_BATCH // 2,
        extra="distributed: {engine: fsdp}",
        **QLORA,
    )
    done = launch(two, "--nproc", "2")
    # accelerate leaves uint8-stored 4-bit weights out of the shards, with this warning.
    assert "Params4bit" not in done.stderr
    single, sharded = workspace / "runs" / "qlora1", workspace / "runs" / "qlora2"
    want, got = losses(single), losses(sharded)
    assert sorted(got) == [1, 2, 3, 4]
    for step, loss in want.items():
        assert got[step] == pytest.approx(loss, abs=1e-3), f"step {step}"
    adapter = json.loads((sharded / "final" / "adapter_config.json").read_text())
    assert adapter["r"] == 8  # the gathered adapter, not a shard
    # 4-bit matmuls round differently with other batch shapes: a looser, still tight bound.
    assert torch.allclose(final_logits(sharded), final_logits(single), atol=1e-2)


def test_dry_run_prints_config_and_command_and_writes_nothing(workspace, capsys):
    recipe = write_recipe(workspace, "dry")
    code = run_cli(["launch", str(recipe), "distributed.engine=fsdp", "--nproc", "4", "--dry-run"])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, captured.err
    assert "distributed_type: FSDP" in out and "fsdp_version: 2" in out
    assert "-m sftkit.launch.worker" in out and "--num_processes 4" in out
    assert "4 per node" in out and "= 32 sequences per optimizer step" in out
    assert not (workspace / "runs" / "dry").exists()


def test_dry_run_multi_node_deepspeed(workspace, capsys):
    recipe = write_recipe(workspace, "ds")
    args = ["launch", str(recipe), "hardware.gpu=H100-80GB", "distributed.engine=deepspeed"]
    args.append("distributed.zero_stage=3")
    node = ["--nproc", "8", "--nnodes", "2", "--node-rank", "1", "--master-addr", "node0"]
    code = run_cli([*args, *node, "--launcher", "torchrun", "--dry-run"])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, captured.err
    assert '"stage": 3' in out and "distributed_type: DEEPSPEED" in out
    assert "--nnodes 2 --nproc-per-node 8 --node-rank 1 --master-addr node0" in out
    assert "16 processes" in out


def test_deepspeed_missing_is_reported_before_anything_runs(workspace, capsys):
    pytest.importorskip("accelerate")
    if __import__("importlib").util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed here")
    recipe = write_recipe(workspace, "nods")
    args = ["hardware.gpu=H100-80GB", "distributed.engine=deepspeed", "--nproc", "2"]
    code = run_cli(["launch", str(recipe), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert "'deepspeed'" in err and "distributed.engine: deepspeed" in err
    assert not (workspace / "runs" / "nods").exists()


def test_cpu_launch_needs_nproc_and_bad_topology_is_an_input_error(workspace, capsys):
    recipe = write_recipe(workspace, "bad")
    assert run_cli(["launch", str(recipe), "--dry-run"]) == 2
    assert "--nproc" in capsys.readouterr().err
    code = run_cli(["launch", str(recipe), "--nproc", "2", "--nnodes", "2", "--dry-run"])
    assert code == 2
    assert "--master-addr" in capsys.readouterr().err


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc), however deep."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_launch_killed_with_9_takes_its_workers_with_it(workspace):
    """Issue 21 case 2: `sftkit launch --nproc 2` killed with -9 mid-run: the launcher and
    both workers die with it (they used to train on, orphaned, beside the resume), and no
    resume takes the lock while any of them lives; then the resume trains every step once."""
    import signal
    import time

    from sftkit.errors import RunLockedError
    from sftkit.runpaths import RunPaths
    from sftkit.training.lock import RunLock

    recipe = write_recipe(workspace, "killed", max_steps=40, save_steps=2, micro_batch_size=4)
    run_dir = workspace / "runs" / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-c", "from sftkit.cli import main; main()", "launch", str(recipe)]
    parent = subprocess.Popen(
        [*command, "--nproc", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 240
        metrics = run_dir / "metrics.jsonl"
        while time.monotonic() < deadline and parent.poll() is None:
            started |= descendants(parent.pid)
            if metrics.is_file() and '"step": 3' in metrics.read_text():
                break
            time.sleep(0.2)
        assert parent.poll() is None, parent.communicate()[1][-4000:]
        started |= descendants(parent.pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            living = {pid for pid in started if alive(pid)}
            try:
                RunLock.acquire(RunPaths(run_dir), command="probe").release()
            except RunLockedError:
                pass
            else:  # the lock is free: then none of the run's processes may be alive
                assert not {pid for pid in living if alive(pid)}, "lock taken while alive"
            if not living:
                break
            time.sleep(0.2)
        assert not living, f"orphans still running: {sorted(living)}"
    finally:
        for pid in started:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
    done = launch(recipe, "--nproc", "2", "--resume")
    assert "resuming from checkpoint-" in done.stderr
    logged = [e["step"] for e in events(run_dir) if "loss" in e]
    assert logged == list(range(1, 41))
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
