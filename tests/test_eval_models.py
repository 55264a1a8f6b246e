"""Generation and the two evaluators on tiny models (CPU, seconds)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sftkit.builtin.evaluators import EvalLossOptions, Gsm8kEvalOptions  # noqa: E402
from sftkit.data.char_tokenizer import build_char_tokenizer  # noqa: E402
from sftkit.data.example import Example  # noqa: E402
from sftkit.evaluation.base import EvalTask, read_result, write_result  # noqa: E402
from sftkit.evaluation.generate import AnswerLineStop, greedy_generate  # noqa: E402
from sftkit.evaluation.gsm8k import Gsm8kEvaluator  # noqa: E402
from sftkit.evaluation.loss import EvalLossEvaluator  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    # Tiny models on a shared 2-core machine: extra torch threads only contend (100x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return build_char_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer: Any) -> Any:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return transformers.LlamaForCausalLM(config).eval()


class Plain:
    """A minimal prompt template (the real ones are tested with the data package)."""

    def prompt_text(self, example: Example, tokenizer: Any) -> str:
        return f"{tokenizer.bos_token}Question: {example.prompt}\nAnswer:\n"

    def completion_text(self, example: Example, tokenizer: Any) -> str:
        return example.completion + tokenizer.eos_token


def problems(n: int) -> list[Example]:
    return [
        Example(
            id=f"p{i}",
            prompt=f"What is {i} + {3 * i + 1}?" + " Think." * (i % 4),
            completion=f"{i} + {3 * i + 1} = {4 * i + 1}\n#### {4 * i + 1}",
            reference_answer=str(4 * i + 1),
        )
        for i in range(n)
    ]


def manual_greedy_ids(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int) -> list[int]:
    """Greedy decoding the slow, obvious way: no batch, no padding, no KV cache."""
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model(ids, use_cache=False).logits[0, -1].argmax())
            if token == tokenizer.eos_token_id:
                break
            out.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return out


def manual_greedy(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int) -> str:
    ids = manual_greedy_ids(model, tokenizer, prompt, max_new_tokens)
    return tokenizer.decode(ids, skip_special_tokens=True)


def test_batched_left_padded_cached_generation_equals_one_by_one(model, tokenizer) -> None:
    template = Plain()
    prompts = [template.prompt_text(e, tokenizer) for e in problems(7)]
    batched = greedy_generate(model, tokenizer, prompts, max_new_tokens=12, batch_size=4)
    assert len({len(p) for p in prompts}) > 1  # the batch really is padded
    for prompt, generation in zip(prompts, batched, strict=True):
        assert generation.text == manual_greedy(model, tokenizer, prompt, 12)
        assert generation.new_tokens <= 12


def test_generation_stops_at_eos(model, tokenizer) -> None:
    prompt = Plain().prompt_text(problems(1)[0], tokenizer)
    free = greedy_generate(model, tokenizer, [prompt], max_new_tokens=10)[0]
    assert free.new_tokens == 10 and not free.finished
    # Declare the model's 4th greedy token to be an EOS: generation must stop before it.
    ids = manual_greedy_ids(model, tokenizer, prompt, 10)
    stop_token = ids[3]
    first = ids.index(stop_token)
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, stop_token]
    try:
        stopped = greedy_generate(model, tokenizer, [prompt], max_new_tokens=10)[0]
    finally:
        model.generation_config.eos_token_id = saved
    assert stopped.finished
    assert stopped.new_tokens == first
    assert stopped.text == tokenizer.decode(ids[:first], skip_special_tokens=True)


@pytest.mark.parametrize(
    ("generated", "in_think", "stop"),
    [
        ("5 + 6 = 11\n#### 11\n", False, True),
        ("5 + 6 = 11\n#### 11", False, False),  # the line may still grow: 11 -> 110
        ("5 + 6 = 11\n", False, False),
        ("<think>#### 3\n", False, False),  # inside reasoning
        ("#### 3\n", True, False),  # the prompt opened a <think> block
        ("ok</think>\n#### 3\n", True, True),
    ],
)
def test_answer_line_stop(tokenizer, generated: str, in_think: bool, stop: bool) -> None:
    prompt = "<s>Question: x\nAnswer:\n"
    ids = tokenizer(prompt + generated, add_special_tokens=False, return_tensors="pt")["input_ids"]
    prompt_len = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    criterion = AnswerLineStop(tokenizer, prompt_len, in_think)
    assert bool(criterion(ids, None)[0]) is stop


class OracleLM(torch.nn.Module):
    """Stands in for a model: `generate` reads each prompt and writes a worked answer, wrong
    on purpose for every third problem, padding finished rows as transformers does."""

    def __init__(self, tokenizer: Any) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.generation_config = SimpleNamespace(eos_token_id=tokenizer.eos_token_id)
        self.seen_masks: list[Any] = []

    def generate(self, input_ids, attention_mask, generation_config, stopping_criteria):
        self.seen_masks.append(attention_mask.clone())
        rows = []
        for ids in input_ids.tolist():
            prompt = self.tokenizer.decode(ids, skip_special_tokens=True)
            a, b = map(int, re.search(r"What is (\d+) \+ (\d+)", prompt).groups())
            answer = a + b + (1 if a % 3 == 0 else 0)
            text = f"{a} + {b} = {answer}.\n#### {answer:,}\nQuestion: next #### 0"
            new = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            rows.append([*ids, *new[: generation_config.max_new_tokens]])
        width = max(len(r) for r in rows)
        pad = generation_config.pad_token_id
        return torch.tensor([r + [pad] * (width - len(r)) for r in rows])


def test_gsm8k_evaluator_end_to_end_with_an_oracle(tokenizer, tmp_path: Path) -> None:
    examples = problems(9)
    oracle = OracleLM(tokenizer)
    task = EvalTask(oracle, tokenizer, examples, Plain(), split="test")
    options = Gsm8kEvalOptions(max_new_tokens=200, batch_size=4)
    result = Gsm8kEvaluator(options).evaluate(task)
    # p0, p3, p6 are answered wrong on purpose.
    assert result.metrics["correct"] == 6 and result.n == 9
    assert result.value == pytest.approx(6 / 9)
    assert result.metrics["ci_low"] < 6 / 9 < result.metrics["ci_high"]
    by_id = {p["id"]: p for p in result.predictions}
    assert by_id["p1"]["extracted"] == "5" and by_id["p1"]["correct"] is True
    assert by_id["p3"]["extracted"] == "14" and by_id["p3"]["gold"] == "13"
    assert by_id["p1"]["question"] == "What is 1 + 4? Think."
    assert by_id["p1"]["output"].startswith("1 + 4 = 5.\n#### 5")
    # Left padding: every row's mask ends with ones (the prompt sits against the right edge).
    assert all(bool(mask[:, -1].all()) for mask in oracle.seen_masks)
    assert any(bool((mask == 0).any()) for mask in oracle.seen_masks)

    out = write_result(result, tmp_path / "after-gsm8k", stage="after", model="fine-tuned")
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 9
    assert {"question", "gold", "extracted", "output", "correct"} <= set(rows[0])
    stored = read_result(out)
    assert stored is not None and stored.stage == "after" and stored.n == 9
    assert stored.value == pytest.approx(6 / 9)


def test_gsm8k_evaluator_on_a_tiny_random_model(model, tokenizer) -> None:
    task = EvalTask(model, tokenizer, problems(6), Plain(), split="dev")
    result = Gsm8kEvaluator(Gsm8kEvalOptions(max_new_tokens=8, batch_size=4)).evaluate(task)
    assert result.n == 6 and result.split == "dev"
    assert 0 <= result.metrics["correct"] <= 6
    assert result.metrics["hit_token_limit"] + sum(p["finished"] for p in result.predictions) == 6
    assert all(p["new_tokens"] <= 8 for p in result.predictions)


def test_eval_loss_matches_a_direct_computation(model, tokenizer) -> None:
    examples = problems(5)
    template = Plain()
    result = EvalLossEvaluator(EvalLossOptions(batch_size=2)).evaluate(
        EvalTask(model, tokenizer, examples, template, split="test")
    )
    total, count = 0.0, 0
    with torch.no_grad():
        for example in examples:
            prompt = tokenizer(template.prompt_text(example, tokenizer), add_special_tokens=False)[
                "input_ids"
            ]
            completion = tokenizer(
                template.completion_text(example, tokenizer), add_special_tokens=False
            )["input_ids"]
            ids = torch.tensor([prompt + completion])
            logits = model(ids).logits[0].float()
            for position in range(len(prompt), len(prompt) + len(completion)):
                total -= float(torch.log_softmax(logits[position - 1], -1)[ids[0, position]])
                count += 1
    assert result.metrics["tokens"] == count
    assert result.metrics["loss"] == pytest.approx(total / count, rel=1e-4)
    assert result.metrics["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-4)
    assert not result.higher_is_better
    assert sum(p["tokens"] for p in result.predictions) == count


class ScriptedLM(OracleLM):
    """Writes a fixed output per problem (found by its question in the prompt)."""

    def __init__(self, tokenizer: Any, outputs: dict[str, str]) -> None:
        super().__init__(tokenizer)
        self.outputs = outputs

    def generate(self, input_ids, attention_mask, generation_config, stopping_criteria):
        rows = []
        for ids in input_ids.tolist():
            prompt = self.tokenizer.decode(ids, skip_special_tokens=True)
            text = next(out for question, out in self.outputs.items() if question in prompt)
            new = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            rows.append([*ids, *new[: generation_config.max_new_tokens]])
        width = max(len(r) for r in rows)
        pad = generation_config.pad_token_id
        return torch.tensor([r + [pad] * (width - len(r)) for r in rows])


def test_reasoning_outputs_are_scored_on_what_follows_think(tokenizer) -> None:
    """A <think> block is reasoning: the answer is what follows </think> (by sftkit's rule
    and the harness's two); an output still inside <think> has no answer and says so."""
    examples = problems(3)  # gold answers 1, 5, 9
    outputs = {
        # reasoning mentions a wrong '#### 7'; the answer after </think> is right
        "What is 0 + 1?": "<think>maybe 0 + 1 = 7\n#### 7\nno.</think>\n0 + 1 = 1\n#### 1",
        # right number inside the reasoning, wrong one after it: wrong
        "What is 1 + 4?": "<think>1 + 4 = 5\n#### 5</think>\n#### 6",
        # never closes its reasoning: no answer, counted as still thinking
        "What is 2 + 7?": "<think>2 + 7 = 9\n#### 9 so the answer",
    }
    task = EvalTask(ScriptedLM(tokenizer, outputs), tokenizer, examples, Plain(), split="test")
    result = Gsm8kEvaluator(Gsm8kEvalOptions(max_new_tokens=80, batch_size=3)).evaluate(task)
    by_id = {p["id"]: p for p in result.predictions}
    assert (by_id["p0"]["extracted"], by_id["p0"]["correct"]) == ("1", True)
    assert by_id["p0"]["strict_match"] == "1" and by_id["p0"]["harness_correct"]["strict"]
    assert (by_id["p1"]["extracted"], by_id["p1"]["correct"]) == ("6", False)
    assert by_id["p2"]["extracted"] is None and by_id["p2"]["unclosed_think"] is True
    assert by_id["p2"]["strict_match"] == "[invalid]"
    assert result.metrics["unclosed_think"] == 1 and result.metrics["no_answer"] == 1
    assert result.metrics["strict_match"] == pytest.approx(1 / 3)


def test_the_default_budget_leaves_room_to_think(tokenizer) -> None:
    """Unset max_new_tokens: 512 for an answer, 4096 when the prompt opens <think>."""

    class Thinking(Plain):
        def prompt_text(self, example: Example, tokenizer: Any) -> str:
            return super().prompt_text(example, tokenizer) + "<think>\n"

    outputs = {"What is 0 + 1?": "0 + 1 = 1</think>\n#### 1"}
    for template, budget in ((Plain(), 512), (Thinking(), 4096)):
        task = EvalTask(ScriptedLM(tokenizer, outputs), tokenizer, problems(1), template, "test")
        result = Gsm8kEvaluator(Gsm8kEvalOptions()).evaluate(task)
        assert result.options["max_new_tokens_used"] == budget
        assert result.predictions[0]["correct"] is True
    assert result.predictions[0]["unclosed_think"] is False
