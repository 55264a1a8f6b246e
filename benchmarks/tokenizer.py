"""A byte-level BPE tokenizer built locally for a random-weight model directory.

No tokenizer of the real model can be downloaded here, and speed depends on how many tokens an
example becomes. This one is trained on the benchmark's own text (GSM8K when present) with
Llama 3's pre-tokenizer split (digits in groups of up to three), so GSM8K examples come out at
roughly the length a real Llama-3 tokenizer gives them; each result records the mean tokens
per example it measured. Its ids fill the model's vocabulary as the real one does: learned
tokens, unreachable fillers up to the config's ``bos_token_id``, then special tokens there
(begin/end of text, the chat roles, padding) and a DeepSeek-R1-style chat template (its generation prompt opens ``<think>``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

# Llama 3's pre-tokenizer pattern (tokenizer.json of meta-llama/Llama-3.1-8B).
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
BOS, EOS, USER, ASSISTANT, PAD = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|User|>",
    "<|Assistant|>",
    "<|pad|>",
)
SPECIAL = (BOS, EOS, USER, ASSISTANT, PAD)  # ids bos_token_id, bos_token_id + 1, ...
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}"
    "{% elif message['role'] == 'user' %}<|User|>{{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}<|Assistant|>{{ message['content'] }}{{ eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|><think>\n{% endif %}"
)
MAX_LEARNED = 32000  # merges beyond this buy nothing on a few MB of text


def build_tokenizer(texts: Iterable[str], *, bos_token_id: int, vocab_size: int) -> Any:
    """A `transformers` fast tokenizer whose ids fit a model with `vocab_size` rows and whose
    special tokens start at `bos_token_id` (eos = bos + 1, as in Llama 3's config)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if bos_token_id + len(SPECIAL) > vocab_size:
        raise ValueError(
            f"bos_token_id {bos_token_id} leaves no room for {len(SPECIAL)} special tokens "
            f"in a vocabulary of {vocab_size}"
        )
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if bos_token_id < len(alphabet):
        raise ValueError(f"bos_token_id {bos_token_id} is smaller than the byte alphabet")
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=min(bos_token_id, MAX_LEARNED),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)

    # Fill the ids up to bos_token_id with tokens no merge produces, then put the specials at
    # bos_token_id.. exactly where the model config expects them.
    spec = json.loads(core.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    for filler in range(len(vocab), bos_token_id):
        vocab[f"<|filler_{filler}|>"] = filler
    spec["added_tokens"] = [
        {
            "id": bos_token_id + offset,
            "content": token,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for offset, token in enumerate(SPECIAL)
    ]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[USER, ASSISTANT],
        model_max_length=131072,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
