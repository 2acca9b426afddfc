"""The base of every typed record (reelfab.contracts.generated.records) and the identifier type its
``*_id`` fields carry."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, StringConstraints

from reelfab.identifiers import IDENTIFIER_PATTERN

# An identifier field (name ending in _id, see reelfab.identifiers) is checked when a record is decoded.
Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN)]


class Record(BaseModel):
    """Base of every record model: immutable, and no field the schema does not have."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    __avro_name__: ClassVar[str] = ""

    def to_avro(self) -> dict[str, Any]:
        """The record as the codec encodes it (Avro field names, nested records as dicts)."""
        return self.model_dump(by_alias=True)
