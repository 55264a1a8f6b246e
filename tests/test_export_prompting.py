"""An exported model can be prompted: its chat template renders exactly what training saw
(each built-in template, its options, an override), so `apply_chat_template` gives the
evaluation's prompt ids, and the model card's usage snippet, run as written against the
export, prints the answer sftkit's evaluation generates for the same problem."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from sftkit.cli import run_cli  # noqa: E402
from sftkit.data.example import Example  # noqa: E402
from sftkit.data.tokenize import encode_prompt  # noqa: E402
from sftkit.recipe.load import load_recipe_text  # noqa: E402
from sftkit.testing import fresh_registry  # noqa: E402

ASSET = Path(__file__).resolve().parent.parent / "sftkit" / "assets" / "models" / "tiny-llama"
QUESTION = 'Tom has 3 apples and buys "4" more.\nHow many {{ apples }} now?'
OVERRIDE = (
    "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% if m['role'] == 'assistant' "
    "%}{{ eos_token }}{% endif %}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
)
TEMPLATES = [
    ("tutor", {}),
    ("tutor", {"instruction": ""}),
    ("chat", {}),
    ("chat", {"system": "Be brief: {% raw %}", "instruction": None}),
    ("chat", {"system": "Be brief.", "chat_template": OVERRIDE}),
]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(ASSET))


@pytest.mark.parametrize(("name", "options"), TEMPLATES, ids=lambda v: json.dumps(v))
def test_the_exported_chat_template_renders_the_training_prompt(tokenizer, name, options):
    from sftkit.builtin.templates import ChatTemplateOptions, TutorOptions
    from sftkit.data.templates import ChatTemplate, TutorTemplate

    template = (
        TutorTemplate(TutorOptions(**options))
        if name == "tutor"
        else ChatTemplate(ChatTemplateOptions(**options))
    )
    jinja = template.export_chat_template(tokenizer)
    for prompt in (
        QUESTION,
        [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}],
    ):
        example = Example("x", prompt, "#### 7")
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        text = tokenizer.apply_chat_template(
            messages, chat_template=jinja, add_generation_prompt=True, tokenize=False
        )
        assert text == template.prompt_text(example, tokenizer)


RECIPE = """
model: {{name_or_path: "builtin:tiny-llama", dtype: float32, random_init: true}}
strategy: {{name: full-sft}}
optimizer: {{name: adamw}}
data:
  format: {{name: synthetic-arithmetic, options: {{train_size: 16, test_size: 4, dev_size: 2}}}}
  template: {{name: tutor, options: {{instruction: ""}}}}
hardware: {{gpu: cpu}}
output_dir: {out}
"""


def finished_run(root: Path) -> Path:
    """The quickstart's model and template as a finished run directory (untrained weights:
    the point is that both ways of prompting give the same ids, hence the same answer)."""
    from sftkit.modeling import build_model, load_tokenizer
    from sftkit.runpaths import RunPaths
    from sftkit.training.runfiles import write_recipe

    out = root / "run"
    resolved = load_recipe_text(RECIPE.format(out=out), registry=fresh_registry())
    paths = RunPaths(out)
    out.mkdir(parents=True)
    write_recipe(paths, resolved)
    tokenizer = load_tokenizer(resolved.recipe)
    torch.manual_seed(0)
    model = build_model(resolved, tokenizer, base_dir=paths.base)
    model.save_pretrained(paths.final)
    tokenizer.save_pretrained(paths.final)
    (out / "run.json").write_text(json.dumps({"status": "completed", "steps": 0}))
    return out


def test_the_export_answers_through_apply_chat_template_as_evaluation_does(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftkit.builtin.templates import TutorOptions
    from sftkit.data.templates import TutorTemplate
    from sftkit.evaluation.generate import greedy_generate

    run = finished_run(tmp_path)
    export = tmp_path / "export"
    assert run_cli(["export", str(run), "--output-dir", str(export)]) == 0
    tokenizer = AutoTokenizer.from_pretrained(str(export))
    model = AutoModelForCausalLM.from_pretrained(str(export))
    template = TutorTemplate(TutorOptions(instruction=""))
    example = Example("test-00000", QUESTION, "#### 7")

    chat_ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, return_dict=True
    )["input_ids"]
    assert list(chat_ids) == encode_prompt(template, example, tokenizer)
    evaluated = greedy_generate(
        model, tokenizer, [template.prompt_text(example, tokenizer)], max_new_tokens=256
    )[0].text

    # the card's snippet, as written, with the export's path for its name
    card = (export / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", card, re.DOTALL)
    assert snippet is not None
    code = snippet.group(1).replace('"run"', json.dumps(str(export)))
    code = code.replace(
        re.search(r'"content": "(.*?)"', code).group(1),  # type: ignore[union-attr]
        json.dumps(QUESTION)[1:-1],
    )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})
    assert printed.getvalue().rstrip("\n") == evaluated.rstrip("\n")
    assert evaluated.strip(), "the model generated nothing: the comparison would prove little"
