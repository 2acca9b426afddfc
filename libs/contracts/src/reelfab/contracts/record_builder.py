"""Pydantic models built at run time from any Avro record schema: for schemas that have no generated
class (a historic version from schemas/history/, a schema from the registry, a test's own schema).
The current schemas have generated classes (reelfab.contracts.generated.records); both apply the
same rules: Avro types to Python types, defaults and docs from the schema, the identifier
constraint on ``*_id`` fields."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Optional, Union

from pydantic import Field, create_model

from reelfab.contracts.record_base import Identifier, Record
from reelfab.contracts.topic_types import SCHEMA_NAMESPACE
from reelfab.identifiers import is_identifier_field

_PRIMITIVES: dict[str, Any] = {
    "null": type(None),
    "boolean": bool,
    "int": int,
    "long": int,
    "float": float,
    "double": float,
    "bytes": bytes,
    "string": str,
}


class _Builder:
    def __init__(self) -> None:
        self.named: dict[str, Any] = {}

    def full_name(self, name: str, namespace: str | None) -> str:
        return name if "." in name else f"{namespace or SCHEMA_NAMESPACE}.{name}"

    def python_type(self, schema: Any, namespace: str | None) -> Any:
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return _PRIMITIVES[schema]
            return self.named[self.full_name(schema, namespace)]
        if isinstance(schema, list):
            members = [self.python_type(s, namespace) for s in schema]
            non_null = [m for m in members if m is not type(None)]
            inner = non_null[0] if len(non_null) == 1 else Union[tuple(non_null)]  # noqa: UP007
            return Optional[inner] if len(non_null) < len(members) else inner  # noqa: UP045
        kind = schema["type"]
        if schema.get("logicalType") in ("timestamp-millis", "timestamp-micros"):
            return datetime
        if kind == "array":
            return list[self.python_type(schema["items"], namespace)]  # type: ignore[misc]
        if kind == "map":
            return dict[str, self.python_type(schema["values"], namespace)]  # type: ignore[misc]
        if kind == "enum":
            py = Literal[tuple(schema["symbols"])]  # type: ignore[valid-type]
            self.named[self.full_name(schema["name"], schema.get("namespace", namespace))] = py
            return py
        if kind == "fixed":
            return bytes
        if kind == "record":
            return self.record(schema, namespace)
        return self.python_type(kind, namespace)

    def record(self, schema: dict[str, Any], namespace: str | None) -> type[Record]:
        ns = schema.get("namespace", namespace)
        full = self.full_name(schema["name"], ns)
        fields: dict[str, Any] = {}
        for f in schema["fields"]:
            py = self.python_type(f["type"], ns)
            if is_identifier_field(f["name"]):
                py = _as_identifier(py)
            spec: Any
            doc = f.get("doc")
            if "default" in f:
                default = f["default"]
                spec = Field(default_factory=lambda d=default: list(d) if isinstance(d, list) else dict(d),
                             description=doc) \
                    if isinstance(default, (list, dict)) else Field(default=default, description=doc)
            else:
                spec = Field(..., description=doc)
            fields[f["name"]] = (py, spec)
        model = create_model(
            full.rsplit(".", 1)[-1],
            __base__=Record,
            __doc__=schema.get("doc"),
            **fields,
        )
        model.__avro_name__ = full
        self.named[full] = model
        return model


def _as_identifier(py: Any) -> Any:
    if py is str:
        return Identifier
    if py == Optional[str]:  # noqa: UP045
        return Optional[Identifier]  # noqa: UP045
    return py


def model_from_schema(schema: dict[str, Any]) -> type[Record]:
    """A model class for ``schema`` (a dict as loaded from an .avsc file), built now."""
    return _Builder().record(schema, schema.get("namespace"))
