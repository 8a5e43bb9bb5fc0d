"""Pyoco flows rota can run: the registry of flows and tasks, and flow.yaml.

A flow is found by name among the Pyoco ``Flow`` objects of the configured flow
modules (``RotaSettings.flow_modules``) and of the ``rota.flows`` entry points.
Tasks (``@pyoco.task`` functions) are registered the same way, from the same
modules, plus every task of a registered flow.

An uploaded flow.yaml is parsed with Pyoco's own loader (``PyocoConfig``) and its
graph with Pyoco's graph parser; it is never executed as Python. Unlike
``pyoco run``, the tasks it names must all be registered tasks: ``use:`` and
``callable:`` only pick among them (no import of a path the file chose), and
nothing in it may read the worker's environment or reach into Python objects
(see :func:`parse_config`). Loop and switch expressions go through Pyoco's
restricted evaluator. YAML aliases are refused: a few hundred bytes of nested
aliases expand to gigabytes.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from types import ModuleType
from typing import Any

import orjson
import yaml  # pyoco's YAML library; no stubs pinned
from pyoco.core.models import Flow, Task
from pyoco.dsl.graph import build_flow_from_graph
from pyoco.dsl.syntax import TaskWrapper
from pyoco.schemas.config import PyocoConfig

#: Entry point group of packages that provide flows (a module, or a Flow).
ENTRY_POINT_GROUP = "rota.flows"

#: Largest flow.yaml accepted, in bytes (it travels in the snapshot and the dispatch).
FLOW_YAML_LIMIT = 64 * 1024


class FlowError(ValueError):
    """A flow or flow.yaml rota cannot run; the message says why."""


class UnknownFlow(FlowError):
    pass


@dataclass
class Registry:
    flows: dict[str, Flow] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    #: Modules or entry points that could not be loaded, and why.
    errors: dict[str, str] = field(default_factory=dict)

    def add_module(self, module: ModuleType) -> None:
        for name, obj in vars(module).items():
            if isinstance(obj, Flow):
                self.add_flow(obj)
            elif isinstance(obj, TaskWrapper):
                self.tasks.setdefault(name, obj.task)
            elif isinstance(obj, Task):
                self.tasks.setdefault(name, obj)

    def add_flow(self, flow: Flow) -> None:
        self.flows.setdefault(flow.name, flow)
        for task in flow.tasks:
            self.tasks.setdefault(task.name, task)

    def flow(self, name: str) -> Flow:
        try:
            return self.flows[name]
        except KeyError:
            known = ", ".join(sorted(self.flows)) or "none"
            raise UnknownFlow(f"no flow named {name!r} (known flows: {known})") from None


def load_registry(modules: Iterable[str], *, entry_points: bool = True) -> Registry:
    """Import ``modules`` and the ``rota.flows`` entry points and collect their
    flows and tasks. A module that fails to import is recorded in ``errors``."""
    reg = Registry()
    for name in modules:
        try:
            reg.add_module(importlib.import_module(name))
        except Exception as exc:  # a module may raise anything at import time
            reg.errors[name] = f"{type(exc).__name__}: {exc}"
    if entry_points:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                obj = ep.load()
            except Exception as exc:
                reg.errors[f"entry point {ep.name}"] = f"{type(exc).__name__}: {exc}"
                continue
            if isinstance(obj, ModuleType):
                reg.add_module(obj)
            elif isinstance(obj, Flow):
                reg.add_flow(obj)
    return reg


@lru_cache(maxsize=8)
def _cached(modules: tuple[str, ...]) -> Registry:
    return load_registry(modules)


def registry(modules: Iterable[str]) -> Registry:
    """The registry of this process for ``modules`` (loaded once)."""
    return _cached(tuple(modules))


def clear_registry() -> None:
    _cached.cache_clear()


# -- flow.yaml ------------------------------------------------------------------------


@dataclass
class YamlFlow:
    flow: Flow
    #: ``flow.defaults`` of the file: params the submitted ones are merged over.
    defaults: dict[str, Any]


def _clone(task: Task, name: str) -> Task:
    # Building a graph links the tasks it uses (dependencies, dependents), so it
    # must work on copies: the registry's tasks are shared by every run.
    return Task(
        func=task.func,
        name=name,
        inputs=copy.deepcopy(task.inputs),
        outputs=list(task.outputs),
        parallel_group=task.parallel_group,
        fail_policy=task.fail_policy,
        retries=task.retries,
        timeout_sec=task.timeout_sec,
        trigger_policy=task.trigger_policy,
    )


def _callable_path(task: Task) -> str:
    return f"{task.func.__module__}:{task.func.__qualname__}"


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing aliases (``*name``, and so ``<<: *name``)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not allowed in flow.yaml", event.start_mark
            )
        return super().compose_node(parent, index)


#: Pyoco's shorthand for an environment variable in a graph expression
#: (``{{env.KEY}}`` compiles to ``$env.KEY``).
_ENV_SHORTHAND = re.compile(r"(?<![\w.$])env\.")


def _strings(data: Any) -> Iterable[str]:
    """Every string in a parsed YAML document, keys and values, at any depth."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            for key, value in item.items():
                stack.extend((key, value))
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)


def _refuse_host_access(data: Any) -> None:
    # Pyoco reads the environment through ``$env.KEY`` (Context.resolve, for task
    # inputs) and ``$env.KEY`` / ``env.KEY`` in graph expressions (the evaluator
    # gets all of os.environ). Its references also walk attributes with getattr
    # (``$node.<task>.output.<attr>``, ``$ctx.<path>`` in expressions), and from a
    # ``__dunder__`` or ``_private`` attribute os.environ is a few steps away.
    # Checked on the parsed document: YAML escapes ("\x24env") hide it in the text.
    for text in _strings(data):
        if "$env" in text:
            raise FlowError("flow.yaml may not read the environment ($env references are refused)")
        if text.startswith("$") and "._" in text:
            raise FlowError(f"flow.yaml may not reach into Python objects: {text[:100]!r}")


def _refuse_host_access_in_graph(name: str, graph: str) -> None:
    if _ENV_SHORTHAND.search(graph):
        raise FlowError(f"flow.yaml may not read the environment (env. in an expression of {name})")
    if "._" in graph:
        raise FlowError(
            f"flow.yaml may not reach into Python objects ('._' in an expression of {name})"
        )


def parse_config(text: str) -> PyocoConfig:
    """flow.yaml through Pyoco's loader (which reads a path, hence the file),
    after a check of the document with aliases refused: nothing in it may read
    the environment (``$env``, ``env.`` in a graph) or follow a reference into
    an attribute whose name starts with ``_``."""
    if len(text.encode()) > FLOW_YAML_LIMIT:
        raise FlowError(f"flow.yaml is larger than {FLOW_YAML_LIMIT} bytes")
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader: no Python tags
    except Exception as exc:  # yaml.YAMLError, RecursionError for deep nesting
        raise FlowError(f"invalid flow.yaml: {_first_line(exc)}") from None
    _refuse_host_access(data)
    fd, path = tempfile.mkstemp(prefix="rota-flow-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            config = PyocoConfig.from_yaml(path)
        except Exception as exc:  # yaml.YAMLError, and TypeError/ValueError for bad shapes
            raise FlowError(f"invalid flow.yaml: {_first_line(exc)}") from None
    finally:
        os.unlink(path)
    if config.flow is None or not isinstance(config.flow.graph, str) or not config.flow.graph:
        raise FlowError("invalid flow.yaml: it needs 'flow:' with a 'graph:'")
    if not isinstance(config.flow.defaults, dict):
        raise FlowError("invalid flow.yaml: 'flow.defaults' must be a mapping")
    if config.runtime.expose_env:
        raise FlowError("flow.yaml may not expose the environment (runtime.expose_env)")
    _refuse_host_access_in_graph("flow.graph", config.flow.graph)
    for name, pipe in config.pipes.items():
        _refuse_host_access_in_graph(f"pipes.{name}", pipe)
    return config


def flow_from_yaml(text: str, reg: Registry, *, flow_name: str = "main") -> YamlFlow:
    """Build the flow a flow.yaml describes from registered tasks only.

    Raises :class:`FlowError` for invalid YAML, an unknown task, or a graph
    Pyoco refuses."""
    config = parse_config(text)
    tasks = {name: _clone(t, name) for name, t in reg.tasks.items()}
    by_path = {_callable_path(t): t for t in reg.tasks.values()}
    for name, conf in config.tasks.items():
        for key in ("use", "callable"):
            value = getattr(conf, key)
            if value is not None and not isinstance(value, str):
                raise FlowError(f"task {name!r}: {key!r} must be a task name, not {value!r}"[:300])
        if conf.use:
            base = reg.tasks.get(conf.use)
            if base is None:
                raise FlowError(f"task {name!r} uses unknown task {conf.use!r}")
        elif conf.callable:
            base = by_path.get(conf.callable)
            if base is None:
                raise FlowError(
                    f"task {name!r}: callable {conf.callable!r} is not a registered task"
                )
        else:
            base = reg.tasks.get(name)
            if base is None:
                raise FlowError(f"unknown task {name!r}")
        task = _clone(base, name)
        if not isinstance(conf.inputs, dict) or not isinstance(conf.outputs, list):
            raise FlowError(f"task {name!r}: 'inputs' must be a mapping and 'outputs' a list")
        task.inputs.update(conf.inputs)
        task.outputs.extend(str(o) for o in conf.outputs)
        tasks[name] = task
    try:
        flow = build_flow_from_graph(
            graph=config.flow.graph, tasks=tasks, pipes=config.pipes, flow_name=flow_name
        )
    except (ValueError, TypeError, KeyError) as exc:
        message = _first_line(exc)
        if message.startswith("Task not found: "):
            message = f"unknown task {message.removeprefix('Task not found: ')!r}"
        raise FlowError(f"invalid flow graph: {message}") from None
    try:  # params travel as JSON: a YAML date becomes a string, a number key an error
        defaults = orjson.loads(orjson.dumps(config.flow.defaults))
    except orjson.JSONEncodeError as exc:
        raise FlowError(f"invalid flow.yaml: 'flow.defaults' is not JSON: {exc}") from None
    return YamlFlow(flow=flow, defaults=defaults)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def yaml_info(text: str) -> dict[str, Any]:
    """Seed 003's ``workflow_yaml_sha256`` and ``workflow_yaml_bytes`` of a run's
    flow.yaml (None for a run without one)."""
    if not text:
        return {"workflow_yaml_sha256": None, "workflow_yaml_bytes": None}
    data = text.encode()
    return {
        "workflow_yaml_sha256": hashlib.sha256(data).hexdigest(),
        "workflow_yaml_bytes": len(data),
    }
