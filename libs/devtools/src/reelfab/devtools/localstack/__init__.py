"""The project's own local stack: a real single-node Kafka (KRaft) and a real PostgreSQL on 127.0.0.1,
both living under settings.state_dir and started/stopped by these functions (the CLI's `up`/`down`)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from reelfab.bus.admin import default_topics, ensure_topics, ensure_topics_async
from reelfab.errors import StackError
from reelfab.settings import Settings

from .kafka import (
    broker_max_message_bytes,
    kafka_status,
    start_kafka,
    stop_kafka,
)
from .postgres import postgres_status, start_postgres, stop_postgres
from .procs import Say

__all__ = [
    "broker_max_message_bytes",
    "default_topics",
    "down",
    "ensure_topics",
    "ensure_topics_async",
    "kafka_status",
    "postgres_status",
    "start_kafka",
    "start_postgres",
    "status",
    "stop_kafka",
    "stop_postgres",
    "up",
]


def _both(settings: Settings, say: Say, *steps: Callable[[Settings, Say], str]) -> list[str]:
    """Run the two services' steps side by side (the JVM boots while PostgreSQL starts)."""
    with ThreadPoolExecutor(max_workers=len(steps)) as pool:
        futures = [pool.submit(step, settings, say) for step in steps]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if len(errors) == 1:
        raise errors[0]  # type: ignore[misc]
    if errors:
        raise StackError("\n\n".join(str(e) for e in errors)) from errors[0]
    return [f.result() for f in futures]


def up(settings: Settings, say: Say = print) -> list[str]:
    """Start PostgreSQL and Kafka (each only if not running) and create the catalogue's topics."""
    lines = _both(settings, say, start_postgres, start_kafka)
    ensure_topics(settings, say=say)
    return lines


def down(settings: Settings, say: Say = print) -> list[str]:
    """Stop what `up` started (by pid file, after checking the process is ours); harmless when stopped."""
    return _both(settings, say, stop_kafka, stop_postgres)


def status(settings: Settings) -> dict[str, dict[str, Any]]:
    return {"kafka": kafka_status(settings), "postgres": postgres_status(settings)}
