"""The shapes of the topic catalogue's entries (schemas/topics.toml): a topic, and a party that writes
or reads topics without being a service. The entries themselves are generated into
reelfab.contracts.generated.topics; reelfab.contracts.topics is where the rest of the code finds them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SCHEMA_NAMESPACE = "reelfab.events"  # the namespace of every record; short record names are taken as in it
DLQ_SUFFIX = ".dlq"  # <topic>.dlq holds what a consumer of <topic> gave up on


@dataclass(frozen=True)
class Topic:
    name: str
    record: str  # Avro full name of the value schema
    key_field: str  # field of the record whose value is the Kafka key
    partitions: int
    compacted: bool = False
    description: str = ""
    producers: tuple[str, ...] = ()  # services (ServiceSpec.name) and parties that write the topic
    consumers: tuple[str, ...] = ()  # services and parties that subscribe to it

    @property
    def dlq(self) -> str:
        return self.name + DLQ_SUFFIX

    @property
    def short_record(self) -> str:
        return self.record.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class Party:
    """A producer or consumer of topics that is not a service: an operator tool of this repository
    (``module`` names where it lives) or a system outside it."""

    name: str
    kind: Literal["operator tool", "external"]
    description: str = ""
    module: str = ""
