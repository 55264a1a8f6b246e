"""Prompt templates: how an `Example` becomes the text the model reads and the text it is
trained to write.

Each class is the factory of one prompt-template plugin (see `sftkit.builtin.templates`):

* ``prompt_text(example, tokenizer)``: everything before the answer, generation prompt
  included, special tokens (BOS, chat markers) written out as text.
* ``completion_text(example, tokenizer)``: the answer, ending with the end-of-turn/EOS text.
* ``segments(example, tokenizer)`` (optional): the whole text as (text, trained) pieces, so
  a conversation trains every assistant turn marked ``train: true`` in its history, not
  only the final answer. Joined, the pieces are prompt_text + completion_text.

Encode both with ``add_special_tokens=False`` (the text already carries them): see
`sftkit.data.tokenize`, which every consumer (training, preview, evaluation) goes through.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sftkit.data.example import TOOL_KEYS, Example, Message
from sftkit.errors import DataError

PROBE = "\u2063SFTKIT-PROBE\u2063"  # text no real answer contains


def trained_turn(message: Message) -> bool:
    """An assistant message of the history that is trained (the chat formats mark them)."""
    return message.get("role") == "assistant" and message.get("train") is True


def plain(messages: list[Message]) -> list[Message]:
    """Messages as a chat template expects them: role, content and tool use (no ``train``)."""
    return [
        {"role": m["role"], "content": m["content"], **{k: m[k] for k in TOOL_KEYS if k in m}}
        for m in messages
    ]


def jinja_source(value: str) -> str:
    """data.template.options.chat_template: inline Jinja, or the path of a file holding it."""
    if "{{" in value or "{%" in value:
        return value
    path = Path(value).expanduser()
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(
            f"data.template.options.chat_template: cannot read {path} ({exc.strerror or exc}).",
            hint="Give inline Jinja (it contains '{{' or '{%'), or the path of a .jinja file.",
        ) from exc


def split_final_answer(completion: str) -> tuple[str, str]:
    """(reasoning, final line) where the final line is a trailing '#### N' line, if any."""
    lines = completion.rstrip().splitlines()
    if lines and lines[-1].lstrip().startswith("####"):
        return "\n".join(lines[:-1]).rstrip(), lines[-1].strip()
    return completion.rstrip(), ""


def _eos(tokenizer: Any) -> str:
    eos = getattr(tokenizer, "eos_token", None)
    if not eos:
        raise DataError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no EOS token: the "
            "model could not learn to stop.",
            hint="Use a tokenizer with an eos_token (model.tokenizer in the recipe).",
        )
    return str(eos)


def _literal(text: str) -> str:
    """`text` as a Jinja string literal (JSON's escapes are Jinja's)."""
    return json.dumps(text, ensure_ascii=False)


_BOS = "{% if bos_token %}{{ bos_token }}{% endif %}"


class TutorTemplate:
    """The seed's plain tutor prompt: instruction, question, then the worked answer + EOS."""

    def __init__(self, options: Any) -> None:
        self.options = options

    def export_chat_template(self, tokenizer: Any) -> str:
        """A chat template giving this template's text: one user message is the question
        (``Question: ...``), longer conversations one ``Role: content`` line per message, the
        generation prompt ``Answer:`` (what evaluation prompts with)."""
        head = f"{self.options.instruction}\n\n" if self.options.instruction else ""
        return (
            f"{_BOS}{{{{ {_literal(head)} }}}}"
            "{% if messages|length == 1 and messages[0]['role'] == 'user' %}"
            "{{ 'Question: ' + messages[0]['content'] + '\\n' }}"
            "{% else %}{% for m in messages %}"
            "{{ m['role']|capitalize + ': ' + m['content'] + '\\n' }}"
            "{% endfor %}{% endif %}"
            "{% if add_generation_prompt %}{{ 'Answer:\\n' }}{% endif %}"
        )

    def prompt_text(self, example: Example, tokenizer: Any) -> str:
        bos = getattr(tokenizer, "bos_token", None) or ""
        head = f"{self.options.instruction}\n\n" if self.options.instruction else ""
        if isinstance(example.prompt, str):
            body = f"Question: {example.prompt}\n"
        else:
            body = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in example.prompt)
        return f"{bos}{head}{body}Answer:\n"

    def completion_text(self, example: Example, tokenizer: Any) -> str:
        return example.completion.rstrip() + _eos(tokenizer)

    def segments(self, example: Example, tokenizer: Any) -> list[tuple[str, bool]]:
        if isinstance(example.prompt, str) or not any(map(trained_turn, example.prompt)):
            return [
                (self.prompt_text(example, tokenizer), False),
                (self.completion_text(example, tokenizer), True),
            ]
        bos = getattr(tokenizer, "bos_token", None) or ""
        head = f"{self.options.instruction}\n\n" if self.options.instruction else ""
        out: list[tuple[str, bool]] = [(f"{bos}{head}", False)]
        for m in example.prompt:
            role = f"{m['role'].capitalize()}: "
            if trained_turn(m):
                out += [(role, False), (m["content"], True), ("\n", False)]
            else:
                out.append((f"{role}{m['content']}\n", False))
        out.append(("Answer:\n", False))
        out.append((self.completion_text(example, tokenizer), True))
        return out


class ChatTemplate:
    """The tokenizer's own chat template.

    The user turn is the question (plus the instruction); the assistant turn is the answer,
    followed by exactly what the template writes after an assistant message (end-of-turn,
    EOS). For reasoning models whose generation prompt opens ``<think>`` (DeepSeek-R1
    distills), the completion is the reasoning, ``</think>``, then the ``#### N`` line, so the
    model keeps reasoning and ends with the answer.
    """

    def __init__(self, options: Any) -> None:
        self.options = options
        override = getattr(options, "chat_template", None)
        self.chat_template: str | None = jinja_source(override) if override else None

    def export_chat_template(self, tokenizer: Any) -> str:
        """The chat template training rendered with (the override or the tokenizer's), with
        this template's own additions made in Jinja: the instruction after a lone question,
        the system message when the conversation has none."""
        base = self.chat_template or getattr(tokenizer, "chat_template", None)
        if not base:
            raise self._no_template(tokenizer)
        o = self.options
        lines = ["{%- set ns = namespace(messages=[]) -%}"]
        if o.system:
            lines.append(
                "{%- if not (messages|selectattr('role', 'equalto', 'system')|list) -%}"
                f"{{%- set ns.messages = [{{'role': 'system', 'content': {_literal(o.system)}}}] -%}}"
                "{%- endif -%}"
            )
        if o.instruction:
            lines.append(
                "{%- set lone = messages|length == 1 and messages[0]['role'] == 'user' -%}"
                "{%- for m in messages -%}"
                "{%- if lone -%}"
                f"{{%- set ns.messages = ns.messages + [{{'role': 'user', 'content': "
                f"m['content'] + {_literal(chr(10) * 2 + o.instruction)}}}] -%}}"
                "{%- else -%}{%- set ns.messages = ns.messages + [m] -%}{%- endif -%}"
                "{%- endfor -%}"
            )
        else:
            lines.append("{%- set ns.messages = ns.messages + messages -%}")
        lines.append("{%- set messages = ns.messages -%}")
        return "".join(lines) + base

    def cache_identity(self) -> str | None:
        """What decides the text beyond the options: the override's Jinja (a file's
        content, so an edited file rebuilds the tokenized splits)."""
        if self.chat_template is None:
            return None
        return hashlib.sha256(self.chat_template.encode()).hexdigest()

    def messages(self, example: Example) -> list[Message]:
        o = self.options
        if isinstance(example.prompt, str):
            user = example.prompt
            if o.instruction:
                user = f"{user}\n\n{o.instruction}"
            messages: list[Message] = [{"role": "user", "content": user}]
        else:
            messages = [dict(m) for m in example.prompt]  # keeps the `train` marks
        if o.system and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": o.system})
        return messages

    def prompt_text(self, example: Example, tokenizer: Any) -> str:
        return self._render(
            tokenizer, self.messages(example), add_generation_prompt=True, tools=example.tools
        )

    def completion_text(self, example: Example, tokenizer: Any, prompt: str | None = None) -> str:
        """The answer after `prompt` (rendered here unless the caller already has it)."""
        if prompt is None:
            prompt = self.prompt_text(example, tokenizer)
        reasoning, final = split_final_answer(example.completion)
        if prompt.rstrip().endswith("<think>"):
            # The template opened a reasoning block: close it before the answer.
            kept = f"{reasoning}\n" if (self.options.keep_reasoning and reasoning) else ""
            body = f"{kept}</think>\n\n{final or reasoning}"
        elif self.options.keep_reasoning or not final:
            body = example.completion.rstrip()
        else:
            body = final
        return body + self.end_of_turn(example, tokenizer)

    def segments(self, example: Example, tokenizer: Any) -> list[tuple[str, bool]]:
        """Every trained assistant turn of the history (its content and end-of-turn, up to
        EOS), then the final answer; the rest is context. Each turn's span is where the
        template's rendering of the conversation up to it differs from the one before."""
        prompt = self.prompt_text(example, tokenizer)
        completion = self.completion_text(example, tokenizer, prompt)
        messages = self.messages(example)
        turns = [i for i, m in enumerate(messages) if trained_turn(m)]
        if not turns:
            return [(prompt, False), (completion, True)]
        eos = _eos(tokenizer)
        out: list[tuple[str, bool]] = []
        done = ""
        for i in turns:
            before = self._render(
                tokenizer, messages[:i], add_generation_prompt=True, tools=example.tools
            )
            after = self._render(
                tokenizer, messages[: i + 1], add_generation_prompt=False, tools=example.tools
            )
            if not before.startswith(done) or not after.startswith(before):
                raise self._not_prefix(tokenizer, example)
            turn = after[len(before) :]
            cut = turn.index(eos) + len(eos) if eos in turn else len(turn.rstrip("\n"))
            out += [(before[len(done) :], False), (turn[:cut], True)]
            done = before + turn[:cut]
        if not prompt.startswith(done):
            raise self._not_prefix(tokenizer, example)
        out += [(prompt[len(done) :], False), (completion, True)]
        return out

    @staticmethod
    def _no_template(tokenizer: Any) -> DataError:
        return DataError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template.",
            hint="Set data.template.options.chat_template (inline Jinja or a file), use "
            "data.template.name=tutor, or a tokenizer that ships a chat template.",
        )

    @staticmethod
    def _not_prefix(tokenizer: Any, example: Example) -> DataError:
        return DataError(
            f"example {example.id}: the chat template of "
            f"{getattr(tokenizer, 'name_or_path', '?')!r} renders earlier turns differently "
            "once later ones follow (e.g. it drops past reasoning), so the assistant turns of "
            "the history cannot be trained in one sequence.",
            hint="Train the final answer only: data.format.options.train_on=last.",
        )

    def end_of_turn(self, example: Example, tokenizer: Any) -> str:
        """What the template writes after an assistant message; always ends with EOS."""
        eos = _eos(tokenizer)
        rendered = self._render(
            tokenizer,
            [*self.messages(example), {"role": "assistant", "content": PROBE}],
            add_generation_prompt=False,
            tools=example.tools,
        )
        at = rendered.rfind(PROBE)
        suffix = rendered[at + len(PROBE) :] if at >= 0 else ""
        if eos in suffix:
            return suffix[: suffix.index(eos) + len(eos)]
        # Templates that end a turn without EOS (or drop the probe): train EOS explicitly.
        return suffix.rstrip("\n") + eos if suffix.strip() else eos

    def _render(
        self,
        tokenizer: Any,
        messages: list[Message],
        *,
        add_generation_prompt: bool,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        if self.chat_template is None and not getattr(tokenizer, "chat_template", None):
            raise self._no_template(tokenizer)
        try:
            # tools and an override only when there are some: what a tokenizer is asked
            # otherwise stays the plain call every template takes
            extra: dict[str, Any] = {}
            if tools:
                extra["tools"] = tools
            if self.chat_template is not None:
                extra["chat_template"] = self.chat_template
            text = tokenizer.apply_chat_template(
                plain(messages),
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
                **extra,
            )
        except Exception as exc:  # jinja2's TemplateError: e.g. a role it does not take
            roles = ", ".join(sorted({m["role"] for m in messages}))
            raise DataError(
                f"the chat template of {getattr(tokenizer, 'name_or_path', '?')!r} cannot "
                f"render these messages (roles {roles}): {type(exc).__name__}: {exc}",
                hint="Some templates take no system or tool messages; map those roles in "
                "the data, or use data.template.name=tutor.",
            ) from exc
        return str(text)
