"""What travels on the bus, independent of the adapter carrying it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar


class EventRecord(Protocol):
    """What the bus reads of a decoded event: the envelope's ``event_id``, which every event schema
    carries (schemas/*.avsc start with the header fields). Nested records have no envelope, so the
    records' common base (``reelfab.contracts`` ``Record``) cannot promise it."""

    @property
    def event_id(self) -> str: ...


R = TypeVar("R", bound=EventRecord)

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class RawMessage:
    """A message as the broker holds it: the original bytes and where they sit."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers = field(default_factory=list)
    timestamp_ms: int | None = None

    def header(self, name: str) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


@dataclass(frozen=True)
class Event(Generic[R]):
    """A decoded record handed to a handler, with its delivery metadata."""

    record: R
    topic: str
    key: str | None
    partition: int
    offset: int
    attempt: int
    headers: Headers = field(default_factory=list)

    @property
    def event_id(self) -> str:
        return str(self.record.event_id)


Handler = Callable[[Event[Any]], Awaitable[None]]


@dataclass(frozen=True)
class Published:
    """Where a published message landed."""

    topic: str
    partition: int
    offset: int
