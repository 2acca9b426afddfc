"""The topic catalogue (schemas/topics.toml, generated into reelfab.contracts.generated.topics): every
topic, the Avro record it carries, how it is keyed, how many partitions it gets, whether it is compacted,
and who produces and consumes it. One source of truth for the bus, the topic creator, the AsyncAPI
document and the tests. The catalogue is ``schemas/topics.toml``; ``reelfab codegen`` turns it into
reelfab.contracts.generated.topics, whose constants (``CONSENT_CHANGED``, ...) and entries this module
re-exports with the look-ups the rest of the code uses."""

from __future__ import annotations

from reelfab.contracts.generated import topics as _generated
from reelfab.contracts.generated.topics import *  # noqa: F403  (a constant per topic name)
from reelfab.contracts.generated.topics import PARTIES, TOPICS
from reelfab.contracts.topic_types import DLQ_SUFFIX, SCHEMA_NAMESPACE, Party, Topic

__all__ = [
    "BY_NAME",
    "DLQ_SUFFIX",
    "PARTIES",
    "PARTY_BY_NAME",
    "SCHEMA_NAMESPACE",
    "TOPICS",
    "Party",
    "Topic",
    "all_topic_names",
    "consumed_by",
    "produced_by",
    "topic",
]
__all__ += _generated.__all__

BY_NAME: dict[str, Topic] = {t.name: t for t in TOPICS}
PARTY_BY_NAME: dict[str, Party] = {p.name: p for p in PARTIES}


def topic(name: str) -> Topic:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown topic {name!r}; known: {', '.join(BY_NAME)}") from None


def all_topic_names(with_dlq: bool = True) -> list[str]:
    names = [t.name for t in TOPICS]
    if with_dlq:
        names += [t.dlq for t in TOPICS]
    return names


def produced_by(name: str) -> tuple[Topic, ...]:
    """The topics a service (its ServiceSpec.name) or a party writes, in catalogue order."""
    return tuple(t for t in TOPICS if name in t.producers)


def consumed_by(name: str) -> tuple[Topic, ...]:
    """The topics a service or a party subscribes to, in catalogue order."""
    return tuple(t for t in TOPICS if name in t.consumers)
