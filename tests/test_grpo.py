"""The ``grpo`` objective: its options validated at load, its data (the template's prompts
with their reference answers), and a few CPU steps of TRL's GRPOTrainer on the tiny model
with built-in and plugin rewards, whose scores are logged."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sftkit import RewardSpec, hookimpl
from sftkit.testing import invoke_cli, quick_run, tiny_dataset, tiny_recipe

pytest.importorskip("trl")

GRPO = (
    "training.objective=grpo",
    "training.objective_options.num_generations=4",
    "training.objective_options.max_completion_length=12",
)


def longer(prompts, completions, **columns):
    """A reward the random tiny model's samples differ on, so the groups have advantages."""
    assert "reference_answer" in columns  # the data's columns reach every reward
    return [len(c.strip()) / 12 for c in completions]


class Longer:
    @hookimpl
    def register_rewards(self, register):
        register(RewardSpec("longer", "Longer answers score higher.", f"{__name__}:longer"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.objective_options.num_generations=1", "num_generations"),
        ("training.objective_options.temperature=0", "temperature"),
        ("training.objective_options.rewards=[{name: gsm8k-corect}]", "gsm8k-correct"),
        ("training.objective_options.rewards=[]", "rewards"),
        ("training.objective_options.beta=0.04", "adapter strategy"),
        ("training.objective_options.num_generations=3", "whole groups"),
    ],
)
def test_bad_options_stop_at_load_naming_the_key(override, message):
    result = invoke_cli("validate", "quickstart", *GRPO, override)
    assert result.exit_code == 2, result.stderr
    assert "training.objective_options" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr


def test_the_data_is_the_templates_prompts_with_their_reference_answers(tmp_path):
    from sftkit.data.prepare import prepare_data
    from sftkit.modeling import load_tokenizer
    from sftkit.specs import load_factory
    from sftkit.training.reinforcement import grpo_dataset

    resolved = tiny_recipe(*GRPO, f"output_dir={tmp_path}")
    prepare_data(resolved)
    tokenizer = load_tokenizer(resolved.recipe)
    template = load_factory(resolved.template.spec.factory)(resolved.template.options)
    split = tiny_dataset(resolved)
    data = grpo_dataset(split, template, tokenizer, resolved.recipe)
    assert data.column_names == ["prompt", "reference_answer"]
    assert data[0]["reference_answer"] == split[0].reference_answer is not None
    ids = tokenizer(data[0]["prompt"])["input_ids"]
    assert ids.count(tokenizer.bos_token_id) <= 1  # one BOS, as the SFT data has


@pytest.mark.parametrize("strategy", ["full-sft", "lora"])
def test_grpo_trains_on_cpu_and_logs_each_reward(tmp_path, strategy, capsys):
    overrides = [
        *GRPO,
        f"strategy.name={strategy}",
        "training.objective_options.rewards=[{name: gsm8k-correct}, {name: format}, "
        "{name: longer, weight: 0.5}]",
    ]
    if strategy == "lora":  # the reference: the adapters switched off (no second model)
        overrides.append("training.objective_options.beta=0.04")
    run = quick_run(tmp_path, *overrides, plugins=[Longer()])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "reward" in row]
    assert [row["step"] for row in steps] == [1, 2, 3]
    for row in steps:
        for name in ("gsm8k-correct", "format", "longer"):
            assert 0.0 <= row[f"rewards/{name}/mean"] <= 1.0 + 1e-6
        assert row["completions/max_length"] <= 12
    assert any(row["rewards/longer/std"] > 0 for row in steps)
    assert any(row["grad_norm"] > 0 for row in steps)  # the advantages moved the policy
    if strategy == "lora":
        assert "kl" in steps[0]
    assert (Path(run) / "final" / "sftkit_complete.json").is_file()
    assert not (Path(run) / "final" / "ref").exists()  # TRL's frozen copy is not a result
    report = (run / "report.md").read_text()
    final = f"| final reward | {steps[-1]['reward']:.4g} at step 3 ("
    assert final in report and ("| final KL |" in report) == (strategy == "lora")
    assert f"final reward {steps[-1]['reward']:.3f})" in capsys.readouterr().out  # run's last line
    if importlib.util.find_spec("matplotlib"):  # the light core draws no plots
        curves = ["rewards", "completion_lengths"] + (["kl"] if strategy == "lora" else [])
        for name in curves:
            assert f"![{name}]({name}.png)" in report
            assert (run / f"{name}.png").is_file()
        assert (run / "kl.png").is_file() == (strategy == "lora")  # logged with beta > 0 only


# --------------------------------------------------------------------------- the estimate


def _rollout_setup(tmp_path, *overrides):
    from sftkit.memory.estimator import shape_for
    from sftkit.memory.setup import setup_from_recipe

    resolved = tiny_recipe(
        *GRPO,
        f"output_dir={tmp_path}",
        "strategy.name=lora",
        "training.max_seq_length=32",  # the prompt
        "training.objective_options.max_completion_length=8",
        "training.objective_options.beta=0.04",
        "training.micro_batch_size=2",
        "training.gradient_accumulation_steps=2",
        *overrides,
    )
    return resolved, setup_from_recipe(resolved, shape_for(resolved), on_gpu=False)


def test_the_rollout_terms_match_the_tensors_generation_holds(tmp_path):
    """The tiny model generates the estimate's generation batch (micro-batch 2 x accumulation
    2 completions of 8 tokens after 32-token prompts): its KV cache and each step's logits
    against the generating terms; the old policy's log-probabilities, kept while the
    reference's are computed, are (completions x completion tokens) fp32, as TRL returns
    them."""
    import torch
    from trl.trainer.utils import selective_log_softmax

    from sftkit.memory.phases import rollout_stages
    from sftkit.testing import tiny_model

    prompt, completion, batch = 32, 8, 4
    resolved, setup = _rollout_setup(tmp_path, "training.objective_options.num_iterations=2")
    generating, scoring = rollout_stages(setup)
    terms = {part.name.split(" (")[0]: part.bytes for part in [*generating, *scoring]}
    model, tokenizer = tiny_model(resolved, tmp_path / "model")
    ids = torch.randint(3, tokenizer.vocab_size, (batch, prompt))
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=completion,
            min_new_tokens=completion,
            do_sample=True,
            return_dict_in_generate=True,
            output_logits=True,
        )
    cache = out.past_key_values
    cached = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    # The cache holds every token but the last one generated: the estimate is one token over.
    per_token = cached // (prompt + completion - 1)
    assert terms["rollout: KV cache"] == cached + per_token
    assert max(step.nbytes for step in out.logits) <= terms["rollout: next-token logits"]
    completion_ids = out.sequences[:, prompt:]
    with torch.no_grad():
        logits = model(out.sequences).logits[:, prompt - 1 : -1].float()
    log_probs = selective_log_softmax(logits, completion_ids)
    assert terms["rollout: old policy log-probabilities"] == log_probs.nbytes
    assert setup.reference_copy  # beta > 0 under LoRA: TRL's frozen `ref` adapter, priced


def test_the_log_prob_forward_terms_match_the_live_tensors_of_trls_forwards(tmp_path):
    """TRL's own no-grad log-probability forwards (`_get_per_token_logps_and_entropies`, its
    batches of per_device_train_batch_size rows through the fused head TRL installs) over
    the generation batch, left-padded as TRL pads prompts: every tensor alive at any moment
    (the weights excluded) peaks where the scoring terms say, within 1%; the decoder
    layers' part alone against a forward of the decoder."""
    import contextlib
    import types

    import torch
    from live_tensors import LiveTensors
    from trl import GRPOTrainer
    from trl.trainer.utils import add_fused_lm_head

    from sftkit.memory import activations as act
    from sftkit.memory.phases import rollout_parts, rollout_stages
    from sftkit.testing import tiny_model

    prompt, completion, rows, batch = 32, 8, 2, 4
    resolved, setup = _rollout_setup(tmp_path)
    _, scoring = rollout_stages(setup)
    assert rollout_parts(setup) == scoring  # the 4096 x 32768 tile buffer outweighs generation
    model, tokenizer = tiny_model(resolved, tmp_path / "model")
    model.train()  # as during a training step: the LoRA dropout runs
    add_fused_lm_head(model.get_base_model(), outputs=("log_probs", "entropy"))  # as TRL does
    torch.manual_seed(0)
    ids = torch.randint(3, tokenizer.vocab_size, (batch, prompt + completion))
    mask = torch.ones_like(ids)
    mask[0, :5] = 0  # a shorter prompt, left-padded
    weights = [*model.parameters(), *model.buffers()]
    trainer = types.SimpleNamespace(
        accelerator=types.SimpleNamespace(autocast=contextlib.nullcontext, is_main_process=True)
    )
    with torch.no_grad(), LiveTensors(weights) as live:
        log_probs, _, _ = GRPOTrainer._get_per_token_logps_and_entropies(
            trainer, model, ids, mask, completion, batch_size=rows
        )
    assert log_probs.shape == (batch, completion)
    assert live.peak == pytest.approx(sum(part.bytes for part in scoring), rel=0.01)
    with torch.no_grad(), LiveTensors(weights) as live:
        model.get_base_model().model(
            input_ids=ids[:rows], attention_mask=mask[:rows], use_cache=False
        )
    layers = act.no_grad_layer_bytes(setup, rows, prompt + completion)
    assert live.peak == pytest.approx(layers, rel=0.01)


MEASURED = (
    *GRPO,
    "strategy.name=lora",
    "training.max_seq_length=32",
    "training.objective_options.max_completion_length=8",
    "training.objective_options.beta=0.04",  # the reference's log-probabilities
    "training.objective_options.num_iterations=2",  # ... and the old policy's
    "training.micro_batch_size=2",
    "training.gradient_accumulation_steps=2",
)


def test_measure_mode_generates_the_rollout_and_prints_it(tmp_path):
    """`estimate-memory --measure` generates the priced batch as TRL does (4 completions of
    8 tokens after 32-token prompts) and compares its KV cache and kept log-probabilities
    with their terms, byte for byte, in its table."""
    pytest.importorskip("peft")
    result = invoke_cli("estimate-memory", "quickstart", *MEASURED, "--measure")
    assert result.exit_code == 0, result.stderr
    measured = result.stdout.split("measured on cpu", 1)[1]
    rows = {line.split("  ")[0]: line for line in measured.splitlines()[2:] if "bytes)" in line}
    # 4 x 39 cached tokens x 2 (keys, values) x 4 layers x 64 (2 kv heads x 32) x 4 bytes
    assert rows["rollout: KV cache, 39 of 40 tokens"].endswith("ok  (319,488 vs 319,488 bytes)")
    for whose in ("old policy", "reference"):  # 4 completions x 8 tokens x fp32
        assert rows[f"rollout: {whose} log-probabilities"].endswith("ok  (128 vs 128 bytes)")
    assert "MISMATCH" not in measured
    assert "generate's cache holds 39" in measured  # the one token the term prices over


@pytest.mark.parametrize(
    "wrong",
    [lambda n, tokens: 2 * n, lambda n, tokens: n + n // tokens],
    ids=["twice-the-bytes-per-token", "one-token-more"],
)
def test_measure_mode_catches_a_wrong_kv_cache_term(tmp_path, monkeypatch, wrong):
    pytest.importorskip("peft")
    from sftkit.memory import estimate
    from sftkit.memory.phases import rollout_stages
    from sftkit.training import measure_rollout
    from sftkit.training.measure import measure_recipe

    def mispriced(setup):
        generating, scoring = rollout_stages(setup)
        return [
            dataclasses.replace(p, bytes=wrong(p.bytes, setup.seq_len))
            if p.name.startswith("rollout: KV cache")
            else p
            for p in generating
        ], scoring

    monkeypatch.setattr(measure_rollout, "rollout_stages", mispriced)
    resolved = tiny_recipe(*MEASURED, f"output_dir={tmp_path}")
    comparison = measure_recipe(resolved, estimate(resolved, advise=False))
    rows = {row.what: row for row in comparison.rows}
    assert not rows["rollout: KV cache, 39 of 40 tokens"].ok
    assert rows["rollout: reference log-probabilities"].ok and not comparison.ok


def test_measure_mode_leaves_an_engines_generation_alone(tmp_path):
    """A rollout an engine generates (vLLM colocate, CUDA only: declared here on the CPU)
    has no KV cache term of the model's own; measure mode starts no engine and compares the
    kept log-probabilities, over random completions of the priced length."""
    import contextlib

    from sftkit.memory.estimator import shape_for
    from sftkit.memory.setup import setup_from_recipe
    from sftkit.testing import tiny_model
    from sftkit.training.measure import install_loss_head
    from sftkit.training.measure_rollout import generate_rollout, rollout_rows

    resolved = tiny_recipe(*MEASURED, f"output_dir={tmp_path}")
    setup = setup_from_recipe(resolved, shape_for(resolved), on_gpu=False)
    assert setup.rollout is not None
    engine = dataclasses.replace(setup.rollout, engine="vLLM (colocate)", engine_share=0.3)
    setup = dataclasses.replace(setup, rollout=engine)
    model, _ = tiny_model(resolved, tmp_path)
    forward, _ = install_loss_head(model, setup)
    got = generate_rollout(model, forward, resolved, setup, "cpu", contextlib.nullcontext())
    rows, notes = rollout_rows(setup, got)
    assert [row.what for row in rows] == [
        "rollout: old policy log-probabilities",
        "rollout: reference log-probabilities",
    ]
    assert all(row.ok for row in rows) and got.cache_bytes == 0
    assert "vLLM (colocate) generates in its own share" in notes[0]


@pytest.mark.gpu
@pytest.mark.filterwarnings("ignore")
def test_measure_mode_holds_the_rollout_peak_to_the_estimate_on_cuda(tmp_path):
    """On CUDA the rollout phase's peak allocated (generation, then the log-probability
    forwards) against the phase's predicted figure, within GPU_TOLERANCE, at a size where
    the rollout's tensors outweigh the fixed workspaces (32 completions of 512 tokens after
    256-token prompts: a 48 MiB cache). Not yet run: there was no GPU where it was written."""
    pytest.importorskip("peft")
    from sftkit.memory import estimate
    from sftkit.memory.terms import PHASE_LABELS
    from sftkit.training.measure import measure_recipe

    resolved = tiny_recipe(
        *MEASURED,
        f"output_dir={tmp_path}",
        "hardware.gpu=auto",
        "training.max_seq_length=256",
        "training.objective_options.max_completion_length=512",
        "training.micro_batch_size=8",
        "training.gradient_accumulation_steps=4",
    )
    comparison = measure_recipe(resolved, estimate(resolved, advise=False))
    assert comparison.device != "cpu"
    rows = {row.what: row for row in comparison.rows}
    label = PHASE_LABELS["rollout"]
    for figure in ("allocated", "reserved", "device used"):
        assert f"{label}: {figure}" in rows, comparison.render()
    assert rows[f"{label}: allocated"].ok, comparison.render()
    assert all(row.ok for row in comparison.rows if row.exact), comparison.render()


# --------------------------------------------------------------------------- resume


class StopAtStep3(Longer):
    """Ctrl-C during the run, once: the run stops at a step boundary with a checkpoint."""

    def __init__(self) -> None:
        self.sent = False

    @hookimpl
    def on_log(self, run, logs):
        if logs.get("step") == 3 and not self.sent:
            import os
            import signal

            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)


PER_STEP = ("loss", "grad_norm", "reward", "rewards/longer/mean", "completions/mean_length", "kl")


def per_step(run_dir: Path) -> dict[int, dict[str, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: {k: r.get(k) for k in PER_STEP} for r in rows if "reward" in r}


@pytest.mark.parametrize(
    ("strategy", "weights"),
    [("full-sft", "model"), ("lora", "adapter_model")],  # lora: with TRL's `ref` adapter
)
def test_an_interrupted_grpo_run_resumes_exactly(tmp_path, strategy, weights):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    overrides = (
        *GRPO,
        "training.max_steps=6",
        "training.save_steps=1",
        "training.objective_options.rewards=[{name: longer}]",
        f"strategy.name={strategy}",
        *(["training.objective_options.beta=0.04"] if strategy == "lora" else []),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = quick_run(tmp_path / "reference", *overrides, plugins=[Longer()])
        with pytest.raises(AssertionError, match="exited with 130"):
            quick_run(tmp_path / "stopped", *overrides, plugins=[StopAtStep3()])
        stopped = tmp_path / "stopped" / "run"
        assert max(per_step(stopped)) < 6  # stopped early, with its checkpoints
        assert any((stopped / "checkpoints").glob("checkpoint-*"))
        resumed = quick_run(
            tmp_path / "stopped", *overrides, cli_args=("--resume",), plugins=[Longer()]
        )
    finally:
        torch.set_num_threads(threads)
    assert sorted(per_step(reference)) == list(range(1, 7))
    assert per_step(resumed) == per_step(reference)
    assert any(step["grad_norm"] for step in per_step(reference).values())
    ours = load_file(str(resumed / "final" / f"{weights}.safetensors"))
    theirs = load_file(str(reference / "final" / f"{weights}.safetensors"))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_fit_searches_the_completion_length_grpo_declares():
    from sftkit.memory.advice import fit_search, variant
    from sftkit.memory.estimator import compute

    resolved = tiny_recipe(*GRPO, "strategy.name=lora")
    found = fit_search(resolved, gpu="1GB")["training.objective_options.max_completion_length"]
    assert found["value"] is not None and found["value"] % 16 == 0
    path = "training.objective_options.max_completion_length"
    fits = compute(variant(resolved, {path: found["value"]}), gpu="1GB")
    over = compute(variant(resolved, {path: found["next"]}), gpu="1GB")
    assert fits.fits and not over.fits
    assert over.phases["rollout"] > fits.phases["rollout"]


def test_fit_searches_micro_batches_of_whole_groups():
    from sftkit.memory.advice import fit_search

    # 8 completions per prompt, accumulation 2: micro-batches of 4, 8, 12 ... are whole groups
    resolved = tiny_recipe(
        *GRPO,
        "training.objective_options.num_generations=8",
        "training.micro_batch_size=4",
        "training.gradient_accumulation_steps=2",
    )
    found = fit_search(resolved, gpu="1GB")["training.micro_batch_size"]
    assert found["value"] is not None and found["value"] % 4 == 0
    assert found["smallest_tried"] == 4 and found["next"] == found["value"] + 4


def test_the_step_line_prints_the_mean_reward_where_one_is_logged():
    from sftkit.training.callbacks import _status

    logs = {"loss": -0.0012, "reward": 0.4953, "learning_rate": 5e-5}
    assert _status(logs) == "loss -0.0012  reward 0.495  lr 5.00e-05"
    assert "reward" not in _status({"loss": 0.5, "learning_rate": 5e-5})


def test_a_reward_two_plugins_register_is_refused_at_load():
    class Other:
        @hookimpl
        def register_rewards(self, register):
            register(RewardSpec("longer", "Another longer.", f"{__name__}:longer"))

    result = invoke_cli(
        "validate",
        "quickstart",
        *GRPO,
        "training.objective_options.rewards=[{name: longer}]",
        plugins=[Longer(), Other()],
    )
    assert result.exit_code == 2, result.stderr
    assert "rewards[0].name" in result.stderr and "registered by 2 plugins" in result.stderr


def test_the_grpo_quickstart_starts_from_a_checkpoint_the_quickstart_keeps():
    import yaml

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    sft = yaml.safe_load((recipes / "quickstart.yaml").read_text())
    grpo = yaml.safe_load((recipes / "quickstart_grpo.yaml").read_text())
    path = grpo["model"]["name_or_path"]
    assert path.startswith(f"{sft['output_dir']}/checkpoints/checkpoint-")
    t = sft["training"]
    saved = list(range(t["save_steps"], t["max_steps"] + 1, t["save_steps"]))
    assert int(path.rsplit("-", 1)[1]) in saved[-t["save_total_limit"] :]
    # the same generated problems: its test split is the quickstart's held-out one
    for key in ("train_size", "test_size", "max_operand", "operations", "seed"):
        assert grpo["data"]["format"]["options"][key] == sft["data"]["format"]["options"][key]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    micro=st.integers(1, 8),
    accumulation=st.integers(1, 6),
    group=st.sampled_from([2, 3, 4, 6, 8]),
    budget=st.sampled_from(["560MB", "600MB", "700MB", "1GB", "8GB"]),
)
def test_fit_finds_the_largest_group_that_fits_at_the_recipes_prompts(
    micro, accumulation, group, budget
):
    """The num_generations --fit reports fits with the accumulation it reports, which keeps
    the recipe's prompts per generation batch and the micro-batch, in whole groups; the next
    value that would keep them whole does not fit."""
    from sftkit.memory.advice import fit_search, variant
    from sftkit.memory.estimator import compute

    assume(micro * accumulation % group == 0)
    resolved = tiny_recipe(
        *GRPO,
        "strategy.name=lora",
        f"training.objective_options.num_generations={group}",
        f"training.micro_batch_size={micro}",
        f"training.gradient_accumulation_steps={accumulation}",
    )
    path = "training.objective_options.num_generations"
    found = fit_search(resolved, gpu=budget)[path]
    prompts = micro * accumulation // group
    assert found["prompts"] == prompts

    def admissible(value):  # whole accumulation steps at the recipe's prompts per batch
        return value >= 2 and prompts * value % micro == 0

    def at(value):
        changes = {path: value, "training.gradient_accumulation_steps": prompts * value // micro}
        return compute(variant(resolved, changes), gpu=budget)

    if found["value"] is None:
        smallest = next(v for v in range(2, 2 * micro + 2) if admissible(v))
        assert found["smallest_tried"] == smallest and not at(smallest).fits
        return
    value, accumulated = found["value"], found["with"]["training.gradient_accumulation_steps"]
    assert admissible(value) and micro * accumulated == prompts * value  # whole groups
    changed = variant(resolved, {path: value, "training.gradient_accumulation_steps": accumulated})
    assert changed.recipe.training.micro_batch_size == micro
    assert compute(changed, gpu=budget).fits
    if "next" in found:
        assert found["next"] == next(
            v for v in range(value + 1, found["next"] + 1) if admissible(v)
        )
        assert not at(found["next"]).fits


def test_estimate_memory_fit_prints_the_group_size_and_the_accumulation_it_takes():
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "r1_gsm8k_grpo.yaml"
    result = invoke_cli("estimate-memory", str(recipe), "--fit")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    (at,) = [i for i, line in enumerate(lines) if "objective_options.num_generations =" in line]
    value = int(lines[at].split("= ")[1].split()[0])
    # 8 completions x 4 accumulation = 4 prompts per generation batch of micro-batches of 8
    assert (
        f"(and training.gradient_accumulation_steps={4 * value // 8}: the same 4 prompts"
        in (lines[at + 1])
    )
