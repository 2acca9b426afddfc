"""Avro encoding of every event on the bus.

Two framings:

* Avro single-object encoding (the default): ``C3 01``, the writer schema's 8-byte CRC-64-AVRO
  fingerprint (little-endian), then the binary body. Readers find the writer schema by fingerprint
  among the current schemas and the old versions kept in ``schemas/history/``.
* Confluent wire format, when a schema registry is configured: ``00``, the 4-byte big-endian
  schema id, then the body. Subjects follow TopicNameStrategy (``<topic>-value``).

Either way a value is read with the schema it was written with and resolved to the *current*
schema of the same record, so consumers always see today's fields (with defaults filled in).

Timestamps (``timestamp-millis``) encode from an aware ``datetime`` or integer milliseconds and
decode to an aware UTC ``datetime``.
"""

from __future__ import annotations

import json
import numbers
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property, lru_cache
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from reelfab.contracts.topics import BY_NAME, DLQ_SUFFIX, SCHEMA_NAMESPACE
from reelfab.errors import DecodeError, EncodeError, PermanentError, SchemaMismatchError, TransientError

if TYPE_CHECKING:
    from reelfab.settings import Settings

SINGLE_OBJECT_MARKER = b"\xc3\x01"
SINGLE_OBJECT_HEADER_LEN = 10  # marker + 8-byte fingerprint
CONFLUENT_MAGIC = 0
CONFLUENT_HEADER_LEN = 5  # magic + 4-byte schema id
REGISTRY_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"

_HISTORY_FILE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.(?P<version>\d+)\.avsc$")
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1


def full_name(name: str) -> str:
    """``SwapRequested`` -> ``reelfab.events.SwapRequested``; full names pass through."""
    return name if "." in name else f"{SCHEMA_NAMESPACE}.{name}"


def short_name(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def fingerprint_of(schema: dict[str, Any] | str) -> int:
    """CRC-64-AVRO (Rabin) fingerprint of a schema's Parsing Canonical Form, as an unsigned int.
    The single-object header carries it as 8 little-endian bytes."""
    if isinstance(schema, str):
        schema = json.loads(schema)
    # fastavro returns the hex of the little-endian bytes (what Java writes into the header)
    hex_le = _fastavro_fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")
    return int.from_bytes(bytes.fromhex(hex_le), "little")


def fingerprint_hex(fp: int) -> str:
    return f"0x{fp:016x}"


# -- the catalogue ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SchemaEntry:
    """One version of one record schema."""

    name: str  # Avro full name, e.g. reelfab.events.SwapRequested
    raw: dict[str, Any] = field(repr=False)  # the JSON as written in the .avsc file
    parsed: dict[str, Any] = field(repr=False)  # fastavro's parsed form
    named: dict[str, Any] = field(repr=False)  # named types defined in the schema, by full name
    canonical: str = field(repr=False)  # Parsing Canonical Form
    fingerprint: int
    version: int | None = None  # None: the current schema; n: schemas/history/<Name>.<n>.avsc
    source: str = ""  # where it came from (file name), for messages

    @property
    def short_name(self) -> str:
        return short_name(self.name)

    @cached_property
    def header(self) -> bytes:
        return SINGLE_OBJECT_MARKER + self.fingerprint.to_bytes(8, "little")


def make_entry(raw: dict[str, Any], *, version: int | None = None, source: str = "") -> SchemaEntry:
    """Parse a schema (a dict as loaded from JSON) into a catalogue entry."""
    if not isinstance(raw, dict) or raw.get("type") not in ("record", "error"):
        raise ValueError(f"{source or 'schema'}: not an Avro record schema")
    named: dict[str, Any] = {}
    try:
        parsed = parse_schema(raw, named)
        canonical = to_parsing_canonical_form(raw)
    except Exception as exc:  # fastavro's SchemaParseException, UnknownType, ...
        raise ValueError(f"{source or 'schema'}: invalid Avro schema: {exc}") from exc
    assert isinstance(parsed, dict)
    fp = int.from_bytes(bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO")), "little")
    return SchemaEntry(parsed["name"], raw, parsed, named, canonical, fp, version, source)


class SchemaCatalog:
    """Every record schema Reelfab knows: the current ones (what consumers read as) and previous
    versions (what old messages may have been written with), indexed by name and fingerprint."""

    def __init__(
        self,
        current: Iterable[dict[str, Any] | SchemaEntry],
        history: Iterable[dict[str, Any] | SchemaEntry] = (),
    ):
        self._current: dict[str, SchemaEntry] = {}
        self._aliases: dict[str, SchemaEntry] = {}
        self._by_fp: dict[int, SchemaEntry] = {}
        self._history: dict[str, list[SchemaEntry]] = {}
        for item in current:
            entry = item if isinstance(item, SchemaEntry) else make_entry(item)
            if entry.name in self._current:
                raise ValueError(
                    f"two current schemas named {entry.name} ({self._current[entry.name].source}, {entry.source})"
                )
            self._current[entry.name] = entry
            self._by_fp[entry.fingerprint] = entry
            for alias in entry.parsed.get("aliases", ()):
                self._aliases[full_name(alias)] = entry
        for item in history:
            entry = item if isinstance(item, SchemaEntry) else make_entry(item, version=0)
            self._history.setdefault(entry.name, []).append(entry)
            self._by_fp.setdefault(entry.fingerprint, entry)  # an unchanged old version is the current one
        for versions in self._history.values():
            versions.sort(key=lambda e: e.version or 0)

    @classmethod
    def from_directory(cls, path: Path) -> SchemaCatalog:
        """Load ``*.avsc`` from a directory and its ``history/`` (the repository's schemas/ folder)."""
        files = {f.name: f.read_text(encoding="utf-8") for f in sorted(path.glob("*.avsc"))}
        files |= {f"history/{f.name}": f.read_text(encoding="utf-8") for f in sorted(path.glob("history/*.avsc"))}
        return cls.from_texts(files)

    @classmethod
    def from_texts(cls, files: Mapping[str, str]) -> SchemaCatalog:
        """Build from ``{"<Record>.avsc" | "history/<Record>.<n>.avsc": json text}``."""
        current: list[SchemaEntry] = []
        history: list[SchemaEntry] = []
        for name in sorted(files):
            if "/" not in name:
                current.append(_load_text(name, files[name]))
                continue
            base = name.split("/", 1)[1]
            m = _HISTORY_FILE.match(base)
            if not m:
                raise ValueError(f"{name}: history files are named <RecordName>.<n>.avsc")
            entry = _load_text(name, files[name], version=int(m["version"]))
            if entry.short_name != m["name"]:
                raise ValueError(f"{name}: holds {entry.name}, not {m['name']}")
            history.append(entry)
        return cls(current, history)

    @classmethod
    def from_package(cls) -> SchemaCatalog:
        """The schemas of schemas/ as generated into reelfab.contracts.generated.schemas."""
        from reelfab.contracts.generated.schemas import SCHEMA_FILES

        return cls.from_texts(SCHEMA_FILES)

    def current(self, record: str) -> SchemaEntry:
        """The current schema of a record, by full name (short names are taken as reelfab.events)."""
        name = full_name(record)
        entry = self._current.get(name) or self._aliases.get(name)
        if entry is None:
            raise KeyError(f"no schema for record {name}; known: {', '.join(sorted(self._current))}")
        return entry

    def find_current(self, record: str) -> SchemaEntry | None:
        name = full_name(record)
        return self._current.get(name) or self._aliases.get(name)

    def by_fingerprint(self, fp: int) -> SchemaEntry:
        """The schema (current or historic) with this CRC-64-AVRO fingerprint."""
        try:
            return self._by_fp[fp]
        except KeyError:
            raise KeyError(f"no known schema has fingerprint {fingerprint_hex(fp)}") from None

    def find_fingerprint(self, fp: int) -> SchemaEntry | None:
        return self._by_fp.get(fp)

    def names(self) -> list[str]:
        """Full names of the current records, sorted."""
        return sorted(self._current)

    def history(self, record: str) -> list[SchemaEntry]:
        """Previous versions of a record kept in schemas/history/, oldest first."""
        return list(self._history.get(full_name(record), ()))

    def entries(self) -> list[SchemaEntry]:
        """Every known schema version, current ones first."""
        return list(self._current.values()) + [e for v in self._history.values() for e in v]

    def schema_json(self, record: str) -> dict[str, Any]:
        """The current schema's JSON exactly as in its .avsc file (a fresh copy)."""
        return json.loads(json.dumps(self.current(record).raw))


def _load_text(source: str, text: str, *, version: int | None = None) -> SchemaEntry:
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{source}: not valid JSON: {exc}") from exc
    return make_entry(raw, version=version, source=source)


@lru_cache(maxsize=1)
def default_catalog() -> SchemaCatalog:
    """The schemas of schemas/ (generated into the contracts package), loaded once."""
    return SchemaCatalog.from_package()


# -- schema registry -------------------------------------------------------------------------


class SchemaRegistryClient:
    """Minimal synchronous client for the Confluent Schema Registry REST API: register a schema
    under a subject, look a schema up by id. Both directions are cached."""

    def __init__(
        self,
        url: str,
        timeout: float = 5.0,
        *,
        transport: httpx.BaseTransport | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._client = client or httpx.Client(timeout=timeout, transport=transport)
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, str] = {}

    def register(self, subject: str, schema: dict[str, Any] | str) -> int:
        """Register ``schema`` under ``subject`` (idempotent on the registry) and return its id."""
        text = schema if isinstance(schema, str) else json.dumps(schema, separators=(",", ":"))
        cached = self._ids.get((subject, text))
        if cached is not None:
            return cached
        body = self._request("POST", f"/subjects/{quote(subject, safe='')}/versions", {"schema": text})
        schema_id = body.get("id") if isinstance(body, dict) else None
        if not isinstance(schema_id, int):
            raise PermanentError(
                f"schema registry at {self.url}: no schema id in the answer to registering {subject}: {body!r:.200}"
            )
        self._ids[(subject, text)] = schema_id
        self._schemas.setdefault(schema_id, text)
        return schema_id

    def get_schema(self, schema_id: int) -> str:
        """The schema (JSON text) registered under ``schema_id``."""
        cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        body = self._request("GET", f"/schemas/ids/{schema_id}", None)
        text = body.get("schema") if isinstance(body, dict) else None
        if not isinstance(text, str):
            raise PermanentError(
                f"schema registry at {self.url}: no schema in the answer for id {schema_id}: {body!r:.200}"
            )
        kind = body.get("schemaType", "AVRO")
        if kind != "AVRO":
            raise PermanentError(f"schema registry at {self.url}: schema id {schema_id} is {kind}, not AVRO")
        self._schemas[schema_id] = text
        return text

    def _request(self, method: str, path: str, payload: dict[str, Any] | None) -> Any:
        url = self.url + path
        try:
            resp = self._client.request(
                method,
                url,
                content=None if payload is None else json.dumps(payload).encode(),
                headers={"Content-Type": REGISTRY_CONTENT_TYPE, "Accept": REGISTRY_CONTENT_TYPE},
            )
        except httpx.TimeoutException as exc:
            raise TransientError(f"schema registry {method} {url} timed out: {exc}") from exc
        except httpx.HTTPError as exc:
            raise TransientError(
                f"schema registry {method} {url} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if resp.status_code >= 400:
            detail = _registry_message(resp)
            cls = TransientError if resp.status_code >= 500 or resp.status_code == 429 else PermanentError
            raise cls(f"schema registry {method} {url} answered {resp.status_code}: {detail}")
        try:
            return resp.json()
        except ValueError as exc:
            raise PermanentError(
                f"schema registry {method} {url} answered with something that is not JSON: {resp.text[:200]!r}"
            ) from exc

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SchemaRegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _registry_message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:300] or resp.reason_phrase
    if isinstance(body, dict) and "message" in body:
        code = body.get("error_code")
        return f"{body['message']}" + (f" (error_code {code})" if code is not None else "")
    return str(body)[:300]


# -- the codec -------------------------------------------------------------------------------


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


class _Invalid(Exception):
    """The pre-write type check refused a value; the explanation is built afterwards."""


class AvroCodec:
    """Encode dicts to bytes and back with the catalogue's schemas.

    ``registry``: when given, Confluent wire format with schemas registered under
    ``<topic>-value``; otherwise Avro single-object encoding. Decoding accepts both framings.
    """

    def __init__(self, catalog: SchemaCatalog, registry: SchemaRegistryClient | None = None) -> None:
        self.catalog = catalog
        self.registry = registry
        self._encoders: dict[tuple[str, str | None], tuple[SchemaEntry, Callable[[Any], bool] | None]] = {}
        self._reader_for: dict[int, tuple[SchemaEntry, dict[str, Any] | None]] = {}  # by fingerprint
        self._registry_readers: dict[int, tuple[SchemaEntry, dict[str, Any] | None]] = {}  # by schema id
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
                raise _Invalid
            schemaless_writer(out, entry.parsed, value)
        except Exception as exc:
            raise EncodeError(explain_value(entry, value, exc)) from (
                None if isinstance(exc, _Invalid) else exc
            )
        return out.getvalue()

    def _encoder(self, record: str, topic: str | None) -> tuple[SchemaEntry, Callable[[Any], bool] | None]:
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
        found = (entry, _compile_check(entry.parsed, entry.named, set()))
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
        return bytes((CONFLUENT_MAGIC,)) + schema_id.to_bytes(4, "big")

    # -- decoding -------------------------------------------------------------------------

    def decode(self, data: bytes, *, expected: str | None = None, topic: str | None = None) -> Decoded:
        """Decode a message in either framing, resolved to the current schema of its record.

        ``expected`` (or, without it, the record ``topic`` carries): the record the caller can
        handle; anything else raises SchemaMismatchError. Every other failure is a DecodeError
        that says what is wrong with the bytes."""
        if not isinstance(data, bytes | bytearray | memoryview):
            what = "None (a tombstone?)" if data is None else type(data).__name__
            raise DecodeError(f"cannot decode {what}: expected bytes")
        n = len(data)
        if n == 0:
            raise DecodeError("empty message (0 bytes)")
        fp: int | None = None
        schema_id: int | None = None
        if data[:2] == SINGLE_OBJECT_MARKER:
            if n < SINGLE_OBJECT_HEADER_LEN:
                raise DecodeError(
                    f"too short for Avro single-object encoding: {n} bytes, the header alone is {SINGLE_OBJECT_HEADER_LEN}"
                )
            fp = int.from_bytes(data[2:10], "little")
            cached = self._reader_for.get(fp)
            if cached is None:
                writer = self.catalog.find_fingerprint(fp)
                if writer is None:
                    raise DecodeError(
                        f"no known schema has fingerprint {fingerprint_hex(fp)} (Avro single-object encoding, {n} bytes)"
                    )
                cached = self._reader_for[fp] = self._resolve(writer)
            start = SINGLE_OBJECT_HEADER_LEN
        elif data[0] == CONFLUENT_MAGIC and n >= CONFLUENT_HEADER_LEN:
            schema_id = int.from_bytes(data[1:5], "big")
            cached = self._registry_reader(schema_id)
            start = CONFLUENT_HEADER_LEN
        else:
            raise DecodeError(_not_avro(data))
        writer, reader = cached
        record = writer.name if reader is None else reader["name"]
        want = expected or _topic_record(topic)
        if want is not None and record != full_name(want):
            on = f" on topic {topic}" if topic else ""
            raise SchemaMismatchError(f"expected {full_name(want)}, got {record}{on}")
        fo = BytesIO(data)
        fo.seek(start)
        try:
            value = schemaless_reader(fo, writer.parsed, reader)
        except Exception as exc:
            raise DecodeError(
                f"{short_name(record)}: truncated or corrupt body ({_writer_id(fp, schema_id)}, {n} bytes): {_exc_text(exc)}"
            ) from exc
        left = n - fo.tell()
        if left:
            raise DecodeError(
                f"{short_name(record)}: {left} bytes left over after the record ({_writer_id(fp, schema_id)}, {n} bytes): corrupt, or written with another schema"
            )
        if not isinstance(value, dict):
            raise DecodeError(f"{short_name(record)}: body is not a record ({_writer_id(fp, schema_id)})")
        return Decoded(record, value, fp, schema_id)

    def _resolve(self, writer: SchemaEntry) -> tuple[SchemaEntry, dict[str, Any] | None]:
        """Writer entry and the reader schema to resolve to (None: read as written)."""
        current = self.catalog.find_current(writer.name)
        if current is None or current is writer or current.fingerprint == writer.fingerprint:
            return writer, None
        return writer, current.parsed

    def _registry_reader(self, schema_id: int) -> tuple[SchemaEntry, dict[str, Any] | None]:
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


def _writer_id(fp: int | None, schema_id: int | None) -> str:
    return f"writer fingerprint {fingerprint_hex(fp)}" if fp is not None else f"writer schema id {schema_id}"


def _not_avro(data: bytes | bytearray | memoryview) -> str:
    head = bytes(data[:8]).hex()
    more = "…" if len(data) > 8 else ""
    hint = ""
    if data[:1] in (b"{", b"["):
        hint = " (looks like JSON)"
    elif data[0] == CONFLUENT_MAGIC:
        hint = f" (too short for the Confluent wire format: {len(data)} bytes)"
    return f"not Avro single-object encoding: first bytes 0x{head}{more}{hint}"


# -- type checks the writer does not make ----------------------------------------------------
#
# fastavro's writer silently coerces some values: any truthy object becomes boolean true, a float
# in an int field is truncated, an int too large for "int" is written anyway, a string given for
# an array is split into characters. These compiled checks refuse such values before writing, at a
# fraction of the cost of fastavro's full validator. Unions need none: the writer matches union
# branches strictly.


def _is_bool(v: Any) -> bool:
    return v is True or v is False


def _is_int(v: Any) -> bool:
    if type(v) is int:
        return _INT_MIN <= v <= _INT_MAX
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and _INT_MIN <= int(v) <= _INT_MAX


def _is_long(v: Any) -> bool:
    if type(v) is int:
        return _LONG_MIN <= v <= _LONG_MAX
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and _LONG_MIN <= int(v) <= _LONG_MAX


def _is_timestamp(v: Any) -> bool:
    return isinstance(v, datetime) or _is_long(v)


def _is_real(v: Any) -> bool:
    return type(v) is float or type(v) is int or (isinstance(v, numbers.Real) and not isinstance(v, bool))


def _is_seq(v: Any) -> bool:
    return (
        type(v) is list
        or isinstance(v, tuple)
        or (isinstance(v, Sequence) and not isinstance(v, str | bytes | bytearray))
    )


_MISSING = object()
_Check = Callable[[Any], bool]


def _compile_check(schema: Any, named: dict[str, Any], seen: set[str]) -> _Check | None:
    if isinstance(schema, list):
        return None
    if isinstance(schema, str):
        if schema in named:
            if schema in seen:  # recursive type: the outer check covers it
                return None
            return _compile_check(named[schema], named, seen | {schema})
        kind, logical = schema, None
    else:
        kind, logical = schema["type"], schema.get("logicalType")
        if isinstance(kind, dict | list):
            return _compile_check(kind, named, seen)
    if kind == "boolean":
        return _is_bool
    if kind == "int":
        return _is_int
    if kind == "long":
        return _is_timestamp if logical and logical.startswith("timestamp") else _is_long
    if kind in ("float", "double"):
        return _is_real
    if kind == "array":
        item = _compile_check(schema["items"], named, seen)
        if item is None:
            return _is_seq
        return lambda v: _is_seq(v) and all(map(item, v))
    if kind == "map":
        val = _compile_check(schema["values"], named, seen)
        if val is None:
            return lambda v: isinstance(v, Mapping)
        return lambda v: isinstance(v, Mapping) and all(map(val, v.values()))
    if kind in ("record", "error"):
        seen = seen | {schema["name"]}
        checks = [
            (f["name"], c)
            for f in schema["fields"]
            if (c := _compile_check(f["type"], named, seen)) is not None
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


# -- explaining a value that does not fit (the slow path, for error messages) ----------------


def explain_value(entry: SchemaEntry, value: Any, exc: BaseException | None = None) -> str:
    """One short sentence naming what in ``value`` does not fit ``entry``'s schema."""
    prefix = entry.short_name
    if not isinstance(value, Mapping):
        return f"{prefix}: value must be a dict (record), got {_show(value)}"
    problem = _problem(entry.parsed, value, "", entry.named)
    if problem is not None:
        return f"{prefix}: {problem}"
    detail = f": {type(exc).__name__}: {exc}" if exc is not None and not isinstance(exc, _Invalid) else ""
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


def _show(v: Any) -> str:
    text = repr(v)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(v).__name__} {text}" if v is not None else "None"


def _problem(schema: Any, v: Any, path: str, named: dict[str, Any]) -> str | None:
    """First problem of ``v`` against ``schema`` at ``path``, or None when it fits."""
    if isinstance(schema, str) and schema in named:
        schema = named[schema]
    if isinstance(schema, list):
        problems = [_problem(s, v, path, named) for s in schema]
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
        return _problem(kind, v, path, named)
    logical = None if isinstance(schema, str) else schema.get("logicalType")
    ok: bool
    if kind == "null":
        ok = v is None
    elif kind == "boolean":
        ok = _is_bool(v)
    elif kind == "int":
        if _is_long(v) and not _is_int(v):
            return f"field '{path}' expects int (32-bit), got {v} (out of range)"
        ok = _is_int(v)
    elif kind == "long":
        if isinstance(v, int) and not isinstance(v, bool) and not _is_long(v):
            return f"field '{path}' expects long (64-bit), got {v} (out of range)"
        ok = _is_timestamp(v) if logical and logical.startswith("timestamp") else _is_long(v)
    elif kind in ("float", "double"):
        ok = _is_real(v)
    elif kind == "string":
        ok = isinstance(v, str)
    elif kind == "bytes":
        ok = isinstance(v, bytes | bytearray | memoryview)
    elif kind == "fixed":
        ok = isinstance(v, bytes | bytearray) and len(v) == schema["size"]
    elif kind == "enum":
        ok = isinstance(v, str) and v in schema["symbols"]
    elif kind == "array":
        if not _is_seq(v):
            return _wrong(path, schema, v, named)
        for i, item in enumerate(v):
            p = _problem(schema["items"], item, f"{path}[{i}]", named)
            if p is not None:
                return p
        return None
    elif kind == "map":
        if not isinstance(v, Mapping):
            return _wrong(path, schema, v, named)
        for k, item in v.items():
            if not isinstance(k, str):
                return f"field '{path}' has a key that is not a string: {_show(k)}"
            p = _problem(schema["values"], item, f"{path}[{k!r}]", named)
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
            p = _problem(f["type"], v[name], sub, named)
            if p is not None:
                return p
        return None
    else:
        return None
    return None if ok else _wrong(path, schema, v, named)


def _kind(schema: Any, named: dict[str, Any]) -> str:
    if isinstance(schema, str):
        return _kind(named[schema], named) if schema in named else schema
    if isinstance(schema, list):
        return "union"
    return schema["type"] if isinstance(schema["type"], str) else _kind(schema["type"], named)


def _wrong(path: str, schema: Any, v: Any, named: dict[str, Any]) -> str:
    where = f"field '{path}'" if path else "value"
    return f"{where} expects {describe_type(schema, named)}, got {_show(v)}"


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
