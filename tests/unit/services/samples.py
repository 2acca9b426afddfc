"""Valid records of any schema, made from the schema itself, for broker-free handler tests."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime
from typing import Any

from reelfab.bus.message import Event
from reelfab.contracts.codec import default_catalog
from reelfab.contracts.records import model_for
from reelfab.contracts.topics import BY_NAME

_offsets = itertools.count()


def _value(schema: Any, named: dict[str, Any], name: str) -> Any:
    if isinstance(schema, list):
        non_null = [s for s in schema if s != "null"]
        return _value(non_null[0], named, name) if non_null else None
    if isinstance(schema, str):
        if schema in named:
            return _value(named[schema], named, name)
        return {"boolean": False, "int": 1, "long": 1, "float": 1.0, "double": 1.0, "bytes": b"x",
                "string": f"{name}-1", "null": None}[schema]
    if schema.get("logicalType", "").startswith("timestamp"):
        return datetime.now(UTC)
    kind = schema["type"]
    if kind == "record":
        named[schema["name"]] = schema
        return {f["name"]: f["default"] if "default" in f and f["default"] is not None else
                _value(f["type"], named, f["name"]) for f in schema["fields"]}
    if kind == "enum":
        named[schema["name"]] = schema
        return schema["symbols"][0]
    if kind == "array":
        return []
    if kind == "map":
        return {}
    return _value(kind, named, name)


def record(name: str, **overrides: Any) -> Any:
    """A valid typed record of ``name`` (short Avro name), every field filled, ``overrides`` applied."""
    schema = default_catalog().schema_json(name)
    value = _value(schema, {}, name)
    value["event_id"] = str(uuid.uuid4())
    value.update(overrides)
    return model_for(f"reelfab.events.{name}").model_validate(value)


def event(topic: str, **overrides: Any) -> Event[Any]:
    """The record a topic carries, as a handler receives it."""
    rec = record(BY_NAME[topic].short_record, **overrides)
    return Event(rec, topic, None, 0, next(_offsets), attempt=1)
