"""Run parameters: merge, JSON Schema validation, schema check, stable hash."""

from __future__ import annotations

import copy

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rota.domain.params import check_schema, merge_params, params_hash, validate_params
from rota.errors import InvalidInput

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=10)
)
#: Params keys are plain names (issue 13); text holds no NUL.
plain_keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,7}", fullmatch=True)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(
                st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=6
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)
params_dicts = st.dictionaries(plain_keys, json_values, max_size=6)

SCHEMA = {
    "type": "object",
    "required": ["date"],
    "properties": {
        "date": {"type": "string"},
        "limits": {
            "type": "object",
            "properties": {"max": {"type": "integer", "minimum": 1}},
        },
        "items": {"type": "array", "items": {"type": "string"}},
    },
}


def field_of(schema, params) -> str:
    with pytest.raises(InvalidInput) as info:
        validate_params(schema, params)
    return info.value.field


# --- merge ---------------------------------------------------------------------


def test_merge_given_wins_over_defaults():
    defaults = {"region": "eu", "retries": 3}
    assert merge_params(defaults, {"retries": 5, "extra": True}) == {
        "region": "eu",
        "retries": 5,
        "extra": True,
    }


def test_merge_with_nothing_given_is_a_copy_of_the_defaults():
    defaults = {"a": 1}
    merged = merge_params(defaults, None)
    assert merged == {"a": 1}
    merged["a"] = 2
    assert defaults == {"a": 1}
    assert merge_params(None, {"b": 2}) == {"b": 2}  # type: ignore[arg-type]
    assert merge_params({}, {}) == {}


def test_merge_does_not_mutate_its_inputs():
    defaults, given_ = {"a": 1, "b": 2}, {"b": 3}
    merge_params(defaults, given_)
    assert defaults == {"a": 1, "b": 2} and given_ == {"b": 3}


@settings(max_examples=100)
@given(defaults=params_dicts, given_=params_dicts)
def test_merge_precedence_property(defaults, given_):
    merged = merge_params(defaults, given_)
    assert set(merged) == set(defaults) | set(given_)
    for key, value in merged.items():
        expected = given_[key] if key in given_ else defaults[key]
        assert value is expected


# --- validate --------------------------------------------------------------------


def test_valid_params_pass():
    validate_params(SCHEMA, {"date": "2024-01-01", "limits": {"max": 3}, "items": ["a"]})
    validate_params(SCHEMA, {"date": "2024-01-01"})


def test_nested_field_is_named_by_path():
    assert field_of(SCHEMA, {"date": "d", "limits": {"max": "ten"}}) == "params.limits.max"
    assert field_of(SCHEMA, {"date": "d", "limits": {"max": 0}}) == "params.limits.max"


def test_array_index_is_part_of_the_path():
    assert field_of(SCHEMA, {"date": "d", "items": ["ok", 7]}) == "params.items.1"


def test_missing_required_property_is_named():
    with pytest.raises(InvalidInput) as info:
        validate_params(SCHEMA, {"limits": {"max": 2}})
    assert info.value.field == "params.date"
    assert str(info.value).startswith("params.date: ")
    assert "date" in info.value.message


def test_missing_required_property_named_among_several():
    schema = {"type": "object", "required": ["a", "b"], "properties": {"a": {}, "b": {}}}
    assert field_of(schema, {"a": 1}) == "params.b"


def test_missing_nested_required_property_is_named():
    schema = {
        "type": "object",
        "properties": {"limits": {"type": "object", "required": ["max"]}},
    }
    assert field_of(schema, {"limits": {}}) == "params.limits.max"


def test_wrong_top_level_type_names_params():
    assert field_of({"type": "object"}, []) == "params"  # type: ignore[arg-type]


def test_first_offending_field_is_deterministic():
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}}
    # Both fields are wrong; the one first by path is reported, whatever the dict order.
    assert field_of(schema, {"b": 1, "a": 1}) == "params.a"
    assert field_of(schema, {"a": 1, "b": 1}) == "params.a"


def test_invalid_input_is_not_retryable():
    with pytest.raises(InvalidInput) as info:
        validate_params(SCHEMA, {})
    assert info.value.retryable is False


@settings(max_examples=100)
@given(params_dicts)
def test_empty_schema_accepts_anything(params):
    validate_params({}, params)
    validate_params(None, params)  # type: ignore[arg-type]


@settings(max_examples=50)
@given(st.dictionaries(plain_keys, st.integers(-(2**63), 2**63 - 1), max_size=5))
def test_validation_result_does_not_depend_on_schema_key_order(params):
    schema = {"type": "object", "additionalProperties": {"type": "integer"}}
    reordered = {"additionalProperties": {"type": "integer"}, "type": "object"}
    validate_params(schema, params)
    validate_params(reordered, params)


# --- check_schema -----------------------------------------------------------------


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "not-a-type"},
        {"type": "object", "required": "date"},
        {"properties": {"x": {"minimum": "one"}}},
    ],
)
def test_check_schema_rejects_invalid_schema(schema):
    with pytest.raises(InvalidInput) as info:
        check_schema(schema)
    assert info.value.field == "params_schema"
    assert "invalid" in info.value.message


def test_check_schema_accepts_valid_schema():
    check_schema(SCHEMA)
    check_schema({})


# --- params_hash ------------------------------------------------------------------


def _reverse_keys(value):
    if isinstance(value, dict):
        return {k: _reverse_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reverse_keys(v) for v in value]
    return value


@settings(max_examples=150)
@given(params_dicts)
def test_params_hash_is_independent_of_key_order(params):
    reordered = _reverse_keys(params)
    assert reordered == params
    assert params_hash(reordered) == params_hash(params)
    assert params_hash(copy.deepcopy(params)) == params_hash(params)


def test_params_hash_key_order_example():
    assert params_hash({"a": 1, "b": {"x": 1, "y": 2}}) == params_hash(
        {"b": {"y": 2, "x": 1}, "a": 1}
    )


@settings(max_examples=60)
@given(params_dicts, params_dicts)
def test_params_hash_differs_for_different_params(a, b):
    assume(a != b)
    assert params_hash(a) != params_hash(b)


def test_params_hash_differs_for_different_values():
    assert params_hash({"date": "2024-01-01"}) != params_hash({"date": "2024-01-02"})
    assert params_hash({"a": 1}) != params_hash({"a": "1"})
    assert params_hash({"a": [1, 2]}) != params_hash({"a": [2, 1]})
    assert params_hash({}) != params_hash({"": None})


def test_params_hash_shape():
    h = params_hash({"a": 1})
    assert len(h) == 16
    int(h, 16)
    assert params_hash({"a": 1}) == h


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, {"deep": [2**70]}])
def test_integers_beyond_64_bits_are_refused_with_the_field(value):
    from rota.domain.params import validate_params

    with pytest.raises(InvalidInput) as info:
        validate_params({}, {"n": value})
    assert info.value.field == "params" and "64-bit" in info.value.message
