"""The one row type every dataset format produces and every template consumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# {"role": ..., "content": ...}; an assistant message of a prompt's history may also carry
# "train": True (the chat formats set it): that turn is trained, not only the final answer.
# Tool use: an assistant message's "tool_calls", a tool message's "tool_call_id" and "name",
# passed to the chat template as they are.
Message = dict[str, Any]
TOOL_KEYS = ("tool_calls", "tool_call_id", "name")


@dataclass(frozen=True)
class Example:
    """A training or evaluation example.

    `prompt` is the question (plain text) or a chat history (a list of ``{role, content}``
    messages ending before the assistant's answer; earlier assistant turns marked
    ``"train": True`` are trained too); `completion` is the answer the model is trained to
    produce; `reference_answer` is the final answer an evaluator compares against
    (for GSM8K the number after ``####``), or None.
    """

    id: str
    prompt: str | list[Message]
    completion: str
    reference_answer: str | None = None
    tools: list[dict[str, Any]] | None = None  # function schemas the chat template renders

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "prompt": self.prompt,
            "completion": self.completion,
            "reference_answer": self.reference_answer,
        }
        if self.tools is not None:  # absent otherwise: earlier prepared files stay the same
            out["tools"] = self.tools
        return out

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Example:
        prompt = row["prompt"]
        if isinstance(prompt, list):
            prompt = [_message(m) for m in prompt]
        return cls(
            id=str(row["id"]),
            prompt=prompt,
            completion=str(row["completion"]),
            reference_answer=row.get("reference_answer"),
            tools=row.get("tools"),
        )

    @property
    def trained_turns(self) -> int:
        """Assistant turns trained: the completion and those of the history marked so."""
        if isinstance(self.prompt, str):
            return 1
        return 1 + sum(1 for m in self.prompt if m.get("role") == "assistant" and m.get("train"))

    def prompt_key(self) -> str:
        """Normalised prompt text, to find the same question in two splits."""
        if isinstance(self.prompt, str):
            text = self.prompt
        else:
            text = "\n".join(m["content"] for m in self.prompt if m["role"] == "user")
        return " ".join(text.lower().split())


def _message(m: dict[str, Any]) -> Message:
    out: Message = {"role": str(m["role"]), "content": str(m["content"])}
    if m.get("train") is True:
        out["train"] = True
    for key in TOOL_KEYS:
        if m.get(key) is not None:
            out[key] = m[key]
    return out
