"""Checking a value against a record schema before it is written, and saying what does not fit.

Two paths:

* ``compile_check``: the fast pre-write check the codec runs on every value. fastavro's writer
  silently coerces some values: any truthy object becomes boolean true, a float in an int field is
  truncated, an int too large for "int" is written anyway, a string given for an array is split into
  characters. The compiled checks refuse such values at a fraction of the cost of a full validator.
  Unions need none: the writer matches union branches strictly.
* ``explain_value``: the slow path, only for error messages. One short sentence naming the field
  (with its path inside nested records and arrays), what its schema expects and what it got. When
  that walk finds nothing, fastavro's own validator (``fastavro.validation``) is asked which field
  it refuses.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastavro.validation import ValidationError, validate

from reelfab.contracts.catalogue import short_name

if TYPE_CHECKING:
    from reelfab.contracts.catalogue import SchemaEntry

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


class Invalid(Exception):
    """The pre-write check refused a value; the explanation is built afterwards (``explain_value``)."""


# -- the value checks ----------------------------------------------------------------------------


def is_bool(v: Any) -> bool:
    return v is True or v is False


def is_int(v: Any) -> bool:
    if type(v) is int:
        return _INT_MIN <= v <= _INT_MAX
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and _INT_MIN <= int(v) <= _INT_MAX


def is_long(v: Any) -> bool:
    if type(v) is int:
        return _LONG_MIN <= v <= _LONG_MAX
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and _LONG_MIN <= int(v) <= _LONG_MAX


def is_timestamp(v: Any) -> bool:
    return isinstance(v, datetime) or is_long(v)


def is_real(v: Any) -> bool:
    return type(v) is float or type(v) is int or (isinstance(v, numbers.Real) and not isinstance(v, bool))


def is_seq(v: Any) -> bool:
    return (
        type(v) is list
        or isinstance(v, tuple)
        or (isinstance(v, Sequence) and not isinstance(v, str | bytes | bytearray))
    )


# -- the compiled pre-write check ----------------------------------------------------------------

_MISSING = object()
Check = Callable[[Any], bool]


def compile_check(schema: Any, named: dict[str, Any], seen: frozenset[str] = frozenset()) -> Check | None:
    """A function telling whether a value fits what fastavro's writer would coerce silently, for a
    parsed ``schema`` whose named types are in ``named``; None when there is nothing to check."""
    if isinstance(schema, list):
        return None
    if isinstance(schema, str):
        if schema in named:
            if schema in seen:  # recursive type: the outer check covers it
                return None
            return compile_check(named[schema], named, seen | {schema})
        kind, logical = schema, None
    else:
        kind, logical = schema["type"], schema.get("logicalType")
        if isinstance(kind, dict | list):
            return compile_check(kind, named, seen)
    if kind == "boolean":
        return is_bool
    if kind == "int":
        return is_int
    if kind == "long":
        return is_timestamp if logical and logical.startswith("timestamp") else is_long
    if kind in ("float", "double"):
        return is_real
    if kind == "array":
        item = compile_check(schema["items"], named, seen)
        if item is None:
            return is_seq
        return lambda v: is_seq(v) and all(map(item, v))
    if kind == "map":
        val = compile_check(schema["values"], named, seen)
        if val is None:
            return lambda v: isinstance(v, Mapping)
        return lambda v: isinstance(v, Mapping) and all(map(val, v.values()))
    if kind in ("record", "error"):
        seen = seen | {schema["name"]}
        checks = [
            (f["name"], c)
            for f in schema["fields"]
            if (c := compile_check(f["type"], named, seen)) is not None
        ]
        if not checks:
            return None

        def check_record(v: Any) -> bool:
            get = v.get
            for name, c in checks:
                x = get(name, _MISSING)
                if x is not _MISSING and not c(x):
                    return False
            return True

        return check_record
    return None


# -- explaining a value that does not fit ----------------------------------------------------------


def explain_value(entry: SchemaEntry, value: Any, exc: BaseException | None = None) -> str:
    """One short sentence naming what in ``value`` does not fit ``entry``'s schema."""
    prefix = entry.short_name
    if not isinstance(value, Mapping):
        return f"{prefix}: value must be a dict (record), got {_show(value)}"
    problem = problem_of(entry.parsed, value, "", entry.named) or _fastavro_problem(entry, value)
    if problem is not None:
        return f"{prefix}: {problem}"
    detail = f": {type(exc).__name__}: {exc}" if exc is not None and not isinstance(exc, Invalid) else ""
    return f"{prefix}: value does not fit the schema{detail}"


def describe_type(schema: Any, named: dict[str, Any] | None = None) -> str:
    """Short human name of an Avro type: 'string', 'null or int', 'array of string', ..."""
    if isinstance(schema, list):
        return " or ".join(describe_type(s, named) for s in schema)
    if isinstance(schema, str):
        if named and schema in named:
            return describe_type(named[schema], None)
        return schema
    kind = schema["type"]
    if isinstance(kind, dict | list):
        return describe_type(kind, named)
    logical = schema.get("logicalType")
    if logical in ("timestamp-millis", "timestamp-micros"):
        return f"{logical} (datetime or int)"
    if kind == "array":
        return f"array of {describe_type(schema['items'], named)}"
    if kind == "map":
        return f"map of {describe_type(schema['values'], named)}"
    if kind == "enum":
        return f"enum {short_name(schema['name'])} ({', '.join(schema['symbols'])})"
    if kind in ("record", "error", "fixed"):
        return f"{'record' if kind != 'fixed' else 'fixed'} {short_name(schema['name'])}"
    return str(kind)


def problem_of(schema: Any, v: Any, path: str, named: dict[str, Any]) -> str | None:
    """First problem of ``v`` against ``schema`` at ``path``, or None when it fits."""
    if isinstance(schema, str) and schema in named:
        schema = named[schema]
    if isinstance(schema, list):
        problems = [problem_of(s, v, path, named) for s in schema]
        if any(p is None for p in problems):
            return None
        # a dict for a union with one record branch: say what is wrong inside the record
        records = [
            p
            for s, p in zip(schema, problems, strict=True)
            if _kind(s, named) in ("record", "error") and isinstance(v, Mapping)
        ]
        if len(records) == 1:
            return records[0]
        return _wrong(path, schema, v, named)
    kind = schema if isinstance(schema, str) else schema["type"]
    if isinstance(kind, dict | list):
        return problem_of(kind, v, path, named)
    logical = None if isinstance(schema, str) else schema.get("logicalType")
    ok: bool
    if kind == "null":
        ok = v is None
    elif kind == "boolean":
        ok = is_bool(v)
    elif kind == "int":
        if is_long(v) and not is_int(v):
            return f"field '{path}' expects int (32-bit), got {v} (out of range)"
        ok = is_int(v)
    elif kind == "long":
        if isinstance(v, int) and not isinstance(v, bool) and not is_long(v):
            return f"field '{path}' expects long (64-bit), got {v} (out of range)"
        ok = is_timestamp(v) if logical and logical.startswith("timestamp") else is_long(v)
    elif kind in ("float", "double"):
        ok = is_real(v)
    elif kind == "string":
        ok = isinstance(v, str)
    elif kind == "bytes":
        ok = isinstance(v, bytes | bytearray | memoryview)
    elif kind == "fixed":
        ok = isinstance(v, bytes | bytearray) and len(v) == schema["size"]
    elif kind == "enum":
        ok = isinstance(v, str) and v in schema["symbols"]
    elif kind == "array":
        if not is_seq(v):
            return _wrong(path, schema, v, named)
        for i, item in enumerate(v):
            p = problem_of(schema["items"], item, f"{path}[{i}]", named)
            if p is not None:
                return p
        return None
    elif kind == "map":
        if not isinstance(v, Mapping):
            return _wrong(path, schema, v, named)
        for k, item in v.items():
            if not isinstance(k, str):
                return f"field '{path}' has a key that is not a string: {_show(k)}"
            p = problem_of(schema["values"], item, f"{path}[{k!r}]", named)
            if p is not None:
                return p
        return None
    elif kind in ("record", "error"):
        if not isinstance(v, Mapping):
            return _wrong(path, schema, v, named)
        for f in schema["fields"]:
            name = f["name"]
            sub = f"{path}.{name}" if path else name
            if name not in v:
                if "default" in f:
                    continue
                return f"field '{sub}' is missing (required {describe_type(f['type'], named)})"
            p = problem_of(f["type"], v[name], sub, named)
            if p is not None:
                return p
        return None
    else:
        return None
    return None if ok else _wrong(path, schema, v, named)


def _fastavro_problem(entry: SchemaEntry, value: Mapping[str, Any]) -> str | None:
    """The field fastavro's validator refuses, in the same words; None when it accepts the value.
    Its field names are ``<record full name>.<field>``, the innermost record's: shown with the
    record's short name when it is a nested one."""
    try:
        validate(value, entry.parsed, raise_errors=True, strict=True)
    except ValidationError as exc:
        for error in exc.errors:
            where = str(error.field or "")
            record, _, name = where.rpartition(".")
            path = name if record == entry.name else f"{short_name(record)}.{name}" if record else name
            schema = error.schema
            if isinstance(schema, str) and schema in entry.named:
                schema = entry.named[schema]
            return _wrong(path, schema, error.datum, entry.named)
        return "value does not fit the schema (fastavro's validator refuses it)"
    except Exception:  # the validator itself failed on an odd value: no better explanation
        return None
    return None


def _kind(schema: Any, named: dict[str, Any]) -> str:
    if isinstance(schema, str):
        return _kind(named[schema], named) if schema in named else schema
    if isinstance(schema, list):
        return "union"
    return schema["type"] if isinstance(schema["type"], str) else _kind(schema["type"], named)


def _show(v: Any) -> str:
    text = repr(v)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(v).__name__} {text}" if v is not None else "None"


def _wrong(path: str, schema: Any, v: Any, named: dict[str, Any]) -> str:
    where = f"field '{path}'" if path else "value"
    return f"{where} expects {describe_type(schema, named)}, got {_show(v)}"
