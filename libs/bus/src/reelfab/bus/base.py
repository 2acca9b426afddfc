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
from reelfab.logging import get_logger
from reelfab.settings import Settings

from .message import Event, Handler, Headers, Published, RawMessage
from .policy import (
    H_EVENT_ID,
    H_PRODUCER,
    DeadLetter,
    DeadLetterSink,
    DeliveryPolicy,
    LetterRecord,
    RetryPolicy,
    fit_dead_letter,
)

# per-record overhead of Kafka's record format (batch header 61 bytes; a record's attributes, deltas and
# varints ~21; ~10 more per header): what ``record_size`` adds to the bytes themselves
_BATCH_OVERHEAD = 61
_RECORD_OVERHEAD = 21
_HEADER_OVERHEAD = 10
log = get_logger("reelfab.bus")


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

    def dead_letter_sink(self, sub: Subscription, decoded: list[Any]) -> DeadLetterSink:
        """The policy's sink for ``sub``; ``decoded`` holds the record once the message decoded (the adapter
        appends it), so the letter's job.failed names the record's job, not whatever the key says."""

        async def sink(letter: DeadLetter) -> None:
            if letter.record is None and decoded:
                letter.record = decoded[-1]
            await self.dead_letter(sub, letter)

        return sink

    async def dead_letter(self, sub: Subscription, letter: DeadLetter) -> None:
        """Write ``letter`` to ``<topic>.dlq`` (cut to fit the producer's limit: ``fit_dead_letter``), then
        announce a job's failure. A size error from the transport despite the estimate cuts harder; any
        other failure raises, and the policy retries with backoff."""
        if not letter.written:
            # the producer's limit first; should the transport still refuse the size (a .dlq topic configured
            # lower than the broker), halve it down to 4 KiB, then send our headers alone
            limits = [self.max_record_bytes]
            while limits[-1] > 4096:
                limits.append(limits[-1] // 2)
            for attempt_limit in [*limits, 0]:
                record = fit_dead_letter(letter, self.service, sub.group, attempt_limit, self.record_size)
                try:
                    await self.publish_raw(letter.raw.topic + DLQ_SUFFIX, record.value, key=record.key,
                                           headers=record.headers)
                except Exception as exc:
                    if not self.is_too_large(exc) or attempt_limit == 0:
                        raise
                    continue
                self._log_cut(letter, record, attempt_limit)
                break
            letter.written = True
        await self._announce_job_failure(sub, letter)

    def _log_cut(self, letter: DeadLetter, record: LetterRecord, limit: int) -> None:
        if record.truncated:
            log.warning(
                "dead letter cut to fit; the whole message stays at its original position",
                topic=letter.raw.topic, partition=letter.raw.partition, offset=letter.raw.offset,
                truncated=",".join(record.truncated), limit=limit, value_bytes=len(letter.raw.value),
            )

    @property
    def max_record_bytes(self) -> int:
        """The largest record this bus's producer sends (Kafka: ``max_request_size``, the broker's limit)."""
        return self.settings.broker_max_message_bytes

    def record_size(self, key: bytes | None, value: bytes, headers: Headers) -> int:
        """The size of one record as the transport counts it against ``max_record_bytes``."""
        return (_BATCH_OVERHEAD + _RECORD_OVERHEAD + len(key or b"") + len(value)
                + sum(_HEADER_OVERHEAD + len(k.encode()) + len(v) for k, v in headers))

    def is_too_large(self, exc: BaseException) -> bool:
        """Whether a send failed because the record is over the transport's size limit."""
        return isinstance(exc, MessageTooLargeError)

    async def _announce_job_failure(self, sub: Subscription, letter: DeadLetter) -> None:
        """A dead-lettered job message also emits job.failed (docs/architecture.md), so the planner and
        analytics learn the job is gone; undecodable messages with a job key included.

        The job is the decoded record's ``job_id`` (checked by the identifier rule at decode) when the record
        decoded; only a message that did not decode falls back to its key, and a key that is not a valid
        identifier is never announced."""
        if sub.topic.key_field != "job_id" or sub.topic.name == JOB_FAILED:
            return
        if letter.record is not None:
            job_id = getattr(letter.record, "job_id", None)
            if not isinstance(job_id, str) or not job_id:
                return
        elif letter.raw.key:
            job_id = letter.raw.key.decode(errors="replace")
        else:
            return
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

    async def connect(self) -> None:
        """Be able to publish before any consumer starts: a service's outbox relay must be running by
        the time the first handler writes to the outbox, and starting the consumers can take seconds
        (each joins its group) while the first of them already handle messages. start() connects too."""
        await self._connect()

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

    async def _connect(self) -> None:
        return None  # a transport that publishes without connecting first

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
