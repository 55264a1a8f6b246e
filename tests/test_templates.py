"""Prompt templates and masking: only completion tokens carry labels, the completion ends
with EOS, and the prompt is encoded exactly as generation will see it."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftkit.builtin.templates import ChatTemplateOptions, TutorOptions
from sftkit.data.char_tokenizer import CHARS, build_char_tokenizer
from sftkit.data.example import Example
from sftkit.data.templates import ChatTemplate, TutorTemplate
from sftkit.data.tokenize import IGNORE_INDEX, encode_example, encode_prompt
from sftkit.errors import DataError

# A DeepSeek-R1-distill-style template: BOS, user/assistant markers, a generation prompt that
# opens <think>, and assistant turns rendered without their reasoning, ending with EOS.
R1_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}<|assistant|>"
    "{{ m['content'].split('</think>')[-1] }}{{ eos_token }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|><think>\n{% endif %}"
)

EXAMPLE = Example("x-1", "Ann has 3 pens. She gets 4 more. How many?", "3 + 4 = 7\n#### 7", "7")


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


def test_tutor_prompt_and_completion(tok):
    template = TutorTemplate(TutorOptions())
    prompt = template.prompt_text(EXAMPLE, tok)
    assert prompt.startswith("<s>Solve the problem step-by-step")
    assert prompt.endswith(f"Question: {EXAMPLE.prompt}\nAnswer:\n")
    assert template.completion_text(EXAMPLE, tok) == "3 + 4 = 7\n#### 7</s>"
    bare = TutorTemplate(TutorOptions(instruction=""))
    assert bare.prompt_text(EXAMPLE, tok) == f"<s>Question: {EXAMPLE.prompt}\nAnswer:\n"


def test_chat_template_uses_the_tokenizers_template(tok):
    template = ChatTemplate(ChatTemplateOptions(instruction="Answer with '#### N'."))
    prompt = template.prompt_text(EXAMPLE, tok)
    assert prompt == f"<s><|user|>{EXAMPLE.prompt}\n\nAnswer with '#### N'.\n<|assistant|>"
    assert template.completion_text(EXAMPLE, tok) == "3 + 4 = 7\n#### 7</s>"
    with_system = ChatTemplate(ChatTemplateOptions(system="Be brief.", instruction=None))
    assert with_system.prompt_text(EXAMPLE, tok).startswith("<s><|system|>Be brief.\n<|user|>")


def test_chat_template_for_reasoning_models_keeps_reasoning_and_ends_with_answer(tok):
    tok_r1 = build_char_tokenizer()
    tok_r1.chat_template = R1_TEMPLATE
    template = ChatTemplate(ChatTemplateOptions(instruction=None))
    assert template.prompt_text(EXAMPLE, tok_r1).endswith("<|assistant|><think>\n")
    assert template.completion_text(EXAMPLE, tok_r1) == "3 + 4 = 7\n</think>\n\n#### 7</s>"
    terse = ChatTemplate(ChatTemplateOptions(instruction=None, keep_reasoning=False))
    assert terse.completion_text(EXAMPLE, tok_r1) == "</think>\n\n#### 7</s>"


def test_chat_template_without_one_is_a_data_error(tok):
    plain = build_char_tokenizer()
    plain.chat_template = None
    with pytest.raises(DataError, match="no chat template"):
        ChatTemplate(ChatTemplateOptions()).prompt_text(EXAMPLE, plain)


def test_encoded_prompt_is_what_generation_sees(tok):
    template = TutorTemplate(TutorOptions(instruction=""))
    encoded = encode_example(template, EXAMPLE, tok)
    prompt_ids = encode_prompt(template, EXAMPLE, tok)
    assert encoded.input_ids[: len(prompt_ids)] == prompt_ids
    assert prompt_ids.count(tok.bos_token_id) == 1  # the text carries BOS; not added twice
    assert encoded.input_ids[-1] == tok.eos_token_id and encoded.labels[-1] == tok.eos_token_id


text = st.text(alphabet=st.sampled_from([c for c in CHARS if c != "\n"]), min_size=1, max_size=40)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(question=text, answer=text, chat=st.booleans(), completion_only=st.booleans())
def test_only_completion_tokens_carry_labels(tok, question, answer, chat, completion_only):
    example = Example("h", question, answer, None)
    template = (
        ChatTemplate(ChatTemplateOptions(instruction=None))
        if chat
        else TutorTemplate(TutorOptions(instruction=""))
    )
    encoded = encode_example(template, example, tok, completion_only_loss=completion_only)
    n_prompt = len(encode_prompt(template, example, tok))
    assert len(encoded.input_ids) == len(encoded.labels)
    assert encoded.prompt_length == n_prompt
    trained = [i for i, label in enumerate(encoded.labels) if label != IGNORE_INDEX]
    if completion_only:
        assert trained == list(range(n_prompt, len(encoded.input_ids)))
    else:
        assert trained == list(range(len(encoded.input_ids)))
    for i in trained:
        assert encoded.labels[i] == encoded.input_ids[i]
    completion = tok.decode(encoded.input_ids[n_prompt:], skip_special_tokens=False)
    assert completion == template.completion_text(example, tok)
    assert completion.endswith(tok.eos_token)
