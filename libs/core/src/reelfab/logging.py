"""Structured logging: JSON lines in services (one object per event, easy to ship), pretty
console output in the CLI. Both go through structlog so call sites are the same."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(fmt: str = "json", level: str = "INFO", service: str | None = None) -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if fmt == "pretty":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # libraries (aiokafka, faststream, uvicorn) log through the standard library: same stream, quieter
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _RoutineKafkaChatter) for f in handler.filters):
            handler.addFilter(_RoutineKafkaChatter())
        if not any(isinstance(f, _PoolOutageOneLine) for f in handler.filters):
            handler.addFilter(_PoolOutageOneLine())
    if service:
        structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]


class _RoutineKafkaChatter(logging.Filter):
    """aiokafka warns about things that are routine for us: a heartbeat answered "rebalancing" while a
    consumer group forms, and a metadata request for a topic the broker does not auto-create (we create
    topics ourselves, and a reader that asks first is told so). Everything else it says still shows."""

    _ROUTINE = ("because it is rebalancing", "Auto create topics is disabled")

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(("aiokafka", "reelfab.faststream")) or record.levelno > logging.WARNING:
            return True
        message = record.getMessage()
        return not any(text in message for text in self._ROUTINE)


class _PoolOutageOneLine(logging.Filter):
    """asyncpg's pool warns with a whole traceback each time it cannot reopen a connection while
    PostgreSQL is away; the outage is already reported (readiness, ``reelfab_dependency_up``, one line
    of ours), so its warning keeps one line: the message and the error, no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("asyncpg") and record.levelno <= logging.WARNING and record.exc_info:
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(error).__name__}: {error}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True
