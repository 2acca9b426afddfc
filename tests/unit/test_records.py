"""Typed records generated from the Avro schemas."""

from __future__ import annotations

from datetime import UTC, datetime

import pydantic
import pytest

from reelfab.contracts.codec import default_codec
from reelfab.contracts.records import model_for, model_from_schema
from reelfab.contracts.topics import TOPICS
from tests.contract.records import swap_requested


@pytest.mark.parametrize("topic", TOPICS, ids=lambda t: t.short_record)
def test_every_topic_record_has_a_model(topic) -> None:  # type: ignore[no-untyped-def]
    model = model_for(topic.record)
    assert model.__avro_name__ == topic.record
    assert topic.key_field in model.model_fields


def test_model_round_trips_through_the_codec() -> None:
    model = model_for("reelfab.events.SwapRequested")
    record = model(**swap_requested("job-1"))
    assert record.platform == "tiktok" and record.priority == 0 and record.music_uri is None  # Avro defaults
    codec = default_codec()
    decoded = codec.decode(codec.encode(model.__avro_name__, record.to_avro()))
    assert model.model_validate(decoded.value) == record


def test_models_reject_what_the_schema_rejects() -> None:
    model = model_for("reelfab.events.SwapRequested")
    with pytest.raises(pydantic.ValidationError, match="job_id"):
        model(**{k: v for k, v in swap_requested().items() if k != "job_id"})
    with pytest.raises(pydantic.ValidationError, match="unexpected_field|extra"):
        model(**swap_requested(), unexpected_field=1)


def test_enums_nested_records_and_timestamps() -> None:
    schema = {
        "type": "record", "name": "T", "namespace": "x",
        "fields": [
            {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"], "default": "A"}},
            {"name": "when", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "inner", "type": {"type": "record", "name": "Inner", "fields": [{"name": "n", "type": "int"}]}},
            {"name": "again", "type": ["null", "Inner"], "default": None},
            {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
        ],
    }
    model = model_from_schema(schema)
    value = model(kind="B", when=datetime(2026, 1, 1, tzinfo=UTC), inner={"n": 1})
    assert value.tags == [] and value.again is None and value.inner.n == 1
    with pytest.raises(pydantic.ValidationError):
        model(kind="C", when=datetime(2026, 1, 1, tzinfo=UTC), inner={"n": 1})


def test_model_for_is_the_generated_class() -> None:
    from reelfab.contracts.generated import records as generated
    from reelfab.contracts.records import SwapRequested

    assert model_for("reelfab.events.SwapRequested") is generated.SwapRequested is SwapRequested
    assert model_for("SwapRequested") is SwapRequested


def test_the_bus_hands_handlers_the_generated_class() -> None:
    from reelfab.bus.base import Subscription
    from reelfab.bus.memory import InMemoryBus
    from reelfab.bus.message import RawMessage
    from reelfab.contracts.generated.records import SwapRequested
    from reelfab.contracts.topics import BY_NAME
    from reelfab.settings import Settings

    async def handler(event: object) -> None:
        return None

    bus = InMemoryBus(Settings(), "swapper-gpu", default_codec())
    topic = BY_NAME["reelfab.swap.requested.v1"]
    _, key, payload, _ = bus.encode(topic, SwapRequested(**swap_requested("job-7")))
    event = bus.decode(Subscription(topic, "swapper-gpu", handler), RawMessage(topic.name, 0, 0, key.encode(), payload), 1)
    assert type(event.record) is SwapRequested and event.record.job_id == "job-7"
