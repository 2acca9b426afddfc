"""Topic set-up from the catalogue (reelfab.contracts.topics): create what is missing, report what
differs, and describe what the broker has. Used by `reelfab topics --create`, the local stack and the
deployment's set-up job alike."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from reelfab.contracts.topics import TOPICS
from reelfab.errors import StackError
from reelfab.settings import Settings

T = TypeVar("T")
Say = Callable[[str], None]
TopicSpec = tuple[str, int, dict[str, str]]


def default_topics(min_partitions: int = 0) -> list[TopicSpec]:
    """The catalogue's topics and their DLQs. ``min_partitions`` raises every non-compacted catalogue
    topic to at least that many partitions (a deployment that scales consumers further than the
    catalogue's counts); compacted topics keep theirs, see ``growable``."""
    specs: list[TopicSpec] = []
    for t in TOPICS:
        partitions = t.partitions if t.compacted else max(t.partitions, min_partitions)
        specs.append((t.name, partitions, {"cleanup.policy": "compact"} if t.compacted else {}))
    for t in TOPICS:
        # One partition per DLQ: dead letters are rare, one ordered log is easiest to inspect and
        # replay, and it keeps the partition count (and broker start-up) low. Never compacted, even
        # for a compacted topic: every failure is kept, not only the latest per key.
        specs.append((t.dlq, 1, {}))
    return specs


def growable(specs: list[TopicSpec]) -> set[str]:
    """Topics whose partitions may be added to in place: the catalogue's non-compacted ones. Adding
    partitions moves keys to other partitions; for job-keyed topics (one message per job per topic) that
    is harmless, but a compacted topic's latest value per key (a consent change) could then sit behind
    an older one in another partition, so those are never grown."""
    plain = {t.name for t in TOPICS if not t.compacted}
    return {name for name, _, _ in specs if name in plain}


def partitions_to_add(specs: list[TopicSpec], existing: dict[str, int], grow: set[str]) -> dict[str, int]:
    """``{topic: new total}`` for the existing topics of ``grow`` that have fewer partitions than specified."""
    return {name: want for name, want, _ in specs if name in grow and name in existing and existing[name] < want}


async def ensure_topics_async(
    settings: Settings, topics: list[TopicSpec] | None = None, say: Say = print, min_partitions: int = 0
) -> list[str]:
    """Create the missing topics; existing ones are left alone (a mismatch is reported), except that with
    ``min_partitions`` the non-compacted catalogue topics with fewer partitions are grown to it. Returns
    the created."""
    from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    specs = default_topics(min_partitions) if topics is None else topics
    grow = growable(specs) if min_partitions > 0 else set()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=15000)
    try:
        await admin.start()
        existing = {t["topic"]: t for t in await admin.describe_topics()}
        missing = [s for s in specs if s[0] not in existing]
        counts = {name: len(t["partitions"]) for name, t in existing.items()}
        adding = partitions_to_add(specs, counts, grow)
        for name, partitions, _ in specs:
            if name in counts and counts[name] != partitions and name not in adding:
                say(f"kafka: topic {name} has {counts[name]} partitions, the catalogue says {partitions}")
        if adding:
            await admin.create_partitions({name: NewPartitions(total) for name, total in adding.items()})
            for name, total in adding.items():
                say(f"kafka: topic {name} grown from {counts[name]} to {total} partitions")
        if not missing:
            return []
        new = [NewTopic(name, partitions, 1, topic_configs=dict(cfg)) for name, partitions, cfg in missing]
        response = await admin.create_topics(new, timeout_ms=15000)
        for name, code, *rest in response.topic_errors:
            error = for_code(code)
            if code != 0 and error is not TopicAlreadyExistsError:
                raise StackError(f"creating topic {name} failed: {error.__name__} {rest[0] if rest else ''}")
        created = [s[0] for s in missing]
        say(f"kafka: created {len(created)} topics")
        await _warm_group_coordinator(admin)
        return created
    except StackError:
        raise
    except Exception as exc:
        raise StackError(f"could not create topics on {settings.kafka_bootstrap}: {exc!r}") from exc
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def _warm_group_coordinator(admin: Any, timeout_s: float = 15.0) -> None:
    """Have the broker create __consumer_offsets now, not during the first consumer's join."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await admin.find_coordinator("reelfab-localstack")
            return
        except Exception:
            if time.monotonic() > deadline:
                return  # not fatal: the first consumer will wait for it instead
            await asyncio.sleep(0.1)


def ensure_topics(
    settings: Settings, topics: list[TopicSpec] | None = None, say: Say = print, min_partitions: int = 0
) -> list[str]:
    return run_sync(lambda: ensure_topics_async(settings, topics, say, min_partitions))


def run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """asyncio.run, also from code that already runs inside an event loop (then on a helper thread)."""

    async def main() -> T:
        return await make()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()
