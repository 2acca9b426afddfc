"""Typed records: one pydantic class per Avro record, generated from schemas/ by `reelfab codegen`
(reelfab.contracts.generated.records) so the two can never disagree, and type-checked like any other
class. Handlers receive these instead of dicts; publishers may pass either. The classes also give
FastStream the payload shapes it writes into the AsyncAPI document.

``model_for(record)`` is the class of a current record by Avro name; ``model_from_schema`` builds a
model at run time for a schema without a generated class (a historic version, a test's schema)."""

from __future__ import annotations

from reelfab.contracts.generated import records as _generated
from reelfab.contracts.generated.records import *  # noqa: F403  (the record classes and enum aliases)
from reelfab.contracts.generated.records import RECORDS
from reelfab.contracts.record_base import Identifier, Record
from reelfab.contracts.record_builder import model_from_schema
from reelfab.contracts.topic_types import SCHEMA_NAMESPACE

__all__ = ["RECORDS", "Identifier", "Record", "model_for", "model_from_schema"]
__all__ += _generated.__all__


def model_for(record: str) -> type[Record]:
    """The generated class of a current record, by Avro full name (``reelfab.events.SwapRequested``);
    a short name is taken as in reelfab.events, and a record's alias finds the record."""
    name = record if "." in record else f"{SCHEMA_NAMESPACE}.{record}"
    found = RECORDS.get(name)
    if found is None:
        from reelfab.contracts.catalogue import default_catalog

        entry = default_catalog().find_current(name)
        found = RECORDS.get(entry.name) if entry is not None else None
        if found is None:
            raise KeyError(f"no record class for {name}; known: {', '.join(sorted(RECORDS))}")
    return found
