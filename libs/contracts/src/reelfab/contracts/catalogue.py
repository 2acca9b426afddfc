"""The schema catalogue: every record schema Reelfab knows, current (what consumers read as) and previous
versions from ``schemas/history/`` (what old messages may have been written with), by name and by
CRC-64-AVRO fingerprint of the Parsing Canonical Form."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from reelfab.contracts.framing import single_object_header
from reelfab.contracts.topic_types import SCHEMA_NAMESPACE

_HISTORY_FILE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.(?P<version>\d+)\.avsc$")


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
    return _fingerprint_of_canonical(to_parsing_canonical_form(schema))


def _fingerprint_of_canonical(canonical: str) -> int:
    # fastavro returns the hex of the little-endian bytes (what Java writes into the header)
    return int.from_bytes(bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO")), "little")


def fingerprint_hex(fp: int) -> str:
    return f"0x{fp:016x}"


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
        """The Avro single-object header of values written with this schema."""
        return single_object_header(self.fingerprint)


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
    return SchemaEntry(parsed["name"], raw, parsed, named, canonical, _fingerprint_of_canonical(canonical),
                       version, source)


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
        entry = self.find_current(record)
        if entry is None:
            raise KeyError(f"no schema for record {full_name(record)}; known: {', '.join(sorted(self._current))}")
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
        copied: dict[str, Any] = json.loads(json.dumps(self.current(record).raw))
        return copied


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
