"""Recipe validation: the shipped recipes, error reporting, and random mutations."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftkit.errors import DataError, RecipeError, SftkitError
from sftkit.recipe.load import load_recipe, load_recipe_text, validate_recipe_data

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
SHIPPED = sorted(RECIPES.glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_recipes_validate(path, registry):
    resolved = load_recipe(path, registry=registry)
    assert resolved.recipe.model.name_or_path
    assert path.read_text().lstrip().startswith("#"), "every recipe starts with a comment header"


def test_qlora_recipe_is_the_mission_setup(registry):
    r = load_recipe(RECIPES / "r1_gsm8k_qlora.yaml", registry=registry)
    assert r.recipe.model.name_or_path == "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
    assert r.strategy.spec.name == "qlora-nf4"
    assert r.strategy.options.quant_type == "nf4" and r.strategy.options.double_quant
    assert r.strategy.options.compute_dtype == "bfloat16"
    assert r.strategy.options.target_modules == "all-linear"
    assert r.optimizer.spec.name == "paged-adamw-8bit"
    assert r.recipe.training.gradient_checkpointing
    assert r.recipe.hardware.gpu == "A100-40GB"


def test_overrides_are_typed_by_the_schema(registry):
    r = load_recipe(
        RECIPES / "r1_gsm8k_qlora.yaml",
        ["strategy.options.rank=8", "training.micro_batch_size=2", "model.revision=1234"],
        registry=registry,
    )
    assert r.strategy.options.rank == 8
    assert r.recipe.training.micro_batch_size == 2
    assert r.recipe.model.revision == "1234"


def test_misspelled_option_names_key_and_suggests(registry):
    with pytest.raises(RecipeError) as info:
        load_recipe(RECIPES / "r1_gsm8k_qlora.yaml", ["strategy.options.rnk=8"], registry=registry)
    text = str(info.value)
    assert "strategy.options.rnk" in text and "rank" in text and "r1_gsm8k_qlora.yaml" in text
    assert info.value.exit_code == 2


def test_every_problem_is_reported_at_once(registry):
    text = """
model: {name_or_path: x/y, dtyp: bfloat16}
strategy: {name: qlora-nf5}
optimizer: {name: adamw, options: {lr: -1}}
training: {micro_batch_size: 0, max_seq_lenght: 10}
"""
    with pytest.raises(RecipeError) as info:
        load_recipe_text(text, registry=registry, source="bad.yaml")
    paths = {p.path for p in info.value.problems}
    assert {"model.dtyp", "training.micro_batch_size", "training.max_seq_lenght"} <= paths
    rendered = str(info.value)
    assert "qlora-nf4" in rendered  # did-you-mean for the component name
    assert "max_seq_length" in rendered  # did-you-mean for the key
    assert "bad.yaml" in rendered


def test_incompatible_strategy_and_optimizer_is_a_recipe_error(registry):
    data = yaml.safe_load((RECIPES / "r1_gsm8k_qlora.yaml").read_text())
    problems = []
    for opt in registry.optimizers:
        for strat in registry.strategies:
            reason = opt.spec.incompatibility(strat.spec)
            if reason:
                data["strategy"] = {"name": strat.spec.name}
                data["optimizer"] = {"name": opt.spec.name}
                with pytest.raises(RecipeError) as info:
                    validate_recipe_data(copy.deepcopy(data), registry=registry)
                problems.append(str(info.value))
    assert all("cannot train" in p for p in problems)


def test_duplicate_yaml_keys_and_broken_yaml_name_the_line(registry):
    with pytest.raises(RecipeError) as info:
        load_recipe_text("model: {name_or_path: a}\nmodel: {name_or_path: b}\n", registry=registry)
    assert "duplicate key 'model'" in str(info.value) and "line 2" in str(info.value)
    with pytest.raises(RecipeError) as info:
        load_recipe_text("model: [unclosed\n", registry=registry)
    assert "invalid YAML" in str(info.value)


def test_missing_recipe_file_suggests_a_bundled_one(registry):
    with pytest.raises(DataError) as info:
        load_recipe("r1_gsm8k_qlor", registry=registry)
    assert "r1_gsm8k_qlora" in str(info.value)


def test_bundled_recipe_by_name(registry):
    assert load_recipe("r1_gsm8k_qlora", registry=registry).strategy.spec.name == "qlora-nf4"


# ------------------------------------------------------------------ random mutations

BASE = yaml.safe_load((RECIPES / "r1_gsm8k_qlora.yaml").read_text())


def _paths(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield (*prefix, i)
            yield from _paths(value, (*prefix, i))


ALL_PATHS = list(_paths(BASE))
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
mutation = st.tuples(st.sampled_from(["set", "delete", "add"]), st.sampled_from(ALL_PATHS), junk)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutation, min_size=1, max_size=4))
def test_mutated_recipes_are_valid_or_a_keyed_error(mutations):
    from sftkit.testing import fresh_registry

    registry = _REGISTRY.setdefault("r", fresh_registry())
    data = copy.deepcopy(BASE)
    for op, path, value in mutations:
        parent = data
        try:
            for part in path[:-1]:
                parent = parent[part]
            if op == "set":
                parent[path[-1]] = value
            elif op == "delete":
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[f"{path[-1]}_extra"] = value
        except (KeyError, IndexError, TypeError):
            continue
    try:
        validate_recipe_data(data, registry=registry, source="mutated.yaml")
    except RecipeError as exc:
        assert exc.problems, "a recipe error lists its problems"
        for problem in exc.problems:
            assert problem.message
        assert "mutated.yaml" in str(exc)
    except SftkitError as exc:  # pragma: no cover - any other typed error must still say where
        assert str(exc)


_REGISTRY: dict[str, object] = {}
