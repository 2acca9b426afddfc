"""The topic catalogue (schemas/topics.toml, generated into reelfab.contracts.generated.topics) says what
the services really do: every installed service's SPEC.produces and SPEC.consumes are exactly what the
catalogue lists for it, every producer and consumer it names is a service or a declared party, and
every topic's record has a schema."""

from __future__ import annotations

import importlib
import importlib.util
import tomllib
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from reelfab.contracts.codec import default_catalog
from reelfab.contracts.records import model_for
from reelfab.contracts.topics import (
    BY_NAME,
    PARTIES,
    PARTY_BY_NAME,
    TOPICS,
    consumed_by,
    produced_by,
)

REPO = Path(__file__).resolve().parents[2]
SERVICE_GROUP = "reelfab.services"


def _services() -> dict[str, Any]:
    """Service name -> its wiring module's SPEC, for every installed service distribution."""
    found = {}
    for ep in sorted(entry_points(group=SERVICE_GROUP), key=lambda e: e.name):
        found[ep.name] = importlib.import_module(ep.value).SPEC
    return found


SERVICES = _services()


def test_services_are_installed() -> None:
    assert {"consent-registry", "planner", "swapper-gpu", "post-producer", "publisher", "analytics"} <= set(SERVICES)


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_a_service_produces_what_the_catalogue_says(service: str) -> None:
    spec = SERVICES[service]
    assert spec.name == service, f"entry point {service} loads a SPEC named {spec.name}"
    _same(service, "produces", spec.produces, {t.name for t in produced_by(service)}, "producers")


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_a_service_consumes_what_the_catalogue_says(service: str) -> None:
    spec = SERVICES[service]
    _same(service, "consumes", spec.consumes, {t.name for t in consumed_by(service)}, "consumers")


def _same(service: str, verb: str, declared: tuple[str, ...], listed: set[str], column: str) -> None:
    problems = []
    for name in sorted(set(declared) - listed):
        if name not in BY_NAME:
            problems.append(f"{service}: SPEC.{verb} names {name}, which is not a topic of schemas/topics.toml")
        else:
            problems.append(f"{service}: SPEC.{verb} has {name}, but schemas/topics.toml does not list "
                            f"{service} among its {column}")
    for name in sorted(listed - set(declared)):
        problems.append(f"{service}: schemas/topics.toml lists {service} among the {column} of {name}, "
                        f"but its SPEC.{verb} does not have it")
    assert len(set(declared)) == len(declared), f"{service}: SPEC.{verb} names a topic twice: {declared}"
    assert not problems, "\n".join(problems)


def test_every_producer_and_consumer_is_a_service_or_a_party() -> None:
    problems = [
        f"{t.name}: {who!r} ({column[:-1]}) is neither an installed service ({', '.join(SERVICES)}) nor a "
        f"party of schemas/topics.toml ({', '.join(PARTY_BY_NAME)})"
        for t in TOPICS
        for column, names in (("producers", t.producers), ("consumers", t.consumers))
        for who in names
        if who not in SERVICES and who not in PARTY_BY_NAME
    ]
    assert not problems, "\n".join(problems)
    assert not set(SERVICES) & set(PARTY_BY_NAME), "a party has the name of a service"


def test_every_party_writes_or_reads_a_topic_and_its_module_exists() -> None:
    for party in PARTIES:
        assert produced_by(party.name) or consumed_by(party.name), f"party {party.name} is in no topic"
        assert party.kind in ("operator tool", "external")
        if party.kind == "operator tool":
            assert party.module and importlib.util.find_spec(party.module) is not None, (
                f"party {party.name}: module {party.module!r} cannot be found"
            )


def test_the_operator_tools_that_send_swap_jobs_are_producers() -> None:
    producers = BY_NAME["reelfab.swap.requested.v1"].producers
    assert {"planner", "jobs-cli", "demo"} <= set(producers)
    assert "trend-detector" in BY_NAME["reelfab.trend.detected.v1"].producers


def test_every_topic_has_a_producer_and_a_consumer() -> None:
    for t in TOPICS:
        assert t.producers, f"{t.name}: nobody produces it"
        assert t.consumers, f"{t.name}: nobody consumes it"


@pytest.mark.parametrize("topic", TOPICS, ids=lambda t: t.name)
def test_every_topic_record_has_a_schema_and_a_class(topic: Any) -> None:
    assert (REPO / "schemas" / f"{topic.short_record}.avsc").is_file(), f"{topic.name}: no schemas/{topic.short_record}.avsc"
    entry = default_catalog().current(topic.record)
    assert entry.name == topic.record
    key = next((f for f in entry.raw["fields"] if f["name"] == topic.key_field), None)
    assert key is not None and key["type"] == "string", f"{topic.name}: key {topic.key_field} is not a string field"
    assert model_for(topic.record).__avro_name__ == topic.record


def test_the_generated_catalogue_is_the_toml_file() -> None:
    data = tomllib.loads((REPO / "schemas" / "topics.toml").read_text(encoding="utf-8"))
    assert [t.name for t in TOPICS] == [t["name"] for t in data["topics"]]
    for t, raw in zip(TOPICS, data["topics"], strict=True):
        assert (t.short_record, t.key_field, t.partitions, t.compacted, t.description) == (
            raw["record"], raw["key"], raw["partitions"], raw.get("compacted", False), raw["description"]
        )
        assert (list(t.producers), list(t.consumers)) == (raw["producers"], raw["consumers"])
    assert [p.name for p in PARTIES] == list(data["parties"])


def test_the_topic_constants_name_the_topics() -> None:
    from reelfab.contracts import topics

    assert topics.CONSENT_CHANGED == "reelfab.consent.changed.v1"
    for t in TOPICS:
        constant = t.name.split(".", 1)[1].rsplit(".", 1)[0].replace(".", "_").upper()
        assert getattr(topics, constant) == t.name
