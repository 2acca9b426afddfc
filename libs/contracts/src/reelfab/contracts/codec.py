"""Avro encoding of every event on the bus.

Values are framed as Avro single-object encoding (the default) or, when a schema registry is
configured, in the Confluent wire format with schemas registered under ``<topic>-value``
(reelfab.contracts.framing). Readers find the writer schema by fingerprint among the current schemas
and the old versions kept in ``schemas/history/`` (reelfab.contracts.catalogue), or by id from the
registry (reelfab.contracts.registry_client).

Either way a value is read with the schema it was written with and resolved to the *current*
schema of the same record, so consumers always see today's fields (with defaults filled in).
Values that do not fit are refused before they are written, naming the field
(reelfab.contracts.validation).

Timestamps (``timestamp-millis``) encode from an aware ``datetime`` or integer milliseconds and
decode to an aware UTC ``datetime``.

This module also re-exports the names the rest of the repository imports from it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING, Any

from fastavro import schemaless_reader, schemaless_writer

from reelfab.contracts.catalogue import (
    SchemaCatalog,
    SchemaEntry,
    default_catalog,
    fingerprint_hex,
    fingerprint_of,
    full_name,
    make_entry,
    short_name,
)
from reelfab.contracts.framing import (
    CONFLUENT_HEADER_LEN,
    CONFLUENT_MAGIC,
    SINGLE_OBJECT_HEADER_LEN,
    SINGLE_OBJECT_MARKER,
    Frame,
    confluent_header,
    read_frame,
)
from reelfab.contracts.registry_client import REGISTRY_CONTENT_TYPE, SchemaRegistryClient
from reelfab.contracts.topics import BY_NAME, DLQ_SUFFIX
from reelfab.contracts.validation import Check, Invalid, compile_check, describe_type, explain_value
from reelfab.errors import DecodeError, EncodeError, PermanentError, SchemaMismatchError, TransientError

if TYPE_CHECKING:
    from reelfab.settings import Settings

__all__ = [
    "CONFLUENT_HEADER_LEN",
    "CONFLUENT_MAGIC",
    "REGISTRY_CONTENT_TYPE",
    "SINGLE_OBJECT_HEADER_LEN",
    "SINGLE_OBJECT_MARKER",
    "AvroCodec",
    "Decoded",
    "SchemaCatalog",
    "SchemaEntry",
    "SchemaRegistryClient",
    "default_catalog",
    "default_codec",
    "describe_type",
    "explain_value",
    "fingerprint_hex",
    "fingerprint_of",
    "full_name",
    "make_entry",
    "short_name",
]

_Reader = tuple[SchemaEntry, dict[str, Any] | None]  # writer schema, and the reader schema to resolve to


@dataclass(frozen=True)
class Decoded:
    """A decoded message: the record it was read as (full name), its value (current schema's
    fields), and how the writer schema was identified."""

    record: str
    value: dict[str, Any]
    fingerprint: int | None = None  # writer schema's CRC-64-AVRO (single-object framing)
    schema_id: int | None = None  # writer schema's registry id (Confluent framing)

    @property
    def short_record(self) -> str:
        return short_name(self.record)


class AvroCodec:
    """Encode dicts to bytes and back with the catalogue's schemas.

    ``registry``: when given, Confluent wire format with schemas registered under
    ``<topic>-value``; otherwise Avro single-object encoding. Decoding accepts both framings.
    """

    def __init__(self, catalog: SchemaCatalog, registry: SchemaRegistryClient | None = None) -> None:
        self.catalog = catalog
        self.registry = registry
        self._encoders: dict[tuple[str, str | None], tuple[SchemaEntry, Check | None]] = {}
        self._reader_for: dict[int, _Reader] = {}  # by fingerprint
        self._registry_readers: dict[int, _Reader] = {}  # by schema id
        self._registry_ids: dict[tuple[str, str], int] = {}
        self._registry_entries: dict[int, SchemaEntry] = {}

    # -- encoding -------------------------------------------------------------------------

    def encode(self, record: str, value: Mapping[str, Any], *, topic: str | None = None) -> bytes:
        """Encode ``value`` as ``record`` (full or short name). Raises EncodeError naming the
        field when the value does not fit the schema."""
        found = self._encoders.get((record, topic))
        if found is None:
            found = self._encoder(record, topic)
        entry, check = found
        out = BytesIO()
        if self.registry is None:
            out.write(entry.header)
        else:
            out.write(self._confluent_header(entry, topic))
        try:
            if check is not None and not check(value):
                raise Invalid
            schemaless_writer(out, entry.parsed, value)
        except Exception as exc:
            raise EncodeError(explain_value(entry, value, exc)) from (
                None if isinstance(exc, Invalid) else exc
            )
        return out.getvalue()

    def _encoder(self, record: str, topic: str | None) -> tuple[SchemaEntry, Check | None]:
        entry = self.catalog.find_current(record)
        if entry is None:
            raise EncodeError(
                f"no schema for record {full_name(record)}; known: {', '.join(self.catalog.names())}"
            )
        t = BY_NAME.get(topic) if topic else None
        if t is not None and t.record != entry.name:
            raise EncodeError(f"topic {topic} carries {t.record}, not {entry.name}")
        if self.registry is not None and not topic:
            raise EncodeError(
                f"{entry.short_name}: a topic is needed to encode for the schema registry (subject <topic>-value)"
            )
        found = (entry, compile_check(entry.parsed, entry.named))
        self._encoders[(record, topic)] = found
        return found

    def _confluent_header(self, entry: SchemaEntry, topic: str | None) -> bytes:
        assert self.registry is not None and topic
        subject = f"{topic}-value"
        schema_id = self._registry_ids.get((subject, entry.name))
        if schema_id is None:
            schema_id = self.registry.register(subject, entry.raw)
            self._registry_ids[(subject, entry.name)] = schema_id
            self._registry_entries.setdefault(schema_id, entry)
        return confluent_header(schema_id)

    # -- decoding -------------------------------------------------------------------------

    def decode(self, data: bytes, *, expected: str | None = None, topic: str | None = None) -> Decoded:
        """Decode a message in either framing, resolved to the current schema of its record.

        ``expected`` (or, without it, the record ``topic`` carries): the record the caller can
        handle; anything else raises SchemaMismatchError. Every other failure is a DecodeError
        that says what is wrong with the bytes."""
        frame = read_frame(data)
        n = len(data)
        writer, reader = self._reader(frame, n)
        record = writer.name if reader is None else reader["name"]
        want = expected or _topic_record(topic)
        if want is not None and record != full_name(want):
            on = f" on topic {topic}" if topic else ""
            raise SchemaMismatchError(f"expected {full_name(want)}, got {record}{on}")
        fo = BytesIO(data)
        fo.seek(frame.body_start)
        try:
            value = schemaless_reader(fo, writer.parsed, reader)
        except Exception as exc:
            raise DecodeError(
                f"{short_name(record)}: truncated or corrupt body ({frame.writer}, {n} bytes): {_exc_text(exc)}"
            ) from exc
        left = n - fo.tell()
        if left:
            raise DecodeError(
                f"{short_name(record)}: {left} bytes left over after the record ({frame.writer}, {n} bytes): corrupt, or written with another schema"
            )
        if not isinstance(value, dict):
            raise DecodeError(f"{short_name(record)}: body is not a record ({frame.writer})")
        return Decoded(record, value, frame.fingerprint, frame.schema_id)

    def _reader(self, frame: Frame, n: int) -> _Reader:
        if frame.schema_id is not None:
            return self._registry_reader(frame.schema_id)
        fp = frame.fingerprint
        assert fp is not None
        cached = self._reader_for.get(fp)
        if cached is None:
            writer = self.catalog.find_fingerprint(fp)
            if writer is None:
                raise DecodeError(
                    f"no known schema has fingerprint {fingerprint_hex(fp)} (Avro single-object encoding, {n} bytes)"
                )
            cached = self._reader_for[fp] = self._resolve(writer)
        return cached

    def _resolve(self, writer: SchemaEntry) -> _Reader:
        """Writer entry and the reader schema to resolve to (None: read as written)."""
        current = self.catalog.find_current(writer.name)
        if current is None or current is writer or current.fingerprint == writer.fingerprint:
            return writer, None
        return writer, current.parsed

    def _registry_reader(self, schema_id: int) -> _Reader:
        cached = self._registry_readers.get(schema_id)
        if cached is not None:
            return cached
        writer = self._registry_entries.get(schema_id)
        if writer is None:
            if self.registry is None:
                raise DecodeError(
                    f"Confluent wire format (magic byte 0x00, schema id {schema_id}) but no schema registry is configured "
                    "(set REELFAB_SCHEMA_REGISTRY_URL)"
                )
            try:
                text = self.registry.get_schema(schema_id)
            except TransientError:
                raise
            except PermanentError as exc:
                raise DecodeError(
                    f"schema id {schema_id} (Confluent wire format) cannot be looked up: {exc}"
                ) from exc
            try:
                raw = json.loads(text)
                writer = self.catalog.find_fingerprint(fingerprint_of(raw)) or make_entry(
                    raw, source=f"registry id {schema_id}"
                )
            except ValueError as exc:
                raise DecodeError(
                    f"schema id {schema_id} from the registry is not a usable Avro record schema: {exc}"
                ) from exc
            self._registry_entries[schema_id] = writer
        cached = self._registry_readers[schema_id] = self._resolve(writer)
        return cached


def _topic_record(topic: str | None) -> str | None:
    if not topic:
        return None
    if topic.endswith(DLQ_SUFFIX):
        topic = topic[: -len(DLQ_SUFFIX)]
    t = BY_NAME.get(topic)
    return t.record if t is not None else None


def _exc_text(exc: BaseException) -> str:
    text = str(exc)
    if not text and isinstance(exc, EOFError):
        text = "the body ends too early"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- the process-wide codec ------------------------------------------------------------------

_codecs: dict[str | None, AvroCodec] = {}


def default_codec(settings: Settings | None = None) -> AvroCodec:
    """The codec for these settings: the packaged schemas, plus a schema-registry client when
    ``schema_registry_url`` is set. Built once per registry URL."""
    if settings is None:
        from reelfab.settings import get_settings

        settings = get_settings()
    url = settings.schema_registry_url or None
    codec = _codecs.get(url)
    if codec is None:
        codec = _codecs[url] = AvroCodec(default_catalog(), SchemaRegistryClient(url) if url else None)
    return codec
