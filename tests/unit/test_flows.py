"""Pure parts of flow runs: task record truncation and flow.yaml validation."""

from __future__ import annotations

import orjson
import pytest

from rota.domain.taskrecords import first_failure, fit_records
from rota.flows import FlowError, flow_from_yaml, load_registry

REG = load_registry(["rota.contrib.example_flows"], entry_points=False)


def _record(state: str = "SUCCEEDED", output: object = None, error: str | None = None) -> dict:
    return {
        "state": state,
        "started_at": 1.0,
        "ended_at": 2.0,
        "duration_ms": 1000.0,
        "error": error,
        "traceback": None,
        "inputs": {},
        "output": output,
        "artifacts": {},
    }


def test_records_under_the_limit_are_kept_whole():
    records = {"a": _record(output=[1, 2]), "b": _record()}
    assert fit_records(records, limit=10_000) == (records, False)


def test_records_past_the_limit_are_cut_and_flagged_within_the_limit():
    records = {f"t{i}": _record(output="x" * 3000) for i in range(10)}
    fitted, truncated = fit_records(records, limit=8000)
    assert truncated
    assert len(orjson.dumps(fitted)) <= 8000
    assert list(fitted) == [n for n in records if n in fitted]  # order kept
    assert fitted["t0"] == records["t0"]  # whole while they fit
    stubs = [r for r in fitted.values() if r.get("truncated")]
    assert stubs and all("output" not in r and r["state"] == "SUCCEEDED" for r in stubs)


def test_a_failed_tasks_error_survives_truncation():
    records = {f"t{i}": _record(output="x" * 5000) for i in range(5)}
    records["bad"] = _record("FAILED", output="y" * 5000, error="ValueError: no")
    fitted, truncated = fit_records(records, limit=6000)
    assert truncated
    assert fitted["bad"]["error"] == "ValueError: no"
    assert first_failure(fitted) == ("bad", "ValueError: no")


def test_records_too_big_even_as_stubs_are_dropped():
    records = {f"task-{i}": _record(error="e" * 900) for i in range(50)}
    fitted, truncated = fit_records(records, limit=2000)
    assert truncated and 0 < len(fitted) < 50
    assert len(orjson.dumps(fitted)) <= 2000


def test_yaml_builds_a_flow_from_registered_tasks_without_touching_them():
    before = {t.name: set(t.dependencies) for t in REG.tasks.values()}
    spec = flow_from_yaml(
        "flow:\n  graph: extract >> load\n  defaults: {count: 2}\n"
        "tasks:\n  load:\n    inputs: {transform: [5]}\n",
        REG,
        flow_name="mine",
    )
    assert spec.flow.name == "mine"
    assert {t.name for t in spec.flow.tasks} == {"extract", "load"}
    assert spec.defaults == {"count": 2}
    load = next(t for t in spec.flow.tasks if t.name == "load")
    assert load.inputs == {"transform": [5]}
    assert {t.name: set(t.dependencies) for t in REG.tasks.values()} == before


def test_yaml_use_and_callable_pick_registered_tasks_only():
    spec = flow_from_yaml(
        "flow:\n  graph: first >> second\n"
        "tasks:\n  first:\n    use: extract\n"
        "  second:\n    callable: rota.contrib.example_flows:transform\n",
        REG,
    )
    assert {t.name for t in spec.flow.tasks} == {"first", "second"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a list\n", "invalid flow.yaml"),
        ("flow:\n  graph: extract >\n", "invalid flow graph"),
        ("flow:\n  graph: x\n  unknown_key: 1\n", "invalid flow.yaml"),
        ("flow:\n  graph: a\ntasks:\n  a:\n    use: nothing\n", "unknown task 'nothing'"),
        ("flow:\n  graph: a\ntasks:\n  a:\n    callable: subprocess:run\n", "not a registered"),
        ("flow:\n  graph: extract\nruntime:\n  expose_env: [HOME]\n", "expose"),
        ("flow:\n  graph: 'extract[$env.N]'\n", "$env"),
    ],
)
def test_bad_yaml_is_refused_with_a_reason(text, message):
    with pytest.raises(FlowError) as err:
        flow_from_yaml(text, REG)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "text",
    [
        # A YAML escape hides "$env" from the raw text; the parsed string has it.
        'flow:\n  graph: extract\ntasks:\n  extract:\n    inputs: {count: "\\x24env.SECRET"}\n',
        'flow:\n  graph: extract\n  defaults:\n    deep: [{"\\u0024env.SECRET": 1}]\n',
        # Graph expressions: $env, and Pyoco's env. shorthand, in the graph or a pipe.
        'flow:\n  graph: "switch(on={{\\x24env.SECRET}}){ x: extract; default: prepare; }"\n',
        "flow:\n  graph: |\n    switch(on={{env.SECRET}}){ x: extract; default: prepare; }\n",
        "flow:\n  graph: pipe(p)\npipes:\n  p: |\n    switch(on={{ env.SECRET }}){ x: extract; }\n",
    ],
)
def test_yaml_that_reads_the_environment_is_refused(text):
    with pytest.raises(FlowError, match="environment"):
        flow_from_yaml(text, REG)


@pytest.mark.parametrize(
    "text",
    [
        # From a loop frame's __init__, os.environ is three attributes away.
        "flow:\n  graph: |\n    foreach(over={{items}}, item=it){\n"
        "      until(cond={{$ctx.loop.__init__.__globals__.threading._os.environ.K == 1}},"
        " max_iter=1){ extract }\n    }\n  defaults: {items: [1]}\n",
        "flow:\n  graph: foreach(over={{items}}, item=it){ until(cond={{loop.__class__}}){ extract } }\n",
        "flow:\n  graph: extract >> transform\n"
        "tasks:\n  transform:\n    inputs: {extract: $node.extract.output.__class__}\n",
    ],
)
def test_yaml_references_into_python_objects_are_refused(text):
    with pytest.raises(FlowError, match="Python objects"):
        flow_from_yaml(text, REG)


def test_yaml_references_and_plain_strings_that_only_look_alike_are_kept():
    spec = flow_from_yaml(
        "flow:\n  graph: extract >> transform >> load\n"
        "  defaults: {note: see env.txt and a._b, price: 5 $ or so}\n"
        "tasks:\n  extract:\n    inputs: {count: $ctx.params.count}\n"
        "  load:\n    inputs: {transform: $node.transform.output}\n",
        REG,
    )
    assert spec.defaults == {"note": "see env.txt and a._b", "price": "5 $ or so"}


@pytest.mark.parametrize(
    "text",
    [
        "flow:\n  graph: extract\n  defaults:\n    a: &a [1, 2]\n    b: *a\n",
        "base: &base {count: 2}\nflow:\n  graph: extract\n  defaults:\n    <<: *base\n",
    ],
)
def test_yaml_aliases_are_refused(text):
    with pytest.raises(FlowError, match="aliases"):
        flow_from_yaml(text, REG)


def test_an_anchor_nothing_refers_to_is_harmless():
    spec = flow_from_yaml("flow:\n  graph: extract\n  defaults: &d {count: 2}\n", REG)
    assert spec.defaults == {"count": 2}


@pytest.mark.parametrize(
    ("task", "key", "value"),
    [("first", "use", "[1]"), ("second", "callable", "{a: 1}"), ("third", "use", "7")],
)
def test_a_use_or_callable_that_is_not_a_string_is_refused_naming_the_task(task, key, value):
    text = f"flow:\n  graph: {task}\ntasks:\n  {task}:\n    {key}: {value}\n"
    with pytest.raises(FlowError) as err:
        flow_from_yaml(text, REG)
    assert f"task {task!r}" in str(err.value) and key in str(err.value)


def test_defaults_are_json_values():
    spec = flow_from_yaml("flow:\n  graph: extract\n  defaults: {day: 2024-05-01}\n", REG)
    assert spec.defaults == {"day": "2024-05-01"}
    with pytest.raises(FlowError, match="not JSON"):
        flow_from_yaml("flow:\n  graph: extract\n  defaults: {1: one}\n", REG)
