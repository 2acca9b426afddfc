"""The Avro codec: framing, evolution, error messages, the schema-registry variant."""

from __future__ import annotations

import copy
import json
import random
from datetime import UTC, datetime
from io import BytesIO
from typing import Any

import httpx
import pytest
from fastavro import parse_schema, schemaless_writer
from fastavro.utils import generate_many

from reelfab.contracts.codec import (
    AvroCodec,
    Decoded,
    SchemaCatalog,
    SchemaRegistryClient,
    default_catalog,
    default_codec,
    fingerprint_of,
    make_entry,
)
from reelfab.contracts.topics import TOPICS
from reelfab.errors import DecodeError, EncodeError, PermanentError, SchemaMismatchError, TransientError
from reelfab.settings import Settings

NS = "reelfab.events"
T0 = datetime(2025, 11, 25, 12, 30, 0, 123000, tzinfo=UTC)
T0_MS = 1764073800123
SHA = "ab" * 32


def _rabin64(data: bytes) -> int:
    """CRC-64-AVRO written out from the Avro specification, independent of fastavro."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def _header(**extra: Any) -> dict[str, Any]:
    return {
        "event_id": "5f1d7c4e-3b52-4c47-9d0e-0a4bd1a9c001",
        "occurred_at": T0,
        "producer": "test",
        **extra,
    }


# one minimal, valid value per record: required fields only (plus a few optional ones)
SAMPLES: dict[str, dict[str, Any]] = {
    "ConsentChanged": _header(
        subject_id="face-1",
        change="GRANTED",
        consent_version=2,
        display_name="Ada",
        document_sha256=SHA,
        scope={
            "platforms": ["tiktok"],
            "allowed_tags": ["dance"],
            "territories": ["DE"],
            "commercial_use": False,
        },
        valid_from=T0,
        enrolled_images=[{"sha256": SHA, "phash": "f0e1d2c3b4a59687", "embedder": "dlib-20"}],
        embedding_digest=SHA,
        lease={"payload": b'{"subject_id":"face-1"}', "signature": bytes(range(64)), "key_id": "k1"},
    ),
    "AuditCheckpoint": _header(
        log_id="consent_registry", entry_count=5, head_seq=5, head_hash=SHA, issued_at=T0, reason="demand",
        key_id="0123456789abcdef", payload=b"{}", signature=bytes(64),
    ),
    "TrendDetected": _header(
        trend_id="tr-1", source="hashtags", title="Robot dance", tags=["dance"], urgency=0.75
    ),
    "SwapRequested": _header(
        job_id="job-1",
        subject_id="face-1",
        consent_version=2,
        source_image_uri="file:///objects/faces/face-1.jpg",
        source_image_sha256=SHA,
        template_id="tpl-1",
        template_uri="file:///objects/templates/tpl-1.mp4",
        template_sha256=SHA,
        template_tags=["dance"],
        swapper_model="ghost_2_256",
        commercial=False,
    ),
    "SwapCompleted": _header(
        job_id="job-1",
        subject_id="face-1",
        consent_version=2,
        mezzanine_uri="file:///objects/jobs/job-1/mezz.mp4",
        mezzanine_sha256=SHA,
        face_track_uri="file:///objects/jobs/job-1/track.json",
        face_track_sha256=SHA,
        backend="classical",
        swapper_model="classical",
        model_license="Apache-2.0",
        commercial_use_allowed=True,
        frames=375,
        fps=52.5,
        duration_s=15.0,
        template_id="tpl-1",
        source_image_sha256=SHA,
        platform="tiktok",
    ),
    "RenderCompleted": _header(
        job_id="job-1",
        subject_id="face-1",
        consent_version=2,
        final_uri="file:///objects/jobs/job-1/final.mp4",
        final_sha256=SHA,
        spec_check={
            "passed": True,
            "width": 1080,
            "height": 1920,
            "fps": 25.0,
            "video_codec": "h264",
            "pix_fmt": "yuv420p",
            "duration_s": 15.0,
        },
        title="Robot dance",
        platform="tiktok",
        template_id="tpl-1",
    ),
    "PublishCompleted": _header(
        job_id="job-1",
        subject_id="face-1",
        consent_version=2,
        platform="tiktok",
        post_id="p-1",
        account="@reelfab",
        published_at=T0,
        privacy_level="SELF_ONLY",
        dry_run=True,
    ),
    "EngagementObserved": _header(
        post_id="p-1", platform="tiktok", observed_at=T0, views=1000, likes=50, comments=3, shares=2
    ),
    "PolicyUpdated": _header(
        arm_space="template",
        policy_version=7,
        computed_at=T0,
        arms=[{"arm_id": "tpl-1", "alpha": 3.0, "beta": 9.0, "pulls": 10, "mean": 0.25}],
    ),
    "SubjectFlagged": _header(
        subject_id="tpl-1", subject_kind="TEMPLATE", action="ELIMINATION_CANDIDATE", reason="low posterior"
    ),
    "JobFailed": _header(
        job_id="job-1",
        stage="swapper",
        reason_code="consent_revoked",
        reason="consent v2 revoked",
        retryable=False,
    ),
}


@pytest.fixture(scope="module")
def catalog() -> SchemaCatalog:
    return default_catalog()


@pytest.fixture()
def codec(catalog: SchemaCatalog) -> AvroCodec:
    return AvroCodec(catalog)


def _millis(value: Any) -> Any:
    """Decoded values carry datetimes where the schema says timestamp-millis; compare as ms."""
    if isinstance(value, datetime):
        return round(value.timestamp() * 1000)
    if isinstance(value, dict):
        return {k: _millis(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_millis(v) for v in value]
    return value


def _with_defaults(schema: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    """``value`` with the schema's defaults filled in, nested records (not in unions) included."""
    out = dict(value)
    for f in schema["fields"]:
        if f["name"] not in out:
            out[f["name"]] = f["default"]
        elif isinstance(f["type"], dict) and f["type"]["type"] == "record":
            out[f["name"]] = _with_defaults(f["type"], out[f["name"]])
        elif (
            isinstance(f["type"], dict)
            and f["type"]["type"] == "array"
            and isinstance(f["type"]["items"], dict)
        ):
            out[f["name"]] = [_with_defaults(f["type"]["items"], v) for v in out[f["name"]]]
    return out


# -- the catalogue ----------------------------------------------------------------------------


def test_catalog_holds_a_schema_for_every_topic(catalog: SchemaCatalog) -> None:
    assert catalog.names() == sorted({t.record for t in TOPICS})  # a record may serve two topics (swap lanes)
    assert set(SAMPLES) == {t.short_record for t in TOPICS}
    for t in TOPICS:
        entry = catalog.current(t.record)
        assert entry.name == t.record
        assert entry.version is None
        assert entry.source == f"{t.short_record}.avsc"
        assert catalog.current(t.short_record) is entry  # short names resolve in reelfab.events
        assert catalog.by_fingerprint(entry.fingerprint) is entry


def test_fingerprints_are_crc64_avro_of_the_canonical_form(catalog: SchemaCatalog) -> None:
    # known value from the Avro specification's test data: "null" -> 0x63dd24e7cc258f8a
    assert fingerprint_of('"null"') == 0x63DD24E7CC258F8A
    for name in catalog.names():
        entry = catalog.current(name)
        assert entry.fingerprint == _rabin64(entry.canonical.encode())
        assert entry.canonical.startswith(
            '{"name":"' + name + '","type":"record","fields":[{"name":"event_id","type":"string"}'
        )
        assert '"doc"' not in entry.canonical and "logicalType" not in entry.canonical
    fps = [catalog.current(n).fingerprint for n in catalog.names()]
    assert len(set(fps)) == len(fps)


def test_canonical_form_strips_docs_defaults_and_logical_types() -> None:
    raw = {
        "type": "record",
        "name": "R",
        "namespace": "a.b",
        "doc": "x",
        "fields": [
            {
                "name": "f",
                "type": {"type": "long", "logicalType": "timestamp-millis"},
                "doc": "y",
                "default": 1,
            }
        ],
    }
    entry = make_entry(raw)
    assert entry.canonical == '{"name":"a.b.R","type":"record","fields":[{"name":"f","type":"long"}]}'
    assert entry.name == "a.b.R"


def test_unknown_record_and_fingerprint_lookups(catalog: SchemaCatalog) -> None:
    with pytest.raises(KeyError, match="no schema for record reelfab.events.Nope"):
        catalog.current("Nope")
    with pytest.raises(KeyError, match="no known schema has fingerprint 0x0000000000000001"):
        catalog.by_fingerprint(1)


def test_schema_json_is_the_file_and_a_copy(catalog: SchemaCatalog) -> None:
    doc = catalog.schema_json("reelfab.events.SwapRequested")
    assert doc["name"] == "SwapRequested" and doc["namespace"] == NS
    assert [f["name"] for f in doc["fields"][:4]] == ["event_id", "occurred_at", "producer", "trace_id"]
    doc["fields"].clear()
    assert len(catalog.schema_json("SwapRequested")["fields"]) == 27


def test_catalog_loads_history_from_a_directory(tmp_path: Any, catalog: SchemaCatalog) -> None:
    current = catalog.schema_json("JobFailed")
    old = copy.deepcopy(current)
    old["fields"] = [f for f in old["fields"] if f["name"] not in ("consent_version", "subject_id")]
    (tmp_path / "JobFailed.avsc").write_text(json.dumps(current))
    (tmp_path / "history").mkdir()
    (tmp_path / "history" / "JobFailed.1.avsc").write_text(json.dumps(old))
    (tmp_path / "history" / "JobFailed.2.avsc").write_text(json.dumps(current))  # unchanged copy: harmless
    cat = SchemaCatalog.from_directory(tmp_path)
    assert cat.names() == [f"{NS}.JobFailed"]
    versions = cat.history("JobFailed")
    assert [v.version for v in versions] == [1, 2]
    assert cat.by_fingerprint(versions[0].fingerprint) is versions[0]
    assert cat.by_fingerprint(versions[1].fingerprint) is cat.current("JobFailed")  # current wins

    (tmp_path / "history" / "JobFailed.v3.avsc").write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r"history/JobFailed\.v3\.avsc: history files are named"):
        SchemaCatalog.from_directory(tmp_path)


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("short", sorted(SAMPLES))
def test_round_trip_of_a_hand_written_value(codec: AvroCodec, catalog: SchemaCatalog, short: str) -> None:
    value = SAMPLES[short]
    data = codec.encode(f"{NS}.{short}", value)
    decoded = codec.decode(data, expected=f"{NS}.{short}")
    assert isinstance(decoded, Decoded)
    assert decoded.record == f"{NS}.{short}" and decoded.short_record == short
    assert decoded.fingerprint == catalog.current(short).fingerprint and decoded.schema_id is None
    assert decoded.value == _with_defaults(catalog.schema_json(short), value)
    assert decoded.value["occurred_at"] == T0 and decoded.value["occurred_at"].tzinfo is not None


@pytest.mark.parametrize("short", sorted(SAMPLES))
def test_round_trip_of_generated_values(codec: AvroCodec, catalog: SchemaCatalog, short: str) -> None:
    random.seed(short)
    for value in generate_many(catalog.schema_json(short), 5):
        decoded = codec.decode(codec.encode(short, value), expected=short)
        assert _millis(decoded.value) == value


def test_defaults_fill_in_on_decode(codec: AvroCodec) -> None:
    value = codec.decode(codec.encode("JobFailed", SAMPLES["JobFailed"])).value
    assert value["attempts"] == 1
    assert value["trace_id"] is None and value["subject_id"] is None and value["consent_version"] is None
    swap = codec.decode(codec.encode("SwapRequested", SAMPLES["SwapRequested"])).value
    assert (swap["priority"], swap["platform"], swap["arm_id"]) == (0, "tiktok", None)
    arm = {"arm_id": "tpl-2", "alpha": 1.0, "beta": 1.0, "pulls": 0, "mean": 0.5}  # no "disabled"
    policy = codec.decode(codec.encode("PolicyUpdated", {**SAMPLES["PolicyUpdated"], "arms": [arm]})).value
    assert policy["arms"] == [{**arm, "disabled": False}]


def test_timestamps_encode_from_datetime_or_millis(codec: AvroCodec) -> None:
    as_dt = codec.encode("JobFailed", SAMPLES["JobFailed"])
    as_ms = codec.encode("JobFailed", {**SAMPLES["JobFailed"], "occurred_at": T0_MS})
    assert as_dt == as_ms
    assert codec.decode(as_ms).value["occurred_at"] == T0


# -- framing ----------------------------------------------------------------------------------


def test_single_object_framing(codec: AvroCodec, catalog: SchemaCatalog) -> None:
    entry = catalog.current("SwapRequested")
    data = codec.encode("SwapRequested", SAMPLES["SwapRequested"])
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == _rabin64(entry.canonical.encode()).to_bytes(8, "little")
    body = BytesIO()
    schemaless_writer(body, parse_schema(catalog.schema_json("SwapRequested")), SAMPLES["SwapRequested"])
    assert data[10:] == body.getvalue()


# -- evolution --------------------------------------------------------------------------------


def _older_swap_requested(catalog: SchemaCatalog) -> dict[str, Any]:
    old = catalog.schema_json("SwapRequested")
    old["fields"] = [f for f in old["fields"] if f["name"] not in ("arm_id", "plan_id", "priority")]
    return old


def test_decode_resolves_an_older_writer_to_the_current_schema(catalog: SchemaCatalog) -> None:
    old = _older_swap_requested(catalog)
    current = catalog.schema_json("SwapRequested")
    writer = AvroCodec(SchemaCatalog([old]))
    reader = AvroCodec(SchemaCatalog([current], history=[old]))
    value = {k: v for k, v in SAMPLES["SwapRequested"].items()}
    data = writer.encode("SwapRequested", value)
    assert data[2:10] != catalog.current("SwapRequested").header[2:]
    decoded = reader.decode(data, expected="SwapRequested")
    assert decoded.fingerprint == make_entry(old).fingerprint
    assert (
        decoded.value["arm_id"] is None
        and decoded.value["plan_id"] is None
        and decoded.value["priority"] == 0
    )
    assert decoded.value["job_id"] == "job-1"
    assert set(decoded.value) == {f["name"] for f in current["fields"]}
    # a reader that does not know the old version cannot find the writer schema
    with pytest.raises(DecodeError, match="no known schema has fingerprint 0x"):
        AvroCodec(SchemaCatalog([current])).decode(data)


def test_an_enum_symbol_added_later_reads_as_the_default(catalog: SchemaCatalog) -> None:
    current = catalog.schema_json("SubjectFlagged")
    future = copy.deepcopy(current)
    action = next(f for f in future["fields"] if f["name"] == "action")
    action["type"]["symbols"].append("QUARANTINED")
    data = AvroCodec(SchemaCatalog([future])).encode(
        "SubjectFlagged", {**SAMPLES["SubjectFlagged"], "action": "QUARANTINED"}
    )
    decoded = AvroCodec(SchemaCatalog([current], history=[future])).decode(data)
    assert decoded.value["action"] == "UNKNOWN"


# -- encode errors ----------------------------------------------------------------------------


def _encode_error(codec: AvroCodec, record: str, value: Any, **kw: Any) -> str:
    with pytest.raises(EncodeError) as info:
        codec.encode(record, value, **kw)
    return str(info.value)


def test_missing_required_field_is_named(codec: AvroCodec) -> None:
    value = {k: v for k, v in SAMPLES["SwapRequested"].items() if k != "job_id"}
    assert (
        _encode_error(codec, "SwapRequested", value)
        == "SwapRequested: field 'job_id' is missing (required string)"
    )
    value = {k: v for k, v in SAMPLES["JobFailed"].items() if k != "occurred_at"}
    assert _encode_error(codec, "JobFailed", value) == (
        "JobFailed: field 'occurred_at' is missing (required timestamp-millis (datetime or int))"
    )


@pytest.mark.parametrize(
    ("field", "bad", "message"),
    [
        ("priority", "high", "SwapRequested: field 'priority' expects int, got str 'high'"),
        ("job_id", 42, "SwapRequested: field 'job_id' expects string, got int 42"),
        ("job_id", None, "SwapRequested: field 'job_id' expects string, got None"),
        # fastavro's writer would silently coerce these; the codec refuses them
        ("commercial", "no", "SwapRequested: field 'commercial' expects boolean, got str 'no'"),
        ("commercial", None, "SwapRequested: field 'commercial' expects boolean, got None"),
        ("priority", 1.5, "SwapRequested: field 'priority' expects int, got float 1.5"),
        ("priority", True, "SwapRequested: field 'priority' expects int, got bool True"),
        (
            "consent_version",
            2**40,
            "SwapRequested: field 'consent_version' expects int (32-bit), got 1099511627776 (out of range)",
        ),
        (
            "template_tags",
            "dance",
            "SwapRequested: field 'template_tags' expects array of string, got str 'dance'",
        ),
        ("template_tags", ["dance", 3], "SwapRequested: field 'template_tags[1]' expects string, got int 3"),
        ("arm_id", 7, "SwapRequested: field 'arm_id' expects null or string, got int 7"),
        (
            "occurred_at",
            "2025-11-25",
            "SwapRequested: field 'occurred_at' expects timestamp-millis (datetime or int), got str '2025-11-25'",
        ),
        (
            "occurred_at",
            1.5,
            "SwapRequested: field 'occurred_at' expects timestamp-millis (datetime or int), got float 1.5",
        ),
    ],
)
def test_wrong_type_is_named(codec: AvroCodec, field: str, bad: Any, message: str) -> None:
    assert _encode_error(codec, "SwapRequested", {**SAMPLES["SwapRequested"], field: bad}) == message


def test_nested_problems_are_named_with_their_path(codec: AvroCodec) -> None:
    good = SAMPLES["ConsentChanged"]
    lease = {k: v for k, v in good["lease"].items() if k != "signature"}
    assert _encode_error(codec, "ConsentChanged", {**good, "lease": lease}) == (
        "ConsentChanged: field 'lease.signature' is missing (required bytes)"
    )
    images = [*good["enrolled_images"], {"sha256": SHA, "phash": 123, "embedder": "dlib"}]
    assert _encode_error(codec, "ConsentChanged", {**good, "enrolled_images": images}) == (
        "ConsentChanged: field 'enrolled_images[1].phash' expects string, got int 123"
    )
    scope = {**good["scope"], "commercial_use": "yes"}
    assert _encode_error(codec, "ConsentChanged", {**good, "scope": scope}) == (
        "ConsentChanged: field 'scope.commercial_use' expects boolean, got str 'yes'"
    )
    assert _encode_error(codec, "ConsentChanged", {**good, "change": "MAYBE"}) == (
        "ConsentChanged: field 'change' expects enum ConsentChange (GRANTED, AMENDED, REVOKED, EXPIRED, ERASED, UNKNOWN), got str 'MAYBE'"
    )
    arms = [{"arm_id": "a", "alpha": 1.0, "beta": 1.0, "pulls": 1, "mean": 0.5, "disabled": "false"}]
    assert _encode_error(codec, "PolicyUpdated", {**SAMPLES["PolicyUpdated"], "arms": arms}) == (
        "PolicyUpdated: field 'arms[0].disabled' expects boolean, got str 'false'"
    )


def test_encode_refuses_non_dicts_unknown_records_and_wrong_topics(codec: AvroCodec) -> None:
    assert (
        _encode_error(codec, "JobFailed", ["not", "a", "dict"])
        == "JobFailed: value must be a dict (record), got list ['not', 'a', 'dict']"
    )
    assert "no schema for record reelfab.events.Nope" in _encode_error(codec, "Nope", {})
    assert _encode_error(codec, "SwapRequested", SAMPLES["SwapRequested"], topic="reelfab.job.failed.v1") == (
        "topic reelfab.job.failed.v1 carries reelfab.events.JobFailed, not reelfab.events.SwapRequested"
    )
    # the right topic is fine
    assert (
        codec.encode("SwapRequested", SAMPLES["SwapRequested"], topic="reelfab.swap.requested.v1")[:2]
        == b"\xc3\x01"
    )


def test_extra_keys_are_ignored(codec: AvroCodec) -> None:
    data = codec.encode("JobFailed", {**SAMPLES["JobFailed"], "not_in_schema": 1})
    assert "not_in_schema" not in codec.decode(data).value


# -- decode errors ----------------------------------------------------------------------------


@pytest.fixture()
def job_failed_bytes(codec: AvroCodec) -> bytes:
    return codec.encode("JobFailed", SAMPLES["JobFailed"])


def _decode_error(codec: AvroCodec, data: Any, **kw: Any) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        codec.decode(data, **kw)
    return info.value


def test_decode_empty_short_and_foreign_bytes(codec: AvroCodec) -> None:
    assert str(_decode_error(codec, b"")) == "empty message (0 bytes)"
    assert "None (a tombstone?)" in str(_decode_error(codec, None))
    assert str(_decode_error(codec, b"\xc3\x01\x00")) == (
        "too short for Avro single-object encoding: 3 bytes, the header alone is 10"
    )
    err = str(_decode_error(codec, b'{"job_id": "x", "stage": "swapper"}'))
    assert err == "not Avro single-object encoding: first bytes 0x7b226a6f625f6964… (looks like JSON)"
    assert (
        str(_decode_error(codec, b"\x7b\x22"))
        == "not Avro single-object encoding: first bytes 0x7b22 (looks like JSON)"
    )
    assert "first bytes 0x0102" in str(_decode_error(codec, b"\x01\x02"))


def test_decode_unknown_fingerprint(codec: AvroCodec, job_failed_bytes: bytes) -> None:
    data = b"\xc3\x01" + (0x1122334455667788).to_bytes(8, "little") + job_failed_bytes[10:]
    assert str(_decode_error(codec, data)).startswith("no known schema has fingerprint 0x1122334455667788")


def test_decode_truncated_and_padded_bodies(codec: AvroCodec, job_failed_bytes: bytes) -> None:
    err = _decode_error(codec, job_failed_bytes[:-3])
    assert not isinstance(err, SchemaMismatchError)
    assert str(err).startswith("JobFailed: truncated or corrupt body (writer fingerprint 0x")
    err = _decode_error(codec, job_failed_bytes + b"\x00\x00")
    assert str(err).startswith("JobFailed: 2 bytes left over after the record")


def test_decode_never_leaks_fastavro_exceptions(codec: AvroCodec) -> None:
    rng = random.Random(7)
    for short, value in SAMPLES.items():
        data = codec.encode(short, value)
        for _ in range(60):
            cut = bytearray(data[: rng.randrange(len(data))])
            flipped = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(10, len(flipped))
                flipped[i] = rng.randrange(256)
            for mangled in (bytes(cut), bytes(flipped)):
                try:
                    codec.decode(mangled)
                except DecodeError:
                    pass  # anything else fails the test


def test_decode_checks_the_expected_record(codec: AvroCodec, job_failed_bytes: bytes) -> None:
    with pytest.raises(SchemaMismatchError) as info:
        codec.decode(job_failed_bytes, expected="reelfab.events.SwapRequested")
    assert str(info.value) == "expected reelfab.events.SwapRequested, got reelfab.events.JobFailed"
    # without `expected`, the topic's record is expected; a dead-letter twin carries the same
    with pytest.raises(SchemaMismatchError, match="on topic reelfab.swap.requested.v1"):
        codec.decode(job_failed_bytes, topic="reelfab.swap.requested.v1")
    with pytest.raises(SchemaMismatchError):
        codec.decode(job_failed_bytes, topic="reelfab.swap.requested.v1.dlq")
    assert codec.decode(job_failed_bytes, topic="reelfab.job.failed.v1").record == f"{NS}.JobFailed"
    assert codec.decode(job_failed_bytes, expected="JobFailed").record == f"{NS}.JobFailed"
    assert codec.decode(bytearray(job_failed_bytes)).value["job_id"] == "job-1"
    assert codec.decode(memoryview(job_failed_bytes)).value["job_id"] == "job-1"


# -- schema registry (Confluent wire format) --------------------------------------------------


class FakeRegistry:
    """Just enough of the Confluent Schema Registry REST API, as an httpx transport."""

    def __init__(self) -> None:
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str]] = []
        self.fail_with: int | None = None

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        if self.fail_with is not None:
            return httpx.Response(
                self.fail_with, json={"error_code": self.fail_with * 100 + 1, "message": "simulated failure"}
            )
        assert request.headers["content-type"] == "application/vnd.schemaregistry.v1+json"
        parts = request.url.path.strip("/").split("/")
        if request.method == "POST" and parts[0] == "subjects" and parts[2] == "versions":
            text = json.loads(request.content)["schema"]
            json.loads(text)  # must be a JSON document in a string
            schema_id = next((i for i, s in self.schemas.items() if s == text), None) or len(self.schemas) + 1
            self.schemas[schema_id] = text
            self.subjects.setdefault(parts[1], []).append(schema_id)
            return httpx.Response(200, json={"id": schema_id})
        if request.method == "GET" and parts[:2] == ["schemas", "ids"]:
            schema_id = int(parts[2])
            if schema_id not in self.schemas:
                return httpx.Response(404, json={"error_code": 40403, "message": "Schema not found"})
            return httpx.Response(200, json={"schema": self.schemas[schema_id]})
        return httpx.Response(404, json={"error_code": 404, "message": "no such route"})

    def client(self) -> SchemaRegistryClient:
        return SchemaRegistryClient("http://registry.test:8081/", transport=httpx.MockTransport(self.handler))


def test_confluent_framing_registers_once_and_decodes(catalog: SchemaCatalog) -> None:
    fake = FakeRegistry()
    producer = AvroCodec(catalog, fake.client())
    topic = "reelfab.swap.requested.v1"
    first = producer.encode(f"{NS}.SwapRequested", SAMPLES["SwapRequested"], topic=topic)
    second = producer.encode(
        f"{NS}.SwapRequested", {**SAMPLES["SwapRequested"], "job_id": "job-2"}, topic=topic
    )
    assert first[0] == 0 and first[1:5] == (1).to_bytes(4, "big") and second[1:5] == first[1:5]
    assert fake.requests == [("POST", f"/subjects/{topic}-value/versions")]
    assert json.loads(fake.schemas[1]) == catalog.schema_json("SwapRequested")
    body = BytesIO()
    schemaless_writer(body, parse_schema(catalog.schema_json("SwapRequested")), SAMPLES["SwapRequested"])
    assert first[5:] == body.getvalue()

    consumer = AvroCodec(catalog, fake.client())  # a fresh client: must look the id up
    decoded = consumer.decode(second, expected=f"{NS}.SwapRequested")
    assert (decoded.record, decoded.schema_id, decoded.fingerprint) == (f"{NS}.SwapRequested", 1, None)
    assert decoded.value["job_id"] == "job-2"
    consumer.decode(first)
    assert fake.requests[1:] == [("GET", "/schemas/ids/1")]  # cached after the first look-up
    # single-object bytes still decode when a registry is configured
    assert (
        consumer.decode(AvroCodec(catalog).encode("SwapRequested", SAMPLES["SwapRequested"])).value["job_id"]
        == "job-1"
    )


def test_confluent_decode_resolves_an_older_registered_schema(catalog: SchemaCatalog) -> None:
    fake = FakeRegistry()
    old = _older_swap_requested(catalog)
    data = AvroCodec(SchemaCatalog([old]), fake.client()).encode(
        "SwapRequested", SAMPLES["SwapRequested"], topic="reelfab.swap.requested.v1"
    )
    decoded = AvroCodec(catalog, fake.client()).decode(data)  # old schema known only to the registry
    assert decoded.value["priority"] == 0 and decoded.value["arm_id"] is None
    assert set(decoded.value) == {f["name"] for f in catalog.schema_json("SwapRequested")["fields"]}


def test_confluent_errors(catalog: SchemaCatalog) -> None:
    fake = FakeRegistry()
    codec = AvroCodec(catalog, fake.client())
    assert "a topic is needed" in _encode_error(codec, "JobFailed", SAMPLES["JobFailed"])
    assert "schema id 9" in str(_decode_error(codec, b"\x00\x00\x00\x00\x09\x02"))
    assert "no schema registry is configured" in str(
        _decode_error(AvroCodec(catalog), b"\x00\x00\x00\x00\x09\x02")
    )

    fake.fail_with = 503
    with pytest.raises(
        TransientError,
        match=r"http://registry\.test:8081/subjects/reelfab\.job\.failed\.v1-value/versions answered 503",
    ):
        codec.encode("JobFailed", SAMPLES["JobFailed"], topic="reelfab.job.failed.v1")
    fake.fail_with = 422
    with pytest.raises(PermanentError, match=r"answered 422: simulated failure \(error_code 42201\)") as info:
        codec.encode("JobFailed", SAMPLES["JobFailed"], topic="reelfab.job.failed.v1")
    assert not isinstance(info.value, TransientError)


def test_registry_unreachable_is_transient() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = SchemaRegistryClient("http://127.0.0.1:9", transport=httpx.MockTransport(refuse))
    with pytest.raises(TransientError, match=r"GET http://127\.0\.0\.1:9/schemas/ids/3 failed: ConnectError"):
        client.get_schema(3)


# -- the process-wide codec -------------------------------------------------------------------


def test_default_codec_is_built_once_per_registry_url() -> None:
    plain = default_codec(Settings(schema_registry_url=None))
    assert plain.registry is None and plain.catalog is default_catalog()
    assert default_codec(Settings(schema_registry_url=None)) is plain
    with_registry = default_codec(Settings(schema_registry_url="http://registry.test:8081"))
    assert with_registry.registry is not None and with_registry.registry.url == "http://registry.test:8081"
    assert with_registry is not plain


# -- the modules the codec is made of ---------------------------------------------------------------


def test_the_codec_module_still_offers_what_the_repository_imports_from_it() -> None:
    from reelfab.contracts import catalogue, codec, framing, registry_client, validation

    assert codec.SchemaCatalog is catalogue.SchemaCatalog and codec.default_catalog is catalogue.default_catalog
    assert codec.make_entry is catalogue.make_entry and codec.fingerprint_of is catalogue.fingerprint_of
    assert codec.SchemaRegistryClient is registry_client.SchemaRegistryClient
    assert codec.SINGLE_OBJECT_MARKER == framing.SINGLE_OBJECT_MARKER == b"\xc3\x01"
    assert codec.explain_value is validation.explain_value
    for name in codec.__all__:
        assert hasattr(codec, name), name


def test_frames_name_their_writer_schema() -> None:
    from reelfab.contracts.framing import confluent_header, read_frame, single_object_header

    single = read_frame(single_object_header(0x0123456789ABCDEF) + b"body")
    assert (single.fingerprint, single.schema_id, single.body_start) == (0x0123456789ABCDEF, None, 10)
    assert single.writer == "writer fingerprint 0x0123456789abcdef"
    confluent = read_frame(confluent_header(42) + b"body")
    assert (confluent.fingerprint, confluent.schema_id, confluent.body_start) == (None, 42, 5)
    with pytest.raises(DecodeError, match="looks like JSON"):
        read_frame(b'{"job_id": 1}')


@pytest.mark.parametrize(
    ("record", "change", "message"),
    [
        ("SwapRequested", {"priority": "high"}, "field 'priority' expects int, got str 'high'"),
        ("SwapRequested", {"commercial": None}, "field 'commercial' expects boolean, got None"),
        ("ConsentChanged", {"change": "MAYBE"},
         "field 'change' expects enum ConsentChange (GRANTED, AMENDED, REVOKED, EXPIRED, ERASED, UNKNOWN), got str 'MAYBE'"),
    ],
)
def test_fastavros_validator_is_explained_in_the_same_words(
    catalog: SchemaCatalog, record: str, change: dict[str, Any], message: str
) -> None:
    """When the codec's own walk finds nothing, fastavro.validation names the field: same sentence."""
    from reelfab.contracts.validation import _fastavro_problem, problem_of

    entry = catalog.current(record)
    value = {**SAMPLES[record], **change}
    assert problem_of(entry.parsed, value, "", entry.named) == message
    assert _fastavro_problem(entry, value) == message
    assert _fastavro_problem(entry, SAMPLES[record]) is None


def test_fastavros_validator_names_a_nested_field_by_its_record(catalog: SchemaCatalog) -> None:
    from reelfab.contracts.validation import _fastavro_problem

    entry = catalog.current("ConsentChanged")
    good = SAMPLES["ConsentChanged"]
    assert _fastavro_problem(entry, {**good, "scope": {**good["scope"], "commercial_use": "yes"}}) == (
        "field 'ConsentScope.commercial_use' expects boolean, got str 'yes'"
    )
