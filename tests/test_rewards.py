"""Reward functions are components (`register_rewards`): the built-ins score GSM8K answers
with the gsm8k evaluator's own extraction, and a plugin's reward is listed and loaded."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sftkit import RewardSpec, hookimpl
from sftkit.errors import SpecError
from sftkit.evaluation.extract import extract_answer
from sftkit.specs import load_factory
from sftkit.testing import fresh_registry, invoke_cli, registered

DOCS = Path(__file__).resolve().parent.parent / "docs"


def rewards(name: str):
    return load_factory(fresh_registry().rewards.get(name).factory)


def test_the_built_in_rewards_are_listed():
    result = invoke_cli("list", "rewards")
    assert result.exit_code == 0, result.stderr
    assert "gsm8k-correct" in result.stdout and "format" in result.stdout


def test_gsm8k_correct_scores_the_final_answer_against_the_reference():
    correct = rewards("gsm8k-correct")
    prompts = ["Q1", "Q2", "Q3", "Q4", "Q5"]
    completions = [
        "3 + 4 = 7\n#### 7",  # right
        "3 + 4 = 8\n#### 8",  # wrong
        "The answer is $1,234.00.",  # right, by the last number
        "#### 5",  # no reference: not applicable
        [{"role": "assistant", "content": "#### 12"}],  # conversational, right
    ]
    references = ["7", "7", "1234", None, "#### 12"]
    assert correct(prompts, completions, reference_answer=references) == [1.0, 0.0, 1.0, None, 1.0]


def test_gsm8k_correct_ignores_numbers_in_unfinished_reasoning():
    correct = rewards("gsm8k-correct")
    think_prompt = "<|user|>2+2?<|assistant|><think>\n"
    scores = correct(
        [think_prompt, think_prompt, "plain"],
        ["so it is 4", "so it is 4</think>\n#### 4", "<think>so 4"],
        reference_answer=["4", "4", "4"],
    )
    assert scores == [0.0, 1.0, 0.0]


def test_format_wants_the_answer_line_and_closed_reasoning():
    fmt = rewards("format")
    think_prompt = "<|assistant|><think>\n"
    prompts = ["Q", "Q", "Q", "Q", think_prompt, think_prompt]
    completions = [
        "2 + 2 = 4\n#### 4",  # GSM8K's line
        "The answer is 4.",  # no line
        "<think>2+2</think>\n#### 4",  # R1-style, closed
        "<think>2+2\n#### 4",  # R1-style, still thinking: the line is reasoning
        "2+2 is 4</think>\n#### 4",  # the prompt opened the block; closed
        "2+2 is 4\n#### 4",  # the prompt opened it; never closed
    ]
    assert fmt(prompts, completions) == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]


@given(st.integers(-(10**6), 10**6), st.integers(-(10**6), 10**6))
def test_correct_agrees_with_the_evaluators_extraction(answer, reference):
    text = f"Working.\n#### {answer:,}"
    (score,) = rewards("gsm8k-correct")(["Q"], [text], reference_answer=[str(reference)])
    assert score == float(extract_answer(text).answer == str(reference))
    assert rewards("format")(["Q"], [text]) == [1.0]


def test_a_reward_spec_checks_its_name():
    with pytest.raises(SpecError, match="not valid"):
        RewardSpec("Brevity Score", "x", "m:f")


def test_the_plugin_hooks_example_registers_a_reward_that_scores(tmp_path):
    text = (DOCS / "plugin-hooks.md").read_text(encoding="utf-8")
    section = text.split("### `register_rewards(", 1)[1].split("\n### ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    module = types.ModuleType("acme_rewards_example")
    sys.modules[module.__name__] = module
    try:
        exec(compile(code, "plugin-hooks.md", "exec"), module.__dict__)
        with registered(module.Brevity()) as registry:
            reward = load_factory(registry.rewards.get("brevity").factory)
        assert reward(["Q", "Q"], ["short", "x" * 400]) == [1.0, 0.5]
        listed = invoke_cli("list", "rewards", plugins=[module.Brevity()])
        assert "brevity" in listed.stdout and "gsm8k-correct" in listed.stdout
    finally:
        del sys.modules[module.__name__]


class Plugin:  # what test_hook_docs looks for: a test implementing the hook
    @hookimpl
    def register_rewards(self, register):
        register(RewardSpec("always-one", "1 for everything.", f"{__name__}:always_one"))


def always_one(prompts, completions, **columns):
    return [1.0] * len(completions)


def test_a_plugins_reward_loads_from_its_factory():
    with registered(Plugin()) as registry:
        assert load_factory(registry.rewards.get("always-one").factory)(["a"], ["b"]) == [1.0]
