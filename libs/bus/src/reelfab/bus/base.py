"""The bus contract every adapter honours (docs/architecture.md "Delivery rules"):

- publish: a typed record to its topic, keyed by the field the topic catalogue names;
- subscribe: a handler per topic in a consumer group; an offset is committed only after the
  message's outcome is settled (handled, or dead-lettered);
- failures: transient errors retry with backoff, permanent ones and exhausted retries go to
  ``<topic>.dlq`` with the original bytes and headers naming the reason; the consumer goes on.

Adapters implement the transport (``_send``, ``_start``, ``_stop``, ``_subscribe``, ``scan``);
everything else is here."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reelfab import metrics
from reelfab.contracts.codec import AvroCodec
from reelfab.contracts.records import Record, model_for
from reelfab.contracts.topics import BY_NAME, DLQ_SUFFIX, JOB_FAILED, Topic
from reelfab.errors import MessageTooLargeError, PermanentError
from reelfab.identifiers import InvalidIdentifier, check_identifier
from reelfab.settings import Settings

from .message import Event, Handler, Headers, Published, RawMessage
from .policy import H_EVENT_ID, H_PRODUCER, DeadLetter, DeliveryPolicy, RetryPolicy


@dataclass
class Subscription:
    topic: Topic
    group: str
    handler: Handler
    from_beginning: bool = True


def new_event_id() -> str:
    return str(uuid.uuid4())


def now_utc() -> datetime:
    return datetime.now(UTC)


class Bus(ABC):
    def __init__(self, settings: Settings, service: str, codec: AvroCodec) -> None:
        self.settings = settings
        self.service = service
        self.codec = codec
        self.policy = DeliveryPolicy(
            service,
            RetryPolicy(settings.retry_max_attempts, settings.retry_backoff_initial_s, settings.retry_backoff_max_s,
                        settings.outage_backoff_initial_s, settings.outage_backoff_max_s),
            settings.max_message_bytes,
        )
        self.subscriptions: list[Subscription] = []
        self.publishes: list[Topic] = []
        self.started = False

    def declare_publisher(self, topic: str | Topic) -> Topic:
        """Say which topics this service writes (documentation: the AsyncAPI document)."""
        t = _topic(topic)
        self.publishes.append(t)
        return t

    # -- publishing -------------------------------------------------------------------------

    def encode(self, topic: str | Topic, value: Record | Mapping[str, Any]) -> tuple[Topic, str, bytes, str | None]:
        """Encode ``value`` for ``topic``: (topic, key, bytes, event id). Raises EncodeError naming
        the field when the value does not fit the topic's schema."""
        t = _topic(topic)
        data = value.to_avro() if isinstance(value, Record) else dict(value)
        if isinstance(value, Record) and type(value).__avro_name__ != t.record:
            raise PermanentError(f"{t.name} carries {t.record}, not {type(value).__avro_name__}")
        payload = self.codec.encode(t.record, data, topic=t.name)
        if len(payload) > self.settings.max_message_bytes:
            raise MessageTooLargeError(
                f"{t.record} for {t.name} is {len(payload)} bytes, over the limit of "
                f"{self.settings.max_message_bytes}; carry media by URI, not inline"
            )
        key = data.get(t.key_field)
        event_id = data.get("event_id")
        return t, str(key) if key is not None else "", payload, str(event_id) if event_id else None

    async def publish(self, topic: str | Topic, value: Record | Mapping[str, Any], headers: Headers | None = None) -> Published:
        t, key, payload, event_id = self.encode(topic, value)
        hdrs = [(H_PRODUCER, self.service.encode())]
        if event_id:
            hdrs.append((H_EVENT_ID, event_id.encode()))
        published = await self.publish_raw(t.name, payload, key=key.encode(), headers=hdrs + list(headers or []))
        return published

    async def publish_raw(self, topic: str, value: bytes, *, key: bytes | None, headers: Headers) -> Published:
        published = await self._send(topic, value, key, headers)
        metrics.EVENTS_PUBLISHED.labels(self.service, topic).inc()
        return published

    # -- consuming --------------------------------------------------------------------------

    def subscribe(self, topic: str | Topic, handler: Handler, *, group: str | None = None, from_beginning: bool = True) -> Subscription:
        sub = Subscription(_topic(topic), group or self.service, handler, from_beginning)
        self.subscriptions.append(sub)
        if self.started:
            raise RuntimeError("subscribe before start(); start a new bus for a late consumer")
        return sub

    def decode(self, sub: Subscription, raw: RawMessage, attempt: int) -> Event[Any]:
        decoded = self.codec.decode(raw.value, expected=sub.topic.record, topic=raw.topic)
        record = model_for(sub.topic.record).model_validate(decoded.value)
        return Event(
            record=record,
            topic=raw.topic,
            key=raw.key.decode() if raw.key is not None else None,
            partition=raw.partition,
            offset=raw.offset,
            attempt=attempt,
            headers=raw.headers,
        )

    async def dead_letter(self, sub: Subscription, letter: DeadLetter) -> None:
        await self.publish_raw(
            letter.raw.topic + DLQ_SUFFIX, letter.raw.value, key=letter.raw.key,
            headers=letter.headers(self.service, sub.group),
        )
        await self._announce_job_failure(sub, letter)

    async def _announce_job_failure(self, sub: Subscription, letter: DeadLetter) -> None:
        """A dead-lettered job message also emits job.failed (docs/architecture.md), so the planner and
        analytics learn the job is gone; undecodable messages with a job key included."""
        if sub.topic.key_field != "job_id" or sub.topic.name == JOB_FAILED or not letter.raw.key:
            return
        job_id = letter.raw.key.decode(errors="replace")
        try:
            check_identifier(job_id, "job_id")
        except InvalidIdentifier:  # a hostile key stays in the DLQ; it is never re-announced as an id
            return
        await self.publish(
            JOB_FAILED,
            {
                "event_id": new_event_id(),
                "occurred_at": now_utc(),
                "producer": self.service,
                "job_id": job_id,
                "stage": self.service,
                "reason_code": f"dead_lettered.{type(letter.error).__name__}",
                "reason": f"{type(letter.error).__name__}: {letter.error}"[:2000],
                "retryable": False,
                "attempts": max(letter.attempts, 1),
            },
        )

    async def reachable(self) -> None:
        """Raise when the transport cannot be reached (a readiness probe); the in-process bus always is."""
        return None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self._start()
        self.started = True

    async def stop(self) -> None:
        await self._stop()
        self.started = False

    async def __aenter__(self) -> Bus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @abstractmethod
    async def _send(self, topic: str, value: bytes, key: bytes | None, headers: Headers) -> Published: ...

    @abstractmethod
    async def _start(self) -> None: ...

    @abstractmethod
    async def _stop(self) -> None: ...

    @abstractmethod
    async def scan(self, topic: str, since: datetime) -> list[RawMessage]:
        """Every message on ``topic`` written at or after ``since`` (outbox crash recovery)."""


def _topic(name: str | Topic) -> Topic:
    if isinstance(name, Topic):
        return name
    if name in BY_NAME:
        return BY_NAME[name]
    raise PermanentError(f"unknown topic {name!r}; topics are listed in reelfab.contracts.topics")
