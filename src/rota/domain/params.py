"""Run parameters: defaults merged with what the caller gave, validated against
the job's JSON Schema, and a stable hash for the execution-policy lock key.

Params of ``command`` and ``django`` jobs become options of a program
(``--key=value``), so they are held to more than the schema (issue 13): every
key is a plain name (:data:`PARAM_KEY`), and only keys the job's schema declares
are taken (``properties``, ``patternProperties``), unless the schema opts into
free-form params with an explicit ``"additionalProperties"`` other than
``false``. Every job's params are at most :data:`PARAMS_LIMIT` bytes of JSON,
:data:`MAX_DEPTH` levels deep, and carry no NUL character (a C program's
argument ends at one; PostgreSQL refuses it).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from rota.errors import InvalidInput

#: What a params key must look like: it becomes ``--<key>`` on a command line.
PARAM_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
#: Kinds whose params become command-line options.
ARGV_KINDS = frozenset({"command", "django"})
#: Bytes of JSON a run's params (defaults merged) may take.
PARAMS_LIMIT = 64 * 1024
#: Nesting a params value or a params schema may have.
MAX_DEPTH = 32


@lru_cache(maxsize=512)
def _validator(schema_json: bytes) -> Draft202012Validator:
    return Draft202012Validator(orjson.loads(schema_json))


def ensure_json(value: Any, field: str) -> None:
    """Raise InvalidInput if ``value`` cannot travel as rota's JSON (snapshots,
    dispatch messages): integers beyond 64 bits, mostly."""
    try:
        orjson.dumps(value)
    except TypeError as exc:
        raise InvalidInput(f"{field}: {exc}", field=field) from None


def _depth(value: Any, limit: int, level: int = 0) -> bool:
    """True when ``value`` nests deeper than ``limit`` (iterative over width,
    recursive only as deep as ``limit``)."""
    if level > limit:
        return True
    if isinstance(value, dict):
        return any(_depth(v, limit, level + 1) for v in value.values())
    if isinstance(value, list):
        return any(_depth(v, limit, level + 1) for v in value)
    return False


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string in ``value`` (keys included) with its dotted path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield path, str(k)
            yield from _strings(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}.{i}")


def nul_free(value: Any, field: str) -> None:
    """Raise InvalidInput naming the first string of ``value`` with a NUL."""
    for path, text in _strings(value, field):
        if "\x00" in text:
            raise InvalidInput(f"{path}: NUL characters are not allowed", field=path)


def check_schema(schema: dict[str, Any]) -> None:
    """Raise InvalidInput if ``schema`` is not a valid JSON Schema."""
    ensure_json(schema, "params_schema")
    if _depth(schema, MAX_DEPTH * 2):  # a schema nests twice per params level
        raise InvalidInput(
            f"params_schema nests deeper than {MAX_DEPTH * 2} levels", field="params_schema"
        )
    nul_free(schema, "params_schema")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise InvalidInput(
            f"parameter schema is invalid: {exc.message}", field="params_schema"
        ) from None
    except RecursionError:
        raise InvalidInput("params_schema is too deep to check", field="params_schema") from None


def free_form(schema: dict[str, Any]) -> bool:
    """Whether a command job's schema opts into keys it does not declare: an
    explicit ``additionalProperties`` other than ``false``."""
    return "additionalProperties" in schema and schema["additionalProperties"] is not False


def undeclared(schema: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """The keys of ``params`` that ``schema`` neither declares nor lets in."""
    if free_form(schema):
        return []
    declared = schema.get("properties") or {}
    patterns = [p for p in (schema.get("patternProperties") or {}) if isinstance(p, str)]

    def matches(key: str) -> bool:
        for pattern in patterns:
            try:
                if re.search(pattern, key):
                    return True
            except re.error:
                continue
        return False

    return [k for k in params if k not in declared and not matches(k)]


def check_params(
    params: Any, *, kind: str | None = None, schema: dict[str, Any] | None = None
) -> None:
    """The rules every job's params follow before the schema looks at them:
    a JSON object of plain-name keys, within size and depth, without NUL; for
    an argv kind, only declared keys. Raise InvalidInput naming the offender."""
    if not isinstance(params, dict):
        raise InvalidInput("params must be a JSON object", field="params")
    ensure_json(params, "params")
    size = len(orjson.dumps(params))
    if size > PARAMS_LIMIT:
        raise InvalidInput(
            f"params are {size} bytes of JSON, more than the limit of {PARAMS_LIMIT}",
            field="params",
        )
    if _depth(params, MAX_DEPTH):
        raise InvalidInput(f"params nest deeper than {MAX_DEPTH} levels", field="params")
    for key in params:
        if not (isinstance(key, str) and PARAM_KEY.fullmatch(key)):
            raise InvalidInput(
                f"params key {key!r} is not a plain name: use letters, digits, '_' and '-',"
                " starting with a letter or '_'",
                field="params",
            )
    nul_free(params, "params")
    if kind in ARGV_KINDS:
        extra = undeclared(schema or {}, params)
        if extra:
            names = ", ".join(repr(k) for k in extra)
            raise InvalidInput(
                f"params {names} not declared by the job's params_schema: a {kind} job only"
                " takes the params its schema's properties declare (or, to take any,"
                ' "additionalProperties": true)',
                field=f"params.{extra[0]}",
            )


def merge_params(defaults: dict[str, Any], given: dict[str, Any] | None) -> dict[str, Any]:
    merged = dict(defaults or {})
    merged.update(given or {})
    return merged


def validate_params(
    schema: dict[str, Any], params: dict[str, Any], *, kind: str | None = None
) -> None:
    """Raise InvalidInput naming the first offending field (by JSON path):
    :func:`check_params`, then the job's schema. ``kind`` is the job's (an
    argv kind takes only declared keys)."""
    check_params(params, kind=kind, schema=schema)
    if not schema:
        return
    validator = _validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
    try:
        errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    except RecursionError:
        raise InvalidInput("params are too deep for the job's schema", field="params") from None
    if not errors:
        return
    err = errors[0]
    parts = [str(p) for p in err.absolute_path]
    instance = err.instance if isinstance(err.instance, dict) else {}
    if err.validator == "required":
        # "'x' is a required property": the field is the missing one.
        parts += [r for r in err.validator_value if r not in instance][:1]
    elif err.validator == "additionalProperties":
        known = err.schema.get("properties", {})
        parts += [k for k in instance if k not in known][:1]
    path = ".".join(parts)
    field = f"params.{path}" if path else "params"
    raise InvalidInput(f"{field}: {err.message}", field=field)


def params_hash(params: dict[str, Any]) -> str:
    """Stable across key order: the execution-policy lock key is (job, this)."""
    return hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
