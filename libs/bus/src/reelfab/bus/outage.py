"""Telling a dependency's outage from a message's fault (docs/architecture.md "Delivery rules").

PostgreSQL restarting, Kafka away, the consent registry not answering, the object store's volume gone:
none of that is the message's fault, so none of it may count towards the dead-letter topic. The
delivery policy asks ``outage_of`` whether a failure is an outage; if so it waits with capped backoff
and tries the same message again, for as long as it takes, while ``Outages`` keeps readiness false, a
gauge at 0 and one log line saying what is awaited."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge

from reelfab.errors import DependencyUnavailable
from reelfab.logging import get_logger

log = get_logger("reelfab.outage")

DEPENDENCY_UP = Gauge(
    "reelfab_dependency_up",
    "1 while a dependency answers, 0 while the service waits for it (readiness is false meanwhile).",
    ["service", "dependency"],
)
OUTAGE_WAITS = Counter(
    "reelfab_dependency_waits_total",
    "Attempts put off because a dependency was unavailable (they do not count towards the DLQ).",
    ["service", "dependency"],
)

# The module a failure came from names the dependency when the error itself does not.
_MODULES = (("asyncpg", "postgresql"), ("aiokafka", "kafka"), ("kafka", "kafka"), ("httpx", "consent registry"),
            ("httpcore", "consent registry"))


def outage_of(exc: BaseException) -> str | None:
    """The dependency whose unavailability caused ``exc``, or None when the message may be at fault."""
    for err in _chain(exc):
        if isinstance(err, DependencyUnavailable):
            return err.dependency
        named = _known_outage(err)
        if named:
            return named
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    err: BaseException | None = exc
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)


def _known_outage(err: BaseException) -> str | None:
    import asyncpg

    if isinstance(err, asyncpg.PostgresConnectionError | asyncpg.CannotConnectNowError | asyncpg.AdminShutdownError
                  | asyncpg.CrashShutdownError | asyncpg.TooManyConnectionsError):
        return "postgresql"
    if isinstance(err, asyncpg.InterfaceError) and "closed" in str(err).lower():
        return "postgresql"  # "connection is closed" / "connection was closed in the middle of operation"
    try:
        from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
    except ImportError:  # pragma: no cover - aiokafka is a dependency of the bus
        pass
    else:
        if isinstance(err, KafkaConnectionError | KafkaTimeoutError) or (
                isinstance(err, KafkaError) and getattr(err, "retriable", False)):
            return "kafka"
    import httpx

    if isinstance(err, httpx.TransportError):
        return "consent registry"
    if isinstance(err, ConnectionError | TimeoutError):
        return _module_of(err) or "network"
    return None


def _module_of(err: BaseException) -> str | None:
    tb = err.__traceback__
    names = []
    while tb is not None:
        names.append(tb.tb_frame.f_globals.get("__name__", ""))
        tb = tb.tb_next
    for name in reversed(names):  # the innermost frame that belongs to a known client
        for prefix, dependency in _MODULES:
            if name == prefix or name.startswith(prefix + "."):
                return dependency
    return None


@dataclass
class _Down:
    since: float
    error: str
    waits: int = 0
    by_probe: bool = False  # seen by a health probe: only a probe that gets an answer clears it


@dataclass
class Outages:
    """Which dependencies one service is waiting for. Readiness is false while any is down."""

    service: str
    down: dict[str, _Down] = field(default_factory=dict)
    probed_only: set[str] = field(default_factory=set)  # dependencies with a health probe: only it clears them

    def waiting(self, dependency: str, error: BaseException) -> None:
        state = self.down.get(dependency)
        if state is None:
            state = self.down[dependency] = _Down(time.monotonic(), f"{type(error).__name__}: {error}"[:500])
            log.warning("waiting for a dependency; consumption paused, nothing dead-lettered meanwhile",
                        service=self.service, dependency=dependency, error=state.error)
        state.waits += 1
        DEPENDENCY_UP.labels(self.service, dependency).set(0)
        OUTAGE_WAITS.labels(self.service, dependency).inc()

    def answered(self) -> None:
        """A message went through: whatever was down answers again, except what only a probe can tell
        (a message may go through without asking it: a job failed for its deadline asks no registry)."""
        for dependency, state in list(self.down.items()):
            if state.by_probe or dependency in self.probed_only:
                continue
            log.info("dependency is back; consumption resumed", service=self.service, dependency=dependency,
                     down_for_s=round(time.monotonic() - state.since, 1), waits=state.waits)
            DEPENDENCY_UP.labels(self.service, dependency).set(1)
            del self.down[dependency]

    def probed(self, dependency: str, error: BaseException | None) -> None:
        """The answer of a health probe (readiness, or the periodic check): down with ``error``, or up."""
        if error is not None:
            if dependency not in self.down:
                self.down[dependency] = _Down(time.monotonic(), f"{type(error).__name__}: {error}"[:500],
                                              by_probe=True)
                log.warning("a dependency does not answer its health probe", service=self.service,
                            dependency=dependency, error=self.down[dependency].error)
            DEPENDENCY_UP.labels(self.service, dependency).set(0)
            return
        state = self.down.pop(dependency, None)
        if state is not None:
            log.info("dependency is back", service=self.service, dependency=dependency,
                     down_for_s=round(time.monotonic() - state.since, 1))
        DEPENDENCY_UP.labels(self.service, dependency).set(1)

    @property
    def ready(self) -> bool:
        return not self.down

    def describe(self) -> dict[str, str]:
        return {dep: state.error for dep, state in self.down.items()}


_REGISTRY: dict[str, Outages] = {}


def outages_for(service: str) -> Outages:
    """The process-wide record of one service's outages (several services may share a process)."""
    if service not in _REGISTRY:
        _REGISTRY[service] = Outages(service)
    return _REGISTRY[service]
