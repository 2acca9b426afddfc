"""How an Avro value is framed on the wire, and how the frame names its writer schema.

* Avro single-object encoding (the default): ``C3 01``, the writer schema's 8-byte CRC-64-AVRO
  fingerprint (little-endian), then the binary body.
* Confluent wire format, when a schema registry is configured: ``00``, the 4-byte big-endian
  schema id, then the body."""

from __future__ import annotations

from dataclasses import dataclass

from reelfab.errors import DecodeError

SINGLE_OBJECT_MARKER = b"\xc3\x01"
SINGLE_OBJECT_HEADER_LEN = 10  # marker + 8-byte fingerprint
CONFLUENT_MAGIC = 0
CONFLUENT_HEADER_LEN = 5  # magic + 4-byte schema id


def single_object_header(fingerprint: int) -> bytes:
    """``C3 01`` and the writer schema's fingerprint, 8 bytes little-endian."""
    return SINGLE_OBJECT_MARKER + fingerprint.to_bytes(8, "little")


def confluent_header(schema_id: int) -> bytes:
    """The magic byte ``00`` and the registry's schema id, 4 bytes big-endian."""
    return bytes((CONFLUENT_MAGIC,)) + schema_id.to_bytes(4, "big")


@dataclass(frozen=True)
class Frame:
    """What the header of a message says: one of ``fingerprint`` (single-object encoding) or
    ``schema_id`` (Confluent wire format), and where the Avro body starts."""

    body_start: int
    fingerprint: int | None = None
    schema_id: int | None = None

    @property
    def writer(self) -> str:
        """How the writer schema is identified, for messages."""
        return writer_id(self.fingerprint, self.schema_id)


def read_frame(data: bytes | bytearray | memoryview) -> Frame:
    """The frame of ``data``; a DecodeError that says what is wrong when it is neither framing."""
    if not isinstance(data, bytes | bytearray | memoryview):
        what = "None (a tombstone?)" if data is None else type(data).__name__
        raise DecodeError(f"cannot decode {what}: expected bytes")
    n = len(data)
    if n == 0:
        raise DecodeError("empty message (0 bytes)")
    if data[:2] == SINGLE_OBJECT_MARKER:
        if n < SINGLE_OBJECT_HEADER_LEN:
            raise DecodeError(
                f"too short for Avro single-object encoding: {n} bytes, the header alone is {SINGLE_OBJECT_HEADER_LEN}"
            )
        return Frame(SINGLE_OBJECT_HEADER_LEN, fingerprint=int.from_bytes(data[2:10], "little"))
    if data[0] == CONFLUENT_MAGIC and n >= CONFLUENT_HEADER_LEN:
        return Frame(CONFLUENT_HEADER_LEN, schema_id=int.from_bytes(data[1:5], "big"))
    raise DecodeError(_not_avro(data))


def writer_id(fp: int | None, schema_id: int | None) -> str:
    return f"writer fingerprint 0x{fp:016x}" if fp is not None else f"writer schema id {schema_id}"


def _not_avro(data: bytes | bytearray | memoryview) -> str:
    head = bytes(data[:8]).hex()
    more = "…" if len(data) > 8 else ""
    hint = ""
    if data[:1] in (b"{", b"["):
        hint = " (looks like JSON)"
    elif data[0] == CONFLUENT_MAGIC:
        hint = f" (too short for the Confluent wire format: {len(data)} bytes)"
    return f"not Avro single-object encoding: first bytes 0x{head}{more}{hint}"
