"""Run parameters: defaults merged with what the caller gave, validated against
the job's JSON Schema, and a stable hash for the execution-policy lock key."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from rota.errors import InvalidInput


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


def check_schema(schema: dict[str, Any]) -> None:
    """Raise InvalidInput if ``schema`` is not a valid JSON Schema."""
    ensure_json(schema, "params_schema")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise InvalidInput(
            f"parameter schema is invalid: {exc.message}", field="params_schema"
        ) from None


def merge_params(defaults: dict[str, Any], given: dict[str, Any] | None) -> dict[str, Any]:
    merged = dict(defaults or {})
    merged.update(given or {})
    return merged


def validate_params(schema: dict[str, Any], params: dict[str, Any]) -> None:
    """Raise InvalidInput naming the first offending field (by JSON path)."""
    ensure_json(params, "params")
    if not schema:
        return
    validator = _validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
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
