"""The AsyncAPI document is generated from the services' wiring and covers the catalogue's topics."""

from __future__ import annotations

from typing import Any

import pytest

from reelfab.asyncapi import build_document
from reelfab.contracts.codec import default_catalog
from reelfab.contracts.topics import TOPICS
from reelfab.settings import Settings


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_document(Settings())


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


@pytest.mark.parametrize("topic", TOPICS, ids=lambda t: t.name)
def test_every_topic_appears_with_its_schema(document: dict[str, Any], topic: Any) -> None:
    channels = [c for c in document["channels"].values() if c["address"] == topic.name]
    assert channels, f"{topic.name} is not in the AsyncAPI document"
    avro_fields = {f["name"] for f in default_catalog().schema_json(topic.record)["fields"]}
    for channel in channels:
        for message_ref in channel["messages"].values():
            message = _resolve(document, message_ref["$ref"])
            payload = message["payload"]
            assert payload["$ref"] == f"#/components/schemas/{topic.short_record}"
            schema = _resolve(document, payload["$ref"])
            assert set(schema["properties"]) == avro_fields
            assert set(schema["required"]) <= avro_fields and topic.key_field in schema["required"]


def test_both_directions_are_documented(document: dict[str, Any]) -> None:
    actions = {(op["action"], _resolve(document, op["channel"]["$ref"])["address"]) for op in document["operations"].values()}
    # planner sends swap jobs, swapper receives them
    assert ("send", "reelfab.swap.requested.v1") in actions
    assert ("receive", "reelfab.swap.requested.v1") in actions
    assert all(("receive", t.name) in actions for t in TOPICS), "a topic nobody consumes"


def _senders(doc: dict[str, Any]) -> set[tuple[str, str]]:
    """(topic, producer) of every send operation (FastStream names them <topic>.publish.<producer>)."""
    found = set()
    for key, op in doc["operations"].items():
        if op["action"] != "send":
            continue
        address = _resolve(doc, op["channel"]["$ref"])["address"]
        found.add((address, key.removeprefix(f"{address}.publish.")))
    return found


def test_every_producer_in_the_catalogue_is_documented(document: dict[str, Any]) -> None:
    senders = _senders(document)
    missing = [f"{who} -> {t.name}" for t in TOPICS for who in t.producers if (t.name, who) not in senders]
    assert not missing, f"producers of the catalogue missing from the AsyncAPI document: {', '.join(missing)}"
    # the operator tools are there as producers of swap jobs, next to the planner
    assert {("reelfab.swap.requested.v1", who) for who in ("planner", "jobs-cli", "demo")} <= senders
    assert ("reelfab.trend.detected.v1", "trend-detector") in senders


def test_nobody_sends_what_the_catalogue_does_not_say(document: dict[str, Any]) -> None:
    by_name = {t.name: t for t in TOPICS}
    extra = [f"{who} -> {topic}" for topic, who in _senders(document) if who not in by_name[topic].producers]
    assert not extra, f"documented senders the catalogue does not list: {', '.join(extra)}"
