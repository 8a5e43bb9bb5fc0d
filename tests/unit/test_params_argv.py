from __future__ import annotations

import pytest

from rota.worker.executors.command import params_to_argv


def test_scalars_in_order() -> None:
    assert params_to_argv({"name": "x", "count": 3, "ratio": 0.5}) == [
        "--name=x",
        "--count=3",
        "--ratio=0.5",
    ]


def test_booleans_and_none() -> None:
    assert params_to_argv({"verbose": True, "dry": False, "skip": None}) == ["--verbose"]


def test_list_repeats_the_option() -> None:
    assert params_to_argv({"tag": ["a", "b", 1]}) == ["--tag=a", "--tag=b", "--tag=1"]
    assert params_to_argv({"tag": []}) == []


def test_dict_is_json() -> None:
    assert params_to_argv({"opts": {"a": 1, "b": [True, None]}}) == [
        '--opts={"a":1,"b":[true,null]}'
    ]
    assert params_to_argv({"item": [{"a": 1}]}) == ['--item={"a":1}']


def test_empty_string_is_kept() -> None:
    assert params_to_argv({"sep": ""}) == ["--sep="]


def test_empty_params() -> None:
    assert params_to_argv({}) == []


def test_a_value_never_stands_alone() -> None:
    assert params_to_argv({"name": "-rf", "x": "--"}) == ["--name=-rf", "--x=--"]


@pytest.mark.parametrize("key", ["", "-x", "a=b", "a b", "1a", "é"])
def test_keys_that_are_not_plain_names_raise(key: str) -> None:
    with pytest.raises(ValueError):
        params_to_argv({key: True})


def test_nul_raises() -> None:
    with pytest.raises(ValueError):
        params_to_argv({"name": "a\x00b"})
