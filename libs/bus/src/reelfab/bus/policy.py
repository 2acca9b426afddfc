"""The delivery policy both adapters share: decode, call the handler, retry transient failures
with backoff, and dead-letter what cannot be processed with a reason an operator can act on.

The outcome of a message is decided here and only here, so the Kafka adapter and the in-process
adapter cannot drift apart."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pydantic
from prometheus_client import Counter
from tenacity import AsyncRetrying, RetryCallState, RetryError, retry_if_exception, wait_exponential

from reelfab import metrics
from reelfab.errors import DecodeError, MessageTooLargeError, PermanentError
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
# A dead letter that had to be cut to fit the producer's limit says what was cut and how to find the whole
# message: it stays on its topic at the original topic/partition/offset (until the topic's retention).
H_DLQ_TRUNCATED = "reelfab.dlq.truncated"  # what was cut, comma-separated: headers, value, key
H_DLQ_HEADERS_DROPPED = "reelfab.dlq.headers-dropped"  # "<dropped> of <count> original headers, <bytes> bytes"
H_DLQ_VALUE_LENGTH = "reelfab.dlq.original-value-length"
H_DLQ_VALUE_SHA256 = "reelfab.dlq.original-value-sha256"
H_DLQ_KEY_LENGTH = "reelfab.dlq.original-key-length"
H_DLQ_KEY_SHA256 = "reelfab.dlq.original-key-sha256"
# original headers whose values are not UTF-8 travel backslash-escaped (b"\xff" -> "\\xff"), named here
H_DLQ_ESCAPED_HEADERS = "reelfab.dlq.escaped-headers"
_MAX_HEADER_MESSAGE = 2000
# a cut dead letter keeps the original headers that are small (name and value) up to this many bytes in all
_KEPT_HEADER_BYTES = 1024
_KEPT_HEADERS_TOTAL = 16 * 1024
# consecutive failures to dead-letter before readiness reports the stalled partition
DLQ_FAILURES_BEFORE_UNREADY = 3

DLQ_FAILURES = Counter(
    "reelfab_dlq_failures_total",
    "Failed attempts to write a dead letter (the message is kept and retried with backoff; its partition waits).",
    ["service", "topic"],
)


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
    record: Any = None  # the decoded record when the message decoded (set by the adapter), else None
    written: bool = field(default=False, compare=False)  # on <topic>.dlq already: a retry only re-announces

    def headers(self, service: str, group: str) -> Headers:
        """The full dead letter's headers: the original ones, then the reason."""
        return [*self.original_headers(), *self.reason_headers(service, group)]

    def original_headers(self) -> Headers:
        """The original headers (values that are not UTF-8 backslash-escaped, and named), less any
        ``reelfab.error.*`` of an earlier dead letter: ours follow."""
        kept: Headers = []
        escaped: list[str] = []
        for k, v in self.raw.headers:
            if k.startswith("reelfab.error."):
                continue
            if not is_utf8(v):
                escaped.append(k)
                v = v.decode("utf-8", "backslashreplace").encode()
            kept.append((k, v))
        if escaped:
            kept.append((H_DLQ_ESCAPED_HEADERS, ",".join(escaped)[:_MAX_HEADER_MESSAGE].encode()))
        return kept

    def reason_headers(self, service: str, group: str) -> Headers:
        """Ours: why, who, how often, since when, and where the original sits. Always kept."""
        message = f"{type(self.error).__name__}: {self.error}"[:_MAX_HEADER_MESSAGE]
        return [
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


def is_utf8(value: bytes) -> bool:
    """Whether a header value reads as UTF-8 text (what FastStream and our headers assume)."""
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


SizeOf = Callable[[bytes | None, bytes, Headers], int]


@dataclass(frozen=True)
class LetterRecord:
    """What goes on ``<topic>.dlq``: the dead letter as one record, and what had to be cut from it."""

    key: bytes | None
    value: bytes
    headers: Headers
    truncated: tuple[str, ...] = ()


def fit_dead_letter(letter: DeadLetter, service: str, group: str, limit: int, size_of: SizeOf) -> LetterRecord:
    """The dead letter as one record of at most ``limit`` bytes (as ``size_of`` counts them).

    In full it is the original key, value and headers plus ours. A message may fit its topic and still
    not fit once our headers are added (or the producer's limit may be lower than the broker's): then
    our headers stay whole and, in this order until it fits, the original headers are cut to the small
    ones, the value is cut, the key is cut. Each cut is said in headers (``reelfab.dlq.truncated``,
    the value's and key's original length and sha256); the whole message stays addressable by the
    original topic/partition/offset. Only our own headers are never cut, so a dead letter always
    fits any limit a broker can reasonably have."""
    ours = letter.reason_headers(service, group)
    originals = letter.original_headers()
    key, value = letter.raw.key, letter.raw.value
    full = LetterRecord(key, value, [*originals, *ours])
    if size_of(full.key, full.value, full.headers) <= limit:
        return full

    truncated: list[str] = []
    notes: Headers = []
    kept: Headers = []
    total = 0
    for k, v in originals:
        n = len(k.encode()) + len(v)
        if n <= _KEPT_HEADER_BYTES and total + n <= _KEPT_HEADERS_TOTAL:
            kept.append((k, v))
            total += n
    if len(kept) < len(originals):
        truncated.append("headers")
        dropped = sum(len(k.encode()) + len(v) for k, v in originals) - total
        notes.append((H_DLQ_HEADERS_DROPPED,
                      f"{len(originals) - len(kept)} of {len(originals)} original headers, {dropped} bytes".encode()))

    def record() -> LetterRecord:
        return LetterRecord(key, value, [*kept, *ours, (H_DLQ_TRUNCATED, ",".join(truncated).encode()), *notes],
                            tuple(truncated))

    def size(r: LetterRecord) -> int:
        return size_of(r.key, r.value, r.headers)

    if truncated and size(record()) <= limit:
        return record()

    original_value = value
    truncated.append("value")
    notes += [(H_DLQ_VALUE_LENGTH, str(len(original_value)).encode()),
              (H_DLQ_VALUE_SHA256, hashlib.sha256(original_value).hexdigest().encode())]
    value = original_value[:max(0, len(original_value) - (size(record()) - limit))]
    while value and size(record()) > limit:  # a length's varint may have grown by a byte or two
        value = value[:max(0, len(value) - max(1, size(record()) - limit))]
    if size(record()) <= limit or not key:
        return record()

    original_key = key
    truncated.append("key")
    notes += [(H_DLQ_KEY_LENGTH, str(len(original_key)).encode()),
              (H_DLQ_KEY_SHA256, hashlib.sha256(original_key).hexdigest().encode())]
    key = original_key[:max(0, len(original_key) - (size(record()) - limit))]
    while key and size(record()) > limit:
        key = key[:max(0, len(key) - max(1, size(record()) - limit))]
    return record()


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
        outcome. A failure to dead-letter is retried here with the outage backoff until it succeeds (the
        message is never committed before); only cancellation escapes, and the message is then not settled.

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
            undecodable = [k for k, v in raw.headers if not is_utf8(v)]
            if undecodable:
                # Headers are text on this bus (every producer writes them through FastStream, which reads and
                # writes them as UTF-8): a binary one means a broken producer. Dead-lettered at once, like an
                # undecodable value, rather than processed with a header no one can read or forward faithfully.
                tries = 1
                raise DecodeError(f"header {undecodable[0][:200]!r} is not UTF-8 text"
                                  + (f" (nor are {len(undecodable) - 1} more)" if len(undecodable) > 1 else ""))
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
        letter = DeadLetter(raw, error, tries, first_seen)
        failures = 0
        while True:
            try:
                await sink(letter)
                break
            except Exception as failure:
                # Never a tight loop and never a silent stall: capped exponential backoff (the outage settings),
                # a metric per failure, and once it persists readiness names what the partition waits for.
                failures += 1
                DLQ_FAILURES.labels(self.service, raw.topic).inc()
                delay = min(self.retry.outage_backoff_max_s,
                            self.retry.outage_backoff_initial_s * 2 ** min(failures - 1, 16))
                log.error("dead letter not written; the message is kept and retried, its partition waits",
                          topic=raw.topic, partition=raw.partition, offset=raw.offset, failures=failures,
                          retry_in_s=round(delay, 3), error=f"{type(failure).__name__}: {failure}"[:500])
                if failures >= DLQ_FAILURES_BEFORE_UNREADY:
                    self.outages.waiting(outage_of(failure) or f"dead-letter topic of {raw.topic}", failure)
                await asyncio.sleep(delay)
        if failures:
            self.outages.answered()
        metrics.DLQ.labels(self.service, raw.topic, type(error).__name__).inc()
        return "dead_lettered"
