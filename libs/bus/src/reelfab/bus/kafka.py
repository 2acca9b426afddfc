"""The Kafka adapter, on FastStream with aiokafka.

FastStream owns the consumers, the producer (idempotent, acks=all) and the AsyncAPI document;
Reelfab's delivery policy runs as a FastStream middleware around each message, so retries and
dead-lettering happen before anything is committed.

Offsets: a message's offset becomes committable only once its outcome is settled (handled or
dead-lettered); the policy retries a failure to dead-letter with backoff, and should anything still
escape, the partition seeks back so the message is fetched again.

FastStream parses a message (its headers as UTF-8 text) before any middleware's scope: a header it
cannot read would fail there, be logged and skipped. The subscribers therefore parse with
``_tolerant_parser`` (FastStream sees readable copies; the policy sees the original bytes and
dead-letters a non-UTF-8 header), and a message that fails anywhere before the policy's scope is
still given to the policy (``after_processed``): nothing is skipped unsettled. Settled offsets are
committed in the background every ``consumer_commit_interval_ms`` and before partitions are
revoked or the bus stops: a synchronous commit per message costs a broker round trip (measured
~6 ms here, capping a consumer at ~140 msg/s). A crash can redeliver at most that interval's
settled messages, which the idempotent handlers absorb."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import inspect
import logging
import weakref
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import OffsetAndMetadata
from faststream import BaseMiddleware
from faststream.kafka import KafkaBroker
from faststream.middlewares import AckPolicy

from reelfab.contracts.codec import AvroCodec
from reelfab.contracts.records import model_for
from reelfab.errors import DecodeError, DependencyUnavailable
from reelfab.logging import get_logger
from reelfab.settings import Settings

from .base import Bus, Subscription
from .lag import COLLECTOR as LAG
from .message import Event, Headers, Published, RawMessage
from .policy import is_utf8

_ATTEMPT: contextvars.ContextVar[int] = contextvars.ContextVar("reelfab_attempt", default=1)
# the message being handled, set by the policy middleware: cheaper than FastStream's Context()
# injection, which fast_depends resolves through a thread pool on every message
_MESSAGE: contextvars.ContextVar[Any] = contextvars.ContextVar("reelfab_message")
# the records the current delivery decoded (set by the policy middleware, appended to by the decoder)
_DECODED: contextvars.ContextVar[list[Any]] = contextvars.ContextVar("reelfab_decoded")
# what FastStream's publish adds to every record: content-type (empty for bytes) and a uuid correlation_id
_FASTSTREAM_HEADERS = [("content-type", b""), ("correlation_id", b"0" * 36)]
log = get_logger("reelfab.bus.kafka")


class OffsetCommitter:
    """Commits settled offsets per consumer, in the background and on demand."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.pending: dict[AIOKafkaConsumer, dict[TopicPartition, int]] = {}
        self.task: asyncio.Task[None] | None = None
        self.closing = False

    def settled(self, consumer: AIOKafkaConsumer, topic: str, partition: int, offset: int) -> None:
        self.pending.setdefault(consumer, {})[TopicPartition(topic, partition)] = offset + 1

    async def flush(self) -> None:
        pending, self.pending = self.pending, {}
        for consumer, offsets in pending.items():
            try:
                await consumer.commit({tp: OffsetAndMetadata(off, "") for tp, off in offsets.items()})
            except Exception as exc:  # lost the partitions meanwhile: the new owner redelivers
                log.warning("offset commit failed; those messages will be redelivered", error=str(exc))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()

    def start(self) -> None:
        self.closing = False
        self.task = asyncio.create_task(self._loop(), name="kafka-offset-committer")

    async def stop(self) -> None:
        self.closing = True
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.flush()


async def _start_subscribers_together(broker: KafkaBroker) -> None:
    """Start every subscriber at once. FastStream starts them one after another and each start waits
    until its group has assigned it partitions, so the group rebalanced once per subscription, each
    rebalance pausing the consumers already in: the planner's eight took 2.5-43 s to start on the test
    stack (bench/service_start.py). Joining together, they land in one or two rebalances (under a second).
    Every start is awaited before the first failure is raised, so no consumer is left half-started
    behind the caller's stop()."""
    results = await asyncio.gather(*(sub.start() for sub in broker.subscribers), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise failures[0]


class _FlushOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, committer: OffsetCommitter) -> None:
        self.committer = committer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.committer.flush()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


async def _tolerant_parser(record: Any, original: Callable[[Any], Awaitable[Any]]) -> Any:
    """FastStream's Kafka parser reads every header value as UTF-8 (``.decode()``), and fails on a binary
    or null one before any middleware runs, so the message was logged and skipped. It gets a copy whose
    values are readable instead; the message keeps the original record (``raw_message``), from which the
    policy reads the bytes (and dead-letters a header that is not UTF-8)."""
    headers = record.headers or ()
    if all(isinstance(v, bytes) and is_utf8(v) for _, v in headers):
        return await original(record)
    readable = copy.copy(record)
    readable.headers = tuple((k, (v or b"").decode("utf-8", "replace").encode()) for k, v in headers)
    message = await original(readable)
    message.raw_message = record
    return message


def _wire_headers(headers: Headers) -> dict[str, str]:
    """Headers as FastStream publishes them (text; a later duplicate name wins)."""
    return {k: v.decode(errors="replace") for k, v in headers}


def _raw_from(record: Any) -> RawMessage:
    return RawMessage(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value or b"",
        headers=[(k, v or b"") for k, v in (record.headers or ())],
        timestamp_ms=record.timestamp,
    )


class KafkaBus(Bus):
    def __init__(self, settings: Settings, service: str, codec: AvroCodec, *, client_id: str | None = None) -> None:
        super().__init__(settings, service, codec)
        self.committer = OffsetCommitter(settings.consumer_commit_interval_ms / 1000)
        self.broker = KafkaBroker(
            settings.kafka_bootstrap,
            client_id=client_id or f"reelfab-{service}",
            enable_idempotence=True,
            acks="all",
            max_request_size=settings.broker_max_message_bytes,
            allow_auto_create_topics=False,
            middlewares=[self._policy_middleware()],
            logger=logging.getLogger("reelfab.faststream"),
            log_level=logging.DEBUG,  # one line per message is for debugging, not for production logs
            graceful_timeout=15.0,
            description=f"Reelfab {service}",
        )
        # per consumer, the next offset to settle on each partition (for reelfab_consumer_lag_messages)
        self.settled_next: weakref.WeakKeyDictionary[Any, dict[TopicPartition, int]] = weakref.WeakKeyDictionary()
        self.measured_lag: dict[tuple[str, str], int] = {}
        self.lag_task: asyncio.Task[None] | None = None
        LAG.track(self)

    def lag(self) -> dict[tuple[str, str], int]:
        """(group, topic) -> messages not settled yet on the partitions this bus's consumers hold, as last
        measured (every ``consumer_lag_interval_s``)."""
        return dict(self.measured_lag)

    async def measure_lag(self) -> None:
        """Ask the broker for the end of every assigned partition (a consumer whose handler is busy fetches
        nothing, so its cached high-water mark would go stale) and subtract where each group stands: the
        next offset to settle here, else the group's committed offset, else the partition's beginning."""
        found: dict[tuple[str, str], int] = {}
        for subscriber in list(self.broker.subscribers):
            consumer: Any = getattr(subscriber, "consumer", None)
            tps = sorted(consumer.assignment()) if consumer is not None else []
            if not tps:
                continue
            ends = await consumer.end_offsets(tps)
            settled = self.settled_next.get(consumer, {})
            stands: dict[TopicPartition, int | None] = {tp: await consumer.committed(tp) for tp in tps}
            unknown = [tp for tp, at in stands.items() if at is None and tp not in settled]
            begins = await consumer.beginning_offsets(unknown) if unknown else {}
            group = str(getattr(subscriber, "group_id", "") or "")
            for tp in tps:
                at = max(settled.get(tp, 0), stands[tp] or 0, begins.get(tp, 0))
                key = (group, tp.topic)
                found[key] = found.get(key, 0) + max(0, ends[tp] - at)
        self.measured_lag = found

    async def _lag_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.consumer_lag_interval_s)
            try:
                await self.measure_lag()
            except Exception as exc:  # noqa: BLE001 - the broker away: the last measure stands, the probe says why
                log.debug("consumer lag not measured", error=str(exc)[:200])

    # -- subscriptions ----------------------------------------------------------------------

    def subscribe(self, topic: Any, handler: Any, *, group: str | None = None, from_beginning: bool = True) -> Subscription:
        sub = super().subscribe(topic, handler, group=group, from_beginning=from_beginning)
        self._register(sub)
        return sub

    def _register(self, sub: Subscription) -> None:
        model = model_for(sub.topic.record)
        bus = self

        async def decoder(msg: Any) -> Any:
            # the typed record is built here, so a bad payload fails inside the policy's scope
            record = bus.decode(sub, _raw_from(msg.raw_message), _ATTEMPT.get()).record
            decoded = _DECODED.get(None)
            if decoded is not None:
                decoded.append(record)  # a dead letter's job.failed names the record's job
            return record

        async def entry(body: Any) -> None:
            raw = _MESSAGE.get().raw_message
            await sub.handler(
                Event(
                    record=body,
                    topic=raw.topic,
                    key=raw.key.decode() if raw.key is not None else None,
                    partition=raw.partition,
                    offset=raw.offset,
                    attempt=_ATTEMPT.get(),
                    headers=[(k, v or b"") for k, v in (raw.headers or ())],
                )
            )

        # FastStream reads the payload type from the signature: this is what lands in AsyncAPI
        params = list(inspect.signature(entry).parameters.values())
        entry.__signature__ = inspect.Signature([params[0].replace(annotation=model)])  # type: ignore[attr-defined]
        entry.__annotations__ = {"body": model, "return": None}
        entry.__name__ = f"{sub.group}__{sub.topic.short_record}"
        entry.__doc__ = sub.topic.description

        s = self.settings
        self.broker.subscriber(
            sub.topic.name,
            group_id=sub.group,
            ack_policy=AckPolicy.MANUAL,  # offsets are ours: see OffsetCommitter
            listener=_FlushOnRevoke(self.committer),
            auto_offset_reset="earliest" if sub.from_beginning else "latest",
            parser=_tolerant_parser,
            decoder=decoder,
            session_timeout_ms=s.consumer_session_timeout_ms,
            heartbeat_interval_ms=s.consumer_heartbeat_interval_ms,
            fetch_max_wait_ms=s.consumer_fetch_max_wait_ms,
            max_partition_fetch_bytes=s.broker_max_message_bytes,
            title=f"{sub.topic.name}/consume/{sub.group}",
            description=sub.topic.description,
        )(entry)

    def declare_publisher(self, topic: Any) -> Any:
        t = super().declare_publisher(topic)
        self.broker.publisher(t.name, schema=model_for(t.record), title=f"{t.name}/publish/{self.service}", description=t.description)
        return t

    def _subscription_for(self, topic: str, group: str | None) -> Subscription:
        for sub in self.subscriptions:
            if sub.topic.name == topic and (group is None or sub.group == group):
                return sub
        raise LookupError(f"no subscription for {topic} in group {group}")

    def _policy_middleware(self) -> type[BaseMiddleware]:
        bus = self

        class DeliveryPolicyMiddleware(BaseMiddleware):
            policy_ran = False

            async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: Any) -> Any:
                self.policy_ran = True
                raw = _raw_from(msg.raw_message)
                handler = self.context.get_local("handler_")
                sub = bus._subscription_for(raw.topic, getattr(handler, "group_id", None))

                async def attempt(n: int) -> Any:
                    tokens = _ATTEMPT.set(n), _MESSAGE.set(msg)
                    try:
                        return await call_next(msg)
                    finally:
                        _ATTEMPT.reset(tokens[0])
                        _MESSAGE.reset(tokens[1])

                decoded: list[Any] = []
                token = _DECODED.set(decoded)
                try:
                    await bus._settle(msg.consumer, raw, attempt, sub, decoded)
                finally:
                    _DECODED.reset(token)
                return None

            async def after_processed(self, exc_type: type[BaseException] | None = None,
                                      exc_val: BaseException | None = None, exc_tb: Any = None) -> bool | None:
                if not isinstance(exc_val, Exception) or self.policy_ran:
                    return False
                # FastStream failed before the policy's scope (parsing the record): the message still gets an
                # outcome, a dead letter naming the failure, instead of being logged and skipped
                failure = exc_val
                raw = _raw_from(self.msg)
                handler = self.context.get_local("handler_")
                sub = bus._subscription_for(raw.topic, getattr(handler, "group_id", None))

                async def unreadable(n: int) -> Any:
                    raise DecodeError(f"the message could not be read: {type(failure).__name__}: {failure}") \
                        from failure

                log.error("a message failed before the delivery policy; it is given to the policy",
                          topic=raw.topic, partition=raw.partition, offset=raw.offset,
                          error=f"{type(failure).__name__}: {failure}"[:500])
                await bus._settle(getattr(handler, "consumer", None), raw, unreadable, sub, [])
                return True

        return DeliveryPolicyMiddleware

    async def _settle(self, consumer: Any, raw: RawMessage, attempt: Callable[[int], Awaitable[Any]],
                      sub: Subscription, decoded: list[Any]) -> None:
        """Run the policy for one message and mark its offset committable once its outcome is settled."""
        try:
            await self.policy.deliver(raw, attempt, self.dead_letter_sink(sub, decoded))
        except Exception:
            # not even dead-lettered (the policy retries that itself): fetch it again rather than lose it
            if consumer is not None:
                consumer.seek(TopicPartition(raw.topic, raw.partition), raw.offset)
            raise
        if consumer is None:
            return
        self.committer.settled(consumer, raw.topic, raw.partition, raw.offset)
        with contextlib.suppress(TypeError):  # a consumer that cannot be weakly referenced: no lag from it
            self.settled_next.setdefault(consumer, {})[TopicPartition(raw.topic, raw.partition)] = raw.offset + 1
        if self.committer.closing:
            await self.committer.flush()

    # -- transport --------------------------------------------------------------------------

    async def _send(self, topic: str, value: bytes, key: bytes | None, headers: Headers) -> Published:
        meta = await self.broker.publish(value, topic=topic, key=key, headers=_wire_headers(headers))
        return Published(topic, meta.partition, meta.offset)

    def record_size(self, key: bytes | None, value: bytes, headers: Headers) -> int:
        """The size aiokafka's producer checks against ``max_request_size`` before sending, with the
        headers FastStream adds."""
        wire = [(k, v.encode()) for k, v in _wire_headers(headers).items()] + _FASTSTREAM_HEADERS
        return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, wire))

    def is_too_large(self, exc: BaseException) -> bool:
        # aiokafka's own check before sending, and the broker's answer (error 10) for a topic with a lower limit
        return super().is_too_large(exc) or isinstance(exc, MessageSizeTooLargeError)

    async def _connect(self) -> None:
        await self.broker.connect()  # the producer; broker.start() below finds it connected

    async def _start(self) -> None:
        await self.broker.connect()
        await _start_subscribers_together(self.broker)
        for publisher in self.broker.publishers:
            await publisher.start()
        # the rest of FastStream's broker.start() (0.7.8: connect, subscribers, publishers, running); a
        # FastStream upgrade must check BrokerUsecase.start still does no more than that
        self.broker.running = True
        self.committer.start()
        if self.subscriptions and self.settings.consumer_lag_interval_s > 0:
            self.lag_task = asyncio.create_task(self._lag_loop(), name="kafka-consumer-lag")

    async def _stop(self) -> None:
        if self.lag_task is not None:
            self.lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.lag_task
            self.lag_task, self.measured_lag = None, {}
        await self.committer.stop()  # from here on each settled message commits at once
        await self.broker.stop()
        await self.committer.flush()

    async def reachable(self) -> None:
        """A TCP connection to one of the bootstrap brokers within a second, or the last error. The
        consumers reconnect on their own and say nothing; this is what readiness asks instead."""
        last: BaseException | None = None
        for server in self.settings.kafka_bootstrap.split(","):
            host, _, port = server.strip().rpartition(":")
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), 1.0)
            except (OSError, TimeoutError, ValueError) as exc:
                last = exc
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        raise DependencyUnavailable("kafka", f"no broker of {self.settings.kafka_bootstrap} answers ({last})")

    async def scan(self, topic: str, since: datetime) -> list[RawMessage]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=self.settings.broker_max_message_bytes,
        )
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()  # a broker that does not answer: close what start() opened
            raise
        try:
            partitions = consumer.partitions_for_topic(topic) or set()
            if not partitions:
                await consumer._client.force_metadata_update()  # noqa: SLF001 - first look at a topic
                partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            starts = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in tps})
            found: list[RawMessage] = []
            pending = set()
            for tp in tps:
                start = starts.get(tp)
                if start is not None and start.offset < ends[tp]:
                    consumer.seek(tp, start.offset)
                    pending.add(tp)
            while pending:
                batch = await consumer.getmany(*pending, timeout_ms=1000)
                for tp, records in batch.items():
                    found.extend(_raw_from(r) for r in records)
                    if records and records[-1].offset + 1 >= ends[tp]:
                        pending.discard(tp)
                if not batch:
                    pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
            return found
        finally:
            await consumer.stop()
