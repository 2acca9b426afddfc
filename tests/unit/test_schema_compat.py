"""Backward-compatibility and house-rule checks of the Avro contracts."""

from __future__ import annotations

import copy
import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from reelfab.contracts import compat as schema_compat
from reelfab.contracts.compat import check_backward, check_conventions, check_repository, check_topics, main
from reelfab.contracts.topics import Topic

REPO = Path(__file__).resolve().parents[2]
NS = "reelfab.events"
TS = {"type": "long", "logicalType": "timestamp-millis"}


def field(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, "doc": f"The {name}.", **extra}


def record(*fields: dict[str, Any], name: str = "Thing", **extra: Any) -> dict[str, Any]:
    header = [
        field("event_id", "string"),
        field("occurred_at", TS),
        field("producer", "string"),
        field("trace_id", ["null", "string"], default=None),
    ]
    return {
        "type": "record",
        "name": name,
        "namespace": NS,
        "doc": "A thing happened.",
        "fields": header + list(fields),
        **extra,
    }


BASE = record(field("thing_id", "string"), field("count", "int"))


def enum_record(symbols: list[str], **extra: Any) -> dict[str, Any]:
    return record(
        field("kind", {"type": "enum", "name": "Kind", "doc": "Kinds.", "symbols": symbols, **extra})
    )


# -- check_backward ---------------------------------------------------------------------------


def test_a_new_required_field_without_default_is_caught() -> None:
    problems = check_backward(
        BASE, record(field("thing_id", "string"), field("count", "int"), field("colour", "string"))
    )
    assert (
        problems[0]
        == "field 'colour' was added without a default: data written with the old schema has no value for it"
    )
    assert any(p.startswith("empirical check: sample 0") and "colour" in p for p in problems)


def test_a_type_change_that_is_no_promotion_is_caught() -> None:
    problems = check_backward(BASE, record(field("thing_id", "string"), field("count", "string")))
    assert problems[0] == "count: type changed from int to string, which Avro cannot promote"
    assert any(p.startswith("empirical check:") for p in problems)


def test_a_removed_enum_symbol_is_caught_unless_there_is_a_default() -> None:
    problems = check_backward(enum_record(["A", "B", "C"]), enum_record(["A", "B"]))
    assert problems[0] == "kind: enum Kind lost symbol(s) C and has no default to read them as"
    assert (
        check_backward(enum_record(["A", "B", "C"]), enum_record(["A", "B", "UNKNOWN"], default="UNKNOWN"))
        == []
    )


def test_compatible_changes_pass() -> None:
    optional = record(
        field("thing_id", "string"), field("count", "int"), field("note", ["null", "string"], default=None)
    )
    assert check_backward(BASE, optional) == []
    assert (
        check_backward(BASE, record(field("thing_id", "string"), field("count", "long"))) == []
    )  # int -> long
    assert (
        check_backward(BASE, record(field("thing_id", "string"), field("count", "double"))) == []
    )  # int -> double
    assert check_backward(BASE, record(field("thing_id", "string"))) == []  # a removed field is ignored
    with_list = record(
        field("thing_id", "string"),
        field("count", "int"),
        field("tags", {"type": "array", "items": "string"}, default=[]),
    )
    assert check_backward(BASE, with_list) == []
    assert check_backward(enum_record(["A"]), enum_record(["A", "B"])) == []  # symbols may be added


def test_renames_need_aliases() -> None:
    renamed = copy.deepcopy(BASE)
    renamed["name"] = "Gadget"
    assert check_backward(BASE, renamed)[0] == (
        "record: record renamed from reelfab.events.Thing to reelfab.events.Gadget without an alias for the old name"
    )
    renamed["aliases"] = ["Thing"]
    assert check_backward(BASE, renamed) == []
    field_renamed = record(field("thing_id", "string"), field("total", "int", aliases=["count"]))
    assert check_backward(BASE, field_renamed) == []


def test_optional_to_required_and_nested_changes_are_caught() -> None:
    old = record(field("count", ["null", "int"], default=None))
    assert (
        check_backward(old, record(field("count", "int")))[0]
        == "count: writer's union branch null cannot be read as int"
    )
    inner: dict[str, Any] = {
        "type": "record",
        "name": "Inner",
        "doc": "Inner.",
        "fields": [field("x", "int")],
    }
    inner_new = {**inner, "fields": [*inner["fields"], field("y", "string")]}
    problems = check_backward(
        record(field("items", {"type": "array", "items": inner})),
        record(field("items", {"type": "array", "items": inner_new})),
    )
    assert (
        problems[0]
        == "field 'items[].y' was added without a default: data written with the old schema has no value for it"
    )


def test_the_empirical_check_works_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        schema_compat._Resolver, "resolve", lambda self, w, r, path: None
    )  # structural rules off
    problems = check_backward(
        BASE, record(field("thing_id", "string"), field("count", "int"), field("colour", "string"))
    )
    assert len(problems) == 1
    assert problems[0].startswith(
        "empirical check: sample 0 written with the old schema cannot be read with the new one:"
    )
    assert "colour" in problems[0]


def test_check_backward_is_deterministic_and_leaves_random_alone() -> None:
    random.seed(1)
    state = random.getstate()
    new = record(field("thing_id", "string"), field("count", "string"))
    assert check_backward(BASE, new) == check_backward(BASE, new)
    assert random.getstate() == state


def test_unparseable_schemas_are_reported() -> None:
    broken = record(field("count", "integer"))
    assert check_backward(BASE, broken)[0].startswith("the new schema does not parse:")
    assert check_backward(broken, BASE)[0].startswith("the old schema does not parse:")


# -- house rules ------------------------------------------------------------------------------


def test_conventions_want_header_docs_and_enum_defaults() -> None:
    assert check_conventions(BASE, "schemas/Thing.avsc") == []
    no_header = copy.deepcopy(BASE)
    no_header["fields"] = no_header["fields"][1:]
    assert (
        "schemas/Thing.avsc: field 1 must be the header field 'event_id'"
        in check_conventions(no_header, "schemas/Thing.avsc")[0]
    )

    undocumented = record(
        field(
            "count",
            {"type": "record", "name": "Inner", "doc": "Inner.", "fields": [{"name": "x", "type": "int"}]},
        )
    )
    assert check_conventions(undocumented, "S") == ["S: field 'Inner.x' has no doc"]
    no_doc = copy.deepcopy(BASE)
    del no_doc["doc"]
    assert check_conventions(no_doc, "S") == ["S: record Thing has no doc"]
    assert check_conventions(enum_record(["A"]), "S") == [
        "S: enum Kind has no default symbol (needed to add symbols later)"
    ]


def test_topics_need_a_schema_with_a_string_key() -> None:
    topic = Topic("reelfab.thing.happened.v1", f"{NS}.Thing", "thing_id", 1)
    assert check_topics({"Thing": BASE}, [topic]) == []
    assert check_topics({}, [topic]) == [
        "schemas/Thing.avsc: missing, but topic reelfab.thing.happened.v1 carries reelfab.events.Thing"
    ]
    nullable_key = record(field("thing_id", ["null", "string"], default=None))
    assert check_topics({"Thing": nullable_key}, [topic]) == [
        'schemas/Thing.avsc: key field \'thing_id\' of topic reelfab.thing.happened.v1 must be a string, not ["null", "string"]'
    ]
    assert check_topics({"Thing": record()}, [topic]) == [
        "schemas/Thing.avsc: no top-level field 'thing_id', the key of topic reelfab.thing.happened.v1"
    ]


# -- the repository ---------------------------------------------------------------------------


def test_this_repository_has_no_schema_problems() -> None:
    notes: list[str] = []
    assert check_repository(REPO, notes=notes) == []
    if (REPO / ".git").exists():
        assert notes == []  # git history was read


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        [
            "git",
            "-C",
            str(repo),
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.org",
            "-c",
            "commit.gpgsign=false",
            *args,
        ],
        check=True,
        capture_output=True,
    )


def _write(repo: Path, schema: dict[str, Any], rel: str = "schemas/Thing.avsc") -> None:
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema, indent=2))


def test_every_committed_version_is_checked(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    _write(tmp_path, BASE)
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "v1")
    v2 = record(
        field("thing_id", "string"), field("count", "long"), field("note", ["null", "string"], default=None)
    )
    _write(tmp_path, v2)
    _git(tmp_path, "commit", "-q", "-am", "v2")
    first = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-list", "--max-parents=0", "HEAD"], capture_output=True, text=True
    ).stdout.strip()

    assert check_repository(tmp_path, topics=()) == []

    # working tree: count becomes a string -- incompatible with both committed versions
    _write(
        tmp_path,
        record(
            field("thing_id", "string"),
            field("count", "string"),
            field("note", ["null", "string"], default=None),
        ),
    )
    problems = [p for p in check_repository(tmp_path, topics=()) if "empirical" not in p]
    assert problems == [
        f"schemas/Thing.avsc cannot read data written with its version at commit {sha[:10]}: count: type changed from {old} to string, which Avro cannot promote"
        for sha, old in [
            (
                subprocess.run(
                    ["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True
                ).stdout.strip(),
                "long",
            ),
            (first, "int"),
        ]
    ]
    assert main(["--repo", str(tmp_path)]) == 1  # topics of the real catalogue are missing here too


def test_history_files_are_checked(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    _write(tmp_path, BASE)
    _write(tmp_path, enum_record(["A"], default="A"), "schemas/history/Thing.1.avsc")
    problems = check_repository(tmp_path, topics=())
    assert problems[0].startswith(
        "schemas/Thing.avsc cannot read data written with schemas/history/Thing.1.avsc: field 'thing_id' was added without a default"
    )
    _write(tmp_path, BASE, "schemas/history/Thing-old.avsc")
    assert (
        "schemas/history/Thing-old.avsc: history files are named <RecordName>.<n>.avsc"
        in check_repository(tmp_path, topics=())
    )


def test_without_git_history_is_a_note_unless_required(tmp_path: Path) -> None:
    _write(tmp_path, BASE)
    notes: list[str] = []
    assert check_repository(tmp_path, topics=(), notes=notes) == []
    assert len(notes) == 1 and "is not a git repository" in notes[0]
    problems = check_repository(tmp_path, topics=(), require_git=True)
    assert len(problems) == 1 and "is not a git repository" in problems[0]


def test_broken_and_misnamed_files_are_reported(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "Broken.avsc").write_text("{not json")
    _write(tmp_path, BASE, "schemas/Other.avsc")
    problems = check_repository(tmp_path, topics=())
    assert problems[0].startswith("schemas/Broken.avsc: not a valid Avro schema: JSONDecodeError")
    assert problems[1] == "schemas/Other.avsc: holds record Thing; the file must be named after its record"


def test_main_prints_each_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--repo", str(REPO)]) == 0
    assert "schemas OK: 11 checked" in capsys.readouterr().out
    _write(tmp_path, enum_record(["A"]))
    assert main(["--repo", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert "schemas/Thing.avsc: enum Kind has no default symbol" in out.out
    assert (
        "schemas/SwapRequested.avsc: missing, but topic reelfab.swap.requested.v1 carries reelfab.events.SwapRequested"
        in out.out
    )
    assert "note:" in out.err and "schema problem(s)" in out.err
