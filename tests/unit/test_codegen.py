"""`reelfab codegen`: the contracts package's generated modules (schema texts, topic catalogue, typed
records) follow schemas/, `--check` names the file that does not, and the generated records are real,
strict classes."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pydantic
import pytest

from reelfab.contracts.catalogue import SchemaCatalog, default_catalog
from reelfab.contracts.codec import AvroCodec
from reelfab.contracts.records import RECORDS, Record, model_for, model_from_schema
from reelfab.contracts.topics import TOPICS
from reelfab.devtools.codegen import (
    GENERATED,
    CodegenError,
    generate,
    load_catalogue,
    render_records,
    render_topics,
    stale,
    write,
)
from tests.contract.records import swap_requested

REPO = Path(__file__).resolve().parents[2]
SCHEMAS_PY = str(GENERATED / "schemas.py")
TOPICS_PY = str(GENERATED / "topics.py")
RECORDS_PY = str(GENERATED / "records.py")


def _copy_repo(tmp: Path) -> Path:
    """schemas/ and the committed generated files, as a repository of their own."""
    repo = tmp / "repo"
    shutil.copytree(REPO / "schemas", repo / "schemas")
    shutil.copytree(REPO / GENERATED, repo / GENERATED, ignore=shutil.ignore_patterns("__pycache__"))
    return repo


def _check(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reelfab.cli", "codegen", "--check", "--repo", str(repo)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "300"})


# -- the repository's own files -------------------------------------------------------------------


def test_the_committed_generated_files_match_schemas() -> None:
    assert stale(REPO) == [], "run `reelfab codegen` (make codegen) and commit the result"


def test_check_passes_on_the_repository() -> None:
    proc = _check(REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_generation_is_deterministic() -> None:
    assert generate(REPO) == generate(REPO)


# -- --check on a changed copy ----------------------------------------------------------------------


def test_check_fails_naming_the_stale_files_when_a_schema_changes(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    assert stale(repo) == []
    path = repo / "schemas" / "SwapRequested.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append({"name": "lut_id", "type": ["null", "string"], "default": None,
                             "doc": "Colour look-up table to grade with."})
    path.write_text(json.dumps(schema, indent=2))

    assert set(stale(repo)) == {SCHEMAS_PY, RECORDS_PY}
    proc = _check(repo)
    assert proc.returncode == 1
    assert RECORDS_PY in proc.stderr and SCHEMAS_PY in proc.stderr and TOPICS_PY not in proc.stderr

    assert set(write(repo)) == {SCHEMAS_PY, RECORDS_PY}
    assert stale(repo) == [] and _check(repo).returncode == 0
    assert "    lut_id: Identifier | None = Field(default=None, description=\"Colour look-up table to grade with.\")" in (
        (repo / RECORDS_PY).read_text().splitlines()
    )


def test_check_fails_naming_the_topics_module_when_the_catalogue_changes(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    toml = repo / "schemas" / "topics.toml"
    toml.write_text(toml.read_text().replace('producers = ["planner", "jobs-cli", "demo"]',
                                             'producers = ["planner", "jobs-cli"]'))
    assert stale(repo) == [TOPICS_PY]
    proc = _check(repo)
    assert proc.returncode == 1 and TOPICS_PY in proc.stderr


def test_check_fails_when_a_generated_file_is_edited_or_missing(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    (repo / RECORDS_PY).write_text((repo / RECORDS_PY).read_text() + "\n# a hand edit\n")
    (repo / TOPICS_PY).unlink()
    assert set(stale(repo)) == {RECORDS_PY, TOPICS_PY}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('record = "JobFailed"', 'record = "JobGone"'),
         "topic reelfab.job.failed.v1 carries record JobGone, but no current schemas/*.avsc holds it"),
        (('key = "post_id"', 'key = "views"'), "key field 'views' of schemas/EngagementObserved.avsc must be a string"),
        (('key = "trend_id"', 'key = "trend"'), "key 'trend' is not a top-level field of schemas/TrendDetected.avsc"),
        (("partitions = 6", "partitions = 0"), "partitions must be a whole number of at least 1"),
        (('kind = "external"', 'kind = "alien"'), "party trend-detector: kind must be one of"),
        (('compacted = false\ndescription = "A post', 'retention = "7d"\ndescription = "A post'),
         "topic reelfab.publish.completed.v1: unknown key(s) retention"),
        (('consumers = ["swapper-gpu"]', 'consumers = ["Swapper GPU"]'),
         "consumers must be a list of service or party names"),
    ],
)
def test_a_broken_catalogue_is_named(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    repo = _copy_repo(tmp_path)
    toml = repo / "schemas" / "topics.toml"
    text = toml.read_text()
    assert edit[0] in text
    toml.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(CodegenError) as caught:
        load_catalogue(repo)
    assert str(caught.value).startswith("schemas/topics.toml: ") and message in str(caught.value)


def test_the_catalogue_must_exist(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    (repo / "schemas" / "topics.toml").unlink()
    with pytest.raises(CodegenError, match="schemas/topics.toml: missing"):
        stale(repo)


# -- the generated records ----------------------------------------------------------------------------


def test_there_is_a_generated_class_for_every_current_record() -> None:
    assert set(RECORDS) == set(default_catalog().names())
    for name, cls in RECORDS.items():
        assert model_for(name) is cls and cls.__avro_name__ == name and issubclass(cls, Record)
        assert cls.__module__ == "reelfab.contracts.generated.records"
    assert model_for("SwapRequested") is RECORDS["reelfab.events.SwapRequested"]
    with pytest.raises(KeyError, match="no record class for reelfab.events.Nope"):
        model_for("Nope")


@pytest.mark.parametrize("record", sorted(RECORDS))
def test_a_generated_class_has_the_shape_the_schema_builds(record: str) -> None:
    """The generated class and a model built at run time from the same schema agree on everything
    pydantic knows about them: fields, types, defaults, docs, the identifier pattern."""
    built = model_from_schema(default_catalog().schema_json(record))
    assert RECORDS[record].model_json_schema() == built.model_json_schema()


def test_generated_records_reject_an_unknown_field() -> None:
    cls = RECORDS["reelfab.events.SwapRequested"]
    with pytest.raises(pydantic.ValidationError, match="no_such_field"):
        cls.model_validate({**swap_requested(), "no_such_field": 1})


@pytest.mark.parametrize("bad", ["a/b", "../etc", "", " x", "x" * 129])
def test_generated_records_reject_a_bad_identifier(bad: str) -> None:
    cls = RECORDS["reelfab.events.SwapRequested"]
    for field in ("job_id", "subject_id", "template_id", "trend_id"):
        with pytest.raises(pydantic.ValidationError, match=field):
            cls.model_validate({**swap_requested(), field: bad})
    with pytest.raises(pydantic.ValidationError, match="arm_id"):  # nested records too
        RECORDS["reelfab.events.PolicyUpdated"].model_validate({
            "event_id": "e-1", "occurred_at": datetime.now(UTC), "producer": "analytics", "arm_space": "s",
            "policy_version": 1, "computed_at": datetime.now(UTC),
            "arms": [{"arm_id": bad, "alpha": 1.0, "beta": 1.0, "pulls": 1, "mean": 0.5}],
        })


def test_generated_records_are_frozen_and_typed() -> None:
    from reelfab.contracts.generated.records import ConsentChanged, SwapRequested

    record = SwapRequested.model_validate(swap_requested())
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        record.job_id = "job-2"  # type: ignore[misc]
    assert ConsentChanged.model_fields["change"].annotation is not str  # a Literal of the enum's symbols
    with pytest.raises(pydantic.ValidationError, match="change"):
        ConsentChanged.model_validate({"change": "MAYBE"})
    assert SwapRequested.model_fields["job_id"].description == "Id of the job; the Kafka key, shared by every later event of the job."


def test_the_generated_topics_are_the_catalogue() -> None:
    from reelfab.contracts.generated import topics as generated

    assert generated.TOPICS == TOPICS
    assert generated.SWAP_REQUESTED == "reelfab.swap.requested.v1"


# -- the generator on unusual schemas -----------------------------------------------------------------

EDGE = {
    "type": "record", "name": "Edge", "namespace": "x.test", "doc": 'Edge "cases" \\ all "quoted"',
    "fields": [
        {"name": "edge_id", "type": "string", "doc": "The key."},
        {"name": "class", "type": "int", "default": 1, "doc": "A Python keyword."},
        {"name": "json", "type": ["null", "string"], "default": None, "doc": "A BaseModel attribute."},
        {"name": "bytes", "type": "long", "default": 0, "doc": "Shadows the type of blob."},
        {"name": "blob", "type": "bytes", "default": "\u00ff\u0000", "doc": "Bytes with a default."},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"], "doc": "Kinds."},
         "default": "B"},
        {"name": "inner", "type": {"type": "record", "name": "Inner", "doc": "Nested.",
                                   "fields": [{"name": "n", "type": "int", "default": 0}]},
         "default": {"n": 3}},
        {"name": "maybe_inner", "type": ["null", "Inner"], "default": None},
        {"name": "when", "type": {"type": "long", "logicalType": "timestamp-millis"}, "default": 1500},
        {"name": "scores", "type": {"type": "map", "values": "double"}, "default": {"a": 1}},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": ["x"]},
        {"name": "other_ids", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "parent_id", "type": ["null", "string"], "default": None},
        {"name": "ratio", "type": "float", "default": 1},
        {"name": "either", "type": ["int", "string", "null"], "default": 7},
    ],
}
EDGE_TOPICS = """
[parties.edge-tool]
kind = "operator tool"
module = "edge.tool"
description = "Makes edges."

[[topics]]
name = "x.edge.made.v2"
record = "x.test.Edge"
key = "edge_id"
partitions = 2
description = "An edge was made."
producers = ["edge-tool"]
consumers = ["edge-reader"]
"""


def _edge_repo(tmp: Path) -> Path:
    repo = tmp / "edge"
    (repo / "schemas").mkdir(parents=True)
    (repo / "schemas" / "Edge.avsc").write_text(json.dumps(EDGE))
    (repo / "schemas" / "topics.toml").write_text(EDGE_TOPICS)
    return repo


def _load(path: Path, text: str) -> ModuleType:
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, Path]:
    tmp = tmp_path_factory.mktemp("codegen")
    repo = _edge_repo(tmp)
    return _load(tmp / "edge_records.py", render_records(repo)), repo


def test_unusual_field_names_become_aliased_python_names(edge: tuple[ModuleType, Path]) -> None:
    cls: Any = edge[0].Edge
    assert cls.__avro_name__ == "x.test.Edge" and cls.__doc__ == 'Edge "cases" \\ all "quoted"'
    value = cls.model_validate({"edge_id": "e-1", "class": 5, "json": "{}", "bytes": 9})
    assert (value.class_, value.json_, value.bytes_) == (5, "{}", 9)
    assert cls(edge_id="e-1", class_=6).class_ == 6  # by Python name too
    avro = value.to_avro()
    assert {"class", "json", "bytes"} <= set(avro) and not {"class_", "json_", "bytes_"} & set(avro)


def test_defaults_come_from_the_schema(edge: tuple[ModuleType, Path]) -> None:
    cls: Any = edge[0].Edge
    a, b = cls(edge_id="e-1"), cls(edge_id="e-2")
    assert a.class_ == 1 and a.json_ is None and a.bytes_ == 0 and a.blob == b"\xff\x00" and a.kind == "B"
    assert a.inner == edge[0].Inner(n=3) and a.maybe_inner is None
    assert a.when == datetime(1970, 1, 1, 0, 0, 1, 500000, tzinfo=UTC)
    assert a.scores == {"a": 1.0} and a.tags == ["x"] and a.other_ids == [] and a.ratio == 1.0 and a.either == 7
    assert a.tags is not b.tags and a.scores is not b.scores  # a fresh default per record


def test_identifiers_enums_and_unknown_fields_are_checked(edge: tuple[ModuleType, Path]) -> None:
    cls: Any = edge[0].Edge
    for field in ("edge_id", "parent_id"):
        with pytest.raises(pydantic.ValidationError, match=field):
            cls.model_validate({"edge_id": "e-1", field: "a/b"})
    assert cls.model_validate({"edge_id": "e-1", "other_ids": ["a/b"]}).other_ids == ["a/b"]  # arrays: as today
    with pytest.raises(pydantic.ValidationError, match="kind"):
        cls(edge_id="e-1", kind="C")
    with pytest.raises(pydantic.ValidationError, match="extra"):
        cls.model_validate({"edge_id": "e-1", "class_": 1, "surplus": True})


def test_a_generated_record_round_trips_through_the_codec(edge: tuple[ModuleType, Path]) -> None:
    cls: Any = edge[0].Edge
    codec = AvroCodec(SchemaCatalog([EDGE]))
    value = cls(edge_id="e-1", class_=2, maybe_inner={"n": 4}, either="s", tags=["p", "q"])
    decoded = codec.decode(codec.encode("x.test.Edge", value.to_avro()))
    assert cls.model_validate(decoded.value) == value


def test_the_generated_topics_of_a_catalogue(edge: tuple[ModuleType, Path], tmp_path: Path) -> None:
    module = _load(tmp_path / "edge_topics.py", render_topics(edge[1]))
    assert module.EDGE_MADE == "x.edge.made.v2"
    (topic,) = module.TOPICS
    assert (topic.name, topic.record, topic.key_field, topic.partitions, topic.compacted) == (
        "x.edge.made.v2", "x.test.Edge", "edge_id", 2, False)
    assert topic.producers == ("edge-tool",) and topic.consumers == ("edge-reader",)
    assert module.PARTIES[0].module == "edge.tool" and module.__all__ == ["EDGE_MADE", "PARTIES", "TOPICS"]


def test_generated_code_is_ruff_clean(edge: tuple[ModuleType, Path], tmp_path: Path) -> None:
    ruff = Path(sys.executable).with_name("ruff")
    assert ruff.exists(), "ruff is in the workspace's dev group: `make venv` installs it"
    files = [tmp_path / "edge_records.py", tmp_path / "edge_topics.py"]
    files[0].write_text(render_records(edge[1]))
    files[1].write_text(render_topics(edge[1]))
    files += [REPO / GENERATED / name for name in ("records.py", "topics.py", "schemas.py")]
    proc = subprocess.run([str(ruff), "check", "--no-cache", "--config", str(REPO / "pyproject.toml"), *map(str, files)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_named_type_defined_twice_differently_is_refused(tmp_path: Path) -> None:
    repo = _edge_repo(tmp_path)
    other = {"type": "record", "name": "Other", "namespace": "x.test", "fields": [
        {"name": "inner", "type": {"type": "record", "name": "Inner", "fields": [{"name": "m", "type": "string"}]}},
    ]}
    (repo / "schemas" / "Other.avsc").write_text(json.dumps(other))
    with pytest.raises(CodegenError, match=r"schemas/Other.avsc: field inner: defines x\.test\.Inner differently from schemas/Edge\.avsc"):
        render_records(repo)
