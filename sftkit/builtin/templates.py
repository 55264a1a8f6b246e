"""Built-in prompt templates: the seed's plain tutor prompt and the tokenizer's chat template."""

from __future__ import annotations

from pydantic import Field

from sftkit.hookspecs import Register, hookimpl
from sftkit.specs import Options, PromptTemplateSpec

TUTOR_INSTRUCTION = (
    "Solve the problem step-by-step, then give the final answer in the format '#### 42'."
)


class TutorOptions(Options):
    instruction: str = Field(
        default=TUTOR_INSTRUCTION, description="Text placed before the question."
    )


class ChatTemplateOptions(Options):
    system: str | None = Field(default=None, description="Optional system message.")
    instruction: str | None = Field(
        default=TUTOR_INSTRUCTION, description="Appended to the user turn; null for none."
    )
    keep_reasoning: bool = Field(
        default=True, description="Keep <think> reasoning in the completion (R1-style models)."
    )
    chat_template: str | None = Field(
        default=None,
        description="A chat template (inline Jinja, or the path of a .jinja file) used instead "
        "of the tokenizer's.",
    )


TEMPLATES = (
    PromptTemplateSpec(
        name="tutor",
        summary="Plain text: instruction, question, then the worked answer ending '#### N' and EOS.",
        factory="sftkit.data.templates:TutorTemplate",
        options_model=TutorOptions,
    ),
    PromptTemplateSpec(
        name="chat",
        summary="The tokenizer's own chat template (user turn = question, assistant turn = answer).",
        factory="sftkit.data.templates:ChatTemplate",
        options_model=ChatTemplateOptions,
    ),
)


@hookimpl(trylast=True)
def register_prompt_templates(register: Register) -> None:
    for spec in TEMPLATES:
        register(spec)
