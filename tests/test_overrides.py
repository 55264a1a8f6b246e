"""The override parser: `a.b=value` sets, `~a.b` deletes, values typed as YAML."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sftkit.errors import OverrideError
from sftkit.recipe.overrides import apply_overrides, parse_override

keys = st.lists(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), min_size=1, max_size=4).map(
    tuple
)
scalars = st.one_of(
    st.integers(-(10**9), 10**9),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.from_regex(r"[a-z][a-z_\-/]{0,12}", fullmatch=True).filter(
        lambda s: s not in {"true", "false", "null", "yes", "no", "on", "off", "y", "n"}
    ),
)


def _yaml_scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


@given(keys, scalars)
def test_set_then_read_back_round_trips(path, value):
    override = parse_override(f"{'.'.join(path)}={_yaml_scalar(value)}")
    assert override.path == path and not override.delete
    assert str(parse_override(str(override))) == str(override)
    data = apply_overrides({}, [override])
    node = data
    for part in path[:-1]:
        node = node[part]
    assert node[path[-1]] == value


@given(keys, scalars)
def test_delete_after_set_restores_the_original(path, value):
    original = {"keep": 1}
    key = ".".join(path)
    if path[0] == "keep":
        return
    once = apply_overrides(original, [parse_override(f"{key}={_yaml_scalar(value)}")])
    again = apply_overrides(once, [parse_override(f"~{key}")])
    node = again
    for part in path[:-1]:
        node = node[part]
    assert path[-1] not in node
    assert again["keep"] == 1
    assert original == {"keep": 1}  # overrides never mutate their input


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a=8", 8),
        ("a=2e-4", 2e-4),
        ("a=true", True),
        ("a=null", None),
        ("a=[q_proj, v_proj]", ["q_proj", "v_proj"]),
        ("a={r: 8}", {"r": 8}),
        ("a=hello world", "hello world"),
        ("a=", ""),
        ("a=[unclosed", "[unclosed"),
    ],
)
def test_values_are_typed_as_yaml(text, expected):
    assert apply_overrides({}, [parse_override(text)])["a"] == expected


def test_string_fields_keep_the_text_verbatim():
    data = apply_overrides({}, [parse_override("a=1234")], is_string=lambda p: p == ("a",))
    assert data["a"] == "1234"


def test_list_indices_set_and_append():
    data = {"items": [{"name": "x"}]}
    out = apply_overrides(data, [parse_override("items.0.name=y"), parse_override("items.1=z")])
    assert out["items"] == [{"name": "y"}, "z"]


@pytest.mark.parametrize(
    "text",
    ["novalue", "~a=1", "=3", "a..b=1", ".a=1", "items.9=1", "~missing.key", "scalar.x=1"],
)
def test_malformed_overrides_are_override_errors(text):
    with pytest.raises(OverrideError) as info:
        apply_overrides({"items": [], "scalar": 3}, [parse_override(text)])
    assert info.value.exit_code == 2
    assert str(info.value)
