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


def default_topics() -> list[TopicSpec]:
    specs: list[TopicSpec] = []
    for t in TOPICS:
        specs.append((t.name, t.partitions, {"cleanup.policy": "compact"} if t.compacted else {}))
    for t in TOPICS:
        # One partition per DLQ: dead letters are rare, one ordered log is easiest to inspect and
        # replay, and it keeps the partition count (and broker start-up) low. Never compacted, even
        # for a compacted topic: every failure is kept, not only the latest per key.
        specs.append((t.dlq, 1, {}))
    return specs


async def ensure_topics_async(
    settings: Settings, topics: list[TopicSpec] | None = None, say: Say = print
) -> list[str]:
    """Create the missing topics; existing ones are left alone (a mismatch is reported). Returns the created."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    specs = default_topics() if topics is None else topics
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=15000)
    try:
        await admin.start()
        existing = {t["topic"]: t for t in await admin.describe_topics()}
        missing = [s for s in specs if s[0] not in existing]
        for name, partitions, _ in specs:
            have = existing.get(name)
            if have is not None and len(have["partitions"]) != partitions:
                say(
                    f"kafka: topic {name} has {len(have['partitions'])} partitions, the catalogue says {partitions}"
                )
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


def ensure_topics(settings: Settings, topics: list[TopicSpec] | None = None, say: Say = print) -> list[str]:
    return run_sync(lambda: ensure_topics_async(settings, topics, say))


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
