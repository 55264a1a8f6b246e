"""Registration, validation and configure hooks, as a third-party plugin uses them."""

from __future__ import annotations

import textwrap

import pytest

from sftkit import SplitOptions
from sftkit.errors import Problem, RecipeError
from sftkit.hookspecs import hookimpl
from sftkit.plugins import make_plugin_manager
from sftkit.recipe.load import load_recipe_text
from sftkit.registry import Registry
from sftkit.specs import DatasetFormatSpec, EvaluatorSpec, PromptTemplateSpec
from sftkit.testing import registered


class QaOptions(SplitOptions):
    question_field: str = "question"


class Plugin:
    """A plugin object (not a module) that registers one component of each data kind."""

    configured: dict | None = None

    @hookimpl
    def register_dataset_formats(self, register):
        register(
            DatasetFormatSpec(name="my-qa", summary="qa", factory="x.y:Z", options_model=QaOptions)
        )

    @hookimpl
    def register_prompt_templates(self, register):
        register(PromptTemplateSpec(name="terse", summary="terse", factory="x.y:T"))

    @hookimpl
    def register_evaluators(self, register):
        register(EvaluatorSpec(name="rouge", summary="rouge", factory="x.y:R"))

    @hookimpl
    def validate_recipe(self, recipe):
        if recipe.data_format.spec.name == "my-qa" and recipe.recipe.data.packing:
            return [Problem("data.packing", "my-qa rows cannot be packed.", "set it to false")]
        return None

    @hookimpl
    def configure(self, settings):
        Plugin.configured = settings


RECIPE = textwrap.dedent(
    """
    model: {name_or_path: org/model}
    strategy: {name: lora}
    optimizer: {name: adamw}
    data:
      format: {name: my-qa, options: {question_feild: q}}
      template: {name: terse}
      packing: true
    evaluation: {evaluators: [{name: rouge}]}
    """
)


def test_plugin_components_are_resolved_and_validated_like_builtins():
    with registered(Plugin()) as registry:
        assert registry.formats.entry("my-qa").plugin.startswith("test-plugin")
        assert "terse" in registry.templates and "rouge" in registry.evaluators
        with pytest.raises(RecipeError) as info:
            load_recipe_text(RECIPE, registry=registry, source="plugin.yaml")
        text = str(info.value)
        # a typo in the plugin's option gets a did-you-mean, naming the plugin's component
        assert "data.format.options.question_feild" in text and "question_field" in text
        fixed = RECIPE.replace("question_feild", "question_field")
        with pytest.raises(RecipeError) as info:
            load_recipe_text(fixed, registry=registry, source="plugin.yaml")
        assert "data.packing: my-qa rows cannot be packed" in str(info.value)
        resolved = load_recipe_text(
            fixed.replace("packing: true", "packing: false"), registry=registry
        )
        assert resolved.data_format.options.question_field == "q"
        assert [e.spec.name for e in resolved.evaluators] == ["rouge"]


def test_configure_is_historic_and_receives_the_settings():
    manager = make_plugin_manager(autoload=False, disabled=["some-plugin"])
    Plugin.configured = None
    manager.register(Plugin(), "late")  # registered after configure() was called
    assert Plugin.configured == {"autoload": False, "disabled": ["some-plugin"]}
    assert "my-qa" in Registry.from_manager(manager).formats
