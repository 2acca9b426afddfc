"""The delivery policy both adapters share: decode, call the handler, retry transient failures
with backoff, and dead-letter what cannot be processed with a reason an operator can act on.

The outcome of a message is decided here and only here, so the Kafka adapter and the in-process
adapter cannot drift apart."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pydantic
from tenacity import AsyncRetrying, RetryCallState, RetryError, retry_if_exception, wait_exponential

from reelfab import metrics
from reelfab.errors import MessageTooLargeError, PermanentError
from reelfab.logging import get_logger

from .message import Headers, RawMessage
from .outage import Outages, outage_of, outages_for

log = get_logger("reelfab.bus")

# DLQ headers (docs/architecture.md: error class, message, service, attempt count, first-seen time) plus the
# original position, so an operator can find the message and replay it.
H_ERROR_CLASS = "reelfab.error.class"
H_ERROR_MESSAGE = "reelfab.error.message"
H_SERVICE = "reelfab.service"
H_ATTEMPTS = "reelfab.attempts"
H_FIRST_SEEN = "reelfab.first-seen"
H_ORIGINAL_TOPIC = "reelfab.original.topic"
H_ORIGINAL_PARTITION = "reelfab.original.partition"
H_ORIGINAL_OFFSET = "reelfab.original.offset"
H_GROUP = "reelfab.group"
H_EVENT_ID = "reelfab.event-id"
H_PRODUCER = "reelfab.producer"
_MAX_HEADER_MESSAGE = 2000


def is_permanent(exc: BaseException) -> bool:
    return isinstance(exc, PermanentError | pydantic.ValidationError) and outage_of(exc) is None


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    outage_backoff_initial_s: float = 0.5
    outage_backoff_max_s: float = 10.0


@dataclass
class DeadLetter:
    raw: RawMessage
    error: BaseException
    attempts: int
    first_seen: datetime

    def headers(self, service: str, group: str) -> Headers:
        message = f"{type(self.error).__name__}: {self.error}"[:_MAX_HEADER_MESSAGE]
        return [
            *[(k, v) for k, v in self.raw.headers if not k.startswith("reelfab.error.")],
            (H_ERROR_CLASS, _qualname(self.error).encode()),
            (H_ERROR_MESSAGE, message.encode()),
            (H_SERVICE, service.encode()),
            (H_GROUP, group.encode()),
            (H_ATTEMPTS, str(self.attempts).encode()),
            (H_FIRST_SEEN, self.first_seen.isoformat().encode()),
            (H_ORIGINAL_TOPIC, self.raw.topic.encode()),
            (H_ORIGINAL_PARTITION, str(self.raw.partition).encode()),
            (H_ORIGINAL_OFFSET, str(self.raw.offset).encode()),
        ]


def _qualname(exc: BaseException) -> str:
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


DeadLetterSink = Callable[[DeadLetter], Awaitable[None]]


class DeliveryPolicy:
    def __init__(self, service: str, retry: RetryPolicy, max_message_bytes: int, outages: Outages | None = None) -> None:
        self.service = service
        self.retry = retry
        self.max_message_bytes = max_message_bytes
        self.outages = outages or outages_for(service)

    async def deliver(
        self,
        raw: RawMessage,
        attempt: Callable[[int], Awaitable[Any]],
        dead_letter: DeadLetterSink,
    ) -> str:
        """Run ``attempt(n)`` until it succeeds, a permanent error or the retry budget; returns the
        outcome. Only a failure to dead-letter escapes: then the message must not be committed.

        A dependency's outage (``outage_of``) is not the message's fault: it is waited out with capped
        backoff for as long as it lasts, and neither counts as an attempt nor leads to the DLQ."""
        first_seen = datetime.now(UTC)
        started = time.perf_counter()
        faults = 0  # failures that were (possibly) the message's fault: these spend the retry budget
        outage_waits = 0
        tries = 0
        rounds = 0
        outcome = "ok"

        def stop(state: RetryCallState) -> bool:
            nonlocal faults, outage_waits
            error = state.outcome.exception() if state.outcome else None
            dependency = outage_of(error) if error else None
            if dependency is not None:
                outage_waits += 1
                self.outages.waiting(dependency, error)  # type: ignore[arg-type]
                return False
            outage_waits = 0
            faults += 1
            return faults >= self.retry.max_attempts

        message_backoff = wait_exponential(multiplier=self.retry.backoff_initial_s, max=self.retry.backoff_max_s)

        def wait(state: RetryCallState) -> float:
            if outage_waits:
                return float(min(self.retry.outage_backoff_max_s,
                                 self.retry.outage_backoff_initial_s * 2 ** min(outage_waits - 1, 16)))
            return float(message_backoff(state))

        try:
            if len(raw.value) > self.max_message_bytes:
                tries = 1
                raise MessageTooLargeError(
                    f"message of {len(raw.value)} bytes exceeds the limit of {self.max_message_bytes} bytes"
                )
            retrying = AsyncRetrying(stop=stop, wait=wait, retry=retry_if_exception(lambda e: not is_permanent(e)),
                                     reraise=False)
            async for state in retrying:
                with state:
                    tries, rounds = faults + 1, rounds + 1
                    if rounds > 1:
                        log.warning("retrying", topic=raw.topic, offset=raw.offset, attempt=tries,
                                    waiting_for=sorted(self.outages.down) or None)
                    await attempt(tries)
            self.outages.answered()
            if rounds > 1:
                outcome = "retried"
        except RetryError as exhausted:
            error = exhausted.last_attempt.exception() or exhausted
            outcome = await self._dead_letter(raw, error, tries, first_seen, dead_letter)
        except Exception as error:  # permanent: straight to the DLQ
            outcome = await self._dead_letter(raw, error, tries, first_seen, dead_letter)
        metrics.EVENTS_CONSUMED.labels(self.service, raw.topic, outcome).inc()
        metrics.STAGE_SECONDS.labels(self.service, f"consume:{raw.topic}").observe(time.perf_counter() - started)
        return outcome

    async def _dead_letter(
        self, raw: RawMessage, error: BaseException, tries: int, first_seen: datetime, sink: DeadLetterSink
    ) -> str:
        log.error(
            "dead-lettered",
            topic=raw.topic,
            partition=raw.partition,
            offset=raw.offset,
            error=f"{type(error).__name__}: {error}",
            attempts=tries,
        )
        await sink(DeadLetter(raw, error, tries, first_seen))
        metrics.DLQ.labels(self.service, raw.topic, type(error).__name__).inc()
        return "dead_lettered"
