"""The character-level tokenizer bundled with the tiny quickstart model, built locally.

One token per printable ASCII character (plus newline), Llama-style special tokens, a BOS
added by default like Llama's tokenizer, and a small chat template. Nothing comes from the
hub. The files in ``sftkit/assets/models/tiny-llama/`` are this function's output; rebuild
them with ``python -m sftkit.data.char_tokenizer sftkit/assets/models/tiny-llama``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

SPECIAL = ("<pad>", "<s>", "</s>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>")
CHARS = ("\n", *(chr(c) for c in range(32, 127)))
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}"
    # transformers renders chat templates with trim_blocks: a literal newline after a
    # block tag is dropped, so it is written as an expression.
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_char_tokenizer() -> Any:
    """A `transformers` fast tokenizer: pad=0, bos=1, eos=2, unk=3 (matching the config)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate((*SPECIAL, *CHARS))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    core.post_processor = TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=list(SPECIAL[4:]),
        model_max_length=512,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m sftkit.data.char_tokenizer OUTPUT_DIR", file=sys.stderr)
        return 2
    build_char_tokenizer().save_pretrained(Path(args[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
