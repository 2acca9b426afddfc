"""Identifiers are opaque tokens: checked where a record is decoded, and wherever they would become part
of a path or an object-store key (docs/architecture.md "Delivery rules")."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pydantic
import pytest

from reelfab.contracts.codec import default_catalog
from reelfab.contracts.records import model_for
from reelfab.errors import StorageError
from reelfab.identifiers import InvalidIdentifier, check_identifier, is_identifier_field, make_workdir
from reelfab.storage import open_store

SCHEMAS = sorted(Path(__file__).resolve().parents[2].joinpath("schemas").glob("*.avsc"))

HOSTILE = [
    "", "/", "/etc", "/tmp/reelfab-victim", "..", ".", "../../..", "a/../../b", "jobs/../x", "a/b", ".hidden",
    "a\\b", "..\\..\\win", "nul\x00byte", "new\nline", "tab\tid", " lead", "trail ", "x" * 129, "é-accent",
    "file:///etc/passwd", "%2e%2e%2f", "a b",
]
VALID = ["job-1a2b3c", str(uuid.uuid4()), "tpl_dance.v2", "ada-01", "x" * 128, "v_pub_file~v2-1.7", "_x", "-x"]


def identifier_fields() -> list[tuple[str, str, bool]]:
    """(record full name, field, nullable) for every identifier field of every current schema."""
    found = []
    for path in SCHEMAS:
        schema = json.loads(path.read_text())
        full = f"{schema.get('namespace', 'reelfab.events')}.{schema['name']}"
        for f in schema["fields"]:
            if is_identifier_field(f["name"]):
                found.append((full, f["name"], isinstance(f["type"], list) and "null" in f["type"]))
    return found


def test_the_identifier_fields_cover_every_id_that_reaches_a_path_or_a_key() -> None:
    names = {field for _, field, _ in identifier_fields()}
    assert {"job_id", "subject_id", "template_id", "music_id", "trend_id", "plan_id", "event_id", "post_id",
            "arm_id"} <= names
    assert "c2pa_manifest_label" not in names  # a C2PA label is a URN (urn:c2pa:...), not one of our identifiers


def _valid_record(record: str) -> dict[str, Any]:
    from fastavro.utils import generate_many

    schema = default_catalog().schema_json(record)
    value = next(iter(generate_many(schema, 1)))
    for f in schema["fields"]:
        if is_identifier_field(f["name"]):
            value[f["name"]] = "id-ok"
    return dict(value)


@pytest.mark.parametrize(("record", "field", "nullable"), identifier_fields())
def test_every_identifier_field_refuses_hostile_values_naming_the_field(record: str, field: str, nullable: bool) -> None:
    model = model_for(record)
    base = _valid_record(record)
    model.model_validate(base)  # the baseline is valid
    for bad in HOSTILE:
        with pytest.raises(pydantic.ValidationError) as caught:
            model.model_validate({**base, field: bad})
        assert field in str(caught.value), bad
    for good in VALID:
        assert getattr(model.model_validate({**base, field: good}), field) == good
    if nullable:
        assert getattr(model.model_validate({**base, field: None}), field) is None


@pytest.mark.parametrize("bad", HOSTILE)
def test_check_identifier_names_the_field(bad: str) -> None:
    with pytest.raises(InvalidIdentifier, match="template_id"):
        check_identifier(bad, "template_id")


@pytest.mark.parametrize("bad", HOSTILE)
def test_a_work_folder_is_never_made_from_a_hostile_id(tmp_path: Path, bad: str) -> None:
    root = tmp_path / "work"
    with pytest.raises(InvalidIdentifier):
        make_workdir(root, bad)
    assert not any(tmp_path.rglob("*tmp*")) and sorted(p.name for p in tmp_path.iterdir()) in ([], ["work"])


def test_work_folders_are_fresh_and_inside_their_root(tmp_path: Path) -> None:
    root = tmp_path / "work"
    a, b = make_workdir(root, "job-1"), make_workdir(root, "job-1")
    assert a != b and a.parent == root.resolve() == b.parent and a.name.startswith("job-1.")


@pytest.mark.parametrize("key", [
    "", "/abs/path", "jobs//abs/path", "jobs/./x", "jobs/../x", "..", "jobs/x/", "a\\b", "a\x00b", "a\nb", " a",
])
def test_the_store_refuses_absolute_empty_and_dot_segments(tmp_path: Path, key: str) -> None:
    store = open_store((tmp_path / "store").as_uri())
    with pytest.raises(StorageError):
        store.put_bytes(key, b"x")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_an_identifier_field_on_the_wire_is_checked_at_decode() -> None:
    from reelfab.contracts.codec import default_codec
    from tests.contract.records import swap_requested

    codec = default_codec()
    raw = codec.encode("reelfab.events.SwapRequested", swap_requested("/etc/cron.d"))
    decoded = codec.decode(raw, expected="reelfab.events.SwapRequested")
    with pytest.raises(pydantic.ValidationError, match="job_id"):
        model_for("reelfab.events.SwapRequested").model_validate(decoded.value)
