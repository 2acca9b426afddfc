"""Running one service: database and migrations, the bus, the outbox relay, and an HTTP server
for /healthz, /readyz and /metrics; SIGTERM stops it cleanly. A service's ``main`` module only
declares a ``ServiceSpec`` and a ``wire`` function; this module does the rest."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg
import uvicorn
from aiokafka.errors import KafkaConnectionError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from reelfab.bus.base import Bus, new_event_id, now_utc
from reelfab.bus.message import Event
from reelfab.bus.outbox import Outbox, OutboxRelay
from reelfab.bus.unit_of_work import InMemoryUnitOfWork, PostgresUnitOfWork, UnitOfWork
from reelfab.contracts.codec import default_codec
from reelfab.contracts.generated.records import JobFailed, RenderCompleted, SwapCompleted, SwapRequested
from reelfab.contracts.topics import JOB_FAILED
from reelfab.db import create_pool, delivery_migrations, migrate, package_migrations
from reelfab.errors import StackError
from reelfab.logging import configure_logging, get_logger
from reelfab.settings import Settings


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # as on the command line: consent-registry, planner, ...
    package: str  # the service's import package (reelfab_<folder>), where its migrations live
    db_schema: str  # its own PostgreSQL schema (a namespace in the database; `schema` alone means Avro)
    default_port: int
    consumes: tuple[str, ...] = ()
    produces: tuple[str, ...] = ()
    description: str = ""


@dataclass
class ServiceContext:
    """What a service's handlers get: its spec, settings, bus, pool, outbox and unit of work."""

    spec: ServiceSpec
    settings: Settings
    bus: Bus
    pool: asyncpg.Pool | None
    outbox: Outbox
    uow: UnitOfWork | None = None
    extras: dict[str, object] = field(default_factory=dict)
    on_start: list[Callable[[], Awaitable[None]]] = field(default_factory=list)  # after migrations, before consuming
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)  # after consuming stopped
    # health probes of other dependencies (name as outage_of names it, e.g. "consent registry"): one that
    # is down is cleared only when its probe answers, not when some message goes through without it
    probes: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)


Wire = Callable[[ServiceContext], None]


def build_context(spec: ServiceSpec, settings: Settings, bus: Bus, pool: asyncpg.Pool | None, wire: Wire) -> ServiceContext:
    outbox = Outbox(spec.db_schema, bus)
    produces = frozenset(spec.produces)
    uow: UnitOfWork = PostgresUnitOfWork(pool, spec.db_schema, outbox, produces) if pool is not None \
        else InMemoryUnitOfWork(bus, produces)
    ctx = ServiceContext(spec, settings, bus, pool, outbox, uow)
    for topic in spec.produces:
        bus.declare_publisher(topic)
    wire(ctx)
    return ctx


class _QuietServer(uvicorn.Server):
    """uvicorn, minus its own signal capture: the service's handler stops everything in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def http_app(ctx: ServiceContext, ready: Callable[[], Awaitable[bool]]) -> ASGIApp:
    outages = ctx.bus.policy.outages

    async def healthz(_: Request) -> Response:
        return JSONResponse({"service": ctx.spec.name, "status": "ok"})

    async def readyz(_: Request) -> Response:
        ok = await ready()
        ok = ok and outages.ready
        body: dict[str, Any] = {"service": ctx.spec.name, "ready": ok}
        if not outages.ready:  # what the service is waiting for, so an operator knows where to look
            body["waiting_for"] = outages.describe()
        return JSONResponse(body, status_code=200 if ok else 503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    routes: list[Any] = [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
    app = Starlette(routes=routes)
    api = cast("ASGIApp | None", ctx.extras.get("api"))
    if api is None:
        return app
    own = {"/healthz", "/readyz", "/metrics"}

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        # a service with an HTTP API of its own gets every other path as it came, newlines and all
        # (a Mount's path pattern would not match those and Starlette would answer in plain text)
        target = app if scope["type"] != "http" or scope["path"] in own else api
        await target(scope, receive, send)

    return dispatch


def check_http_port(spec: ServiceSpec, settings: Settings) -> None:
    """A StackError naming the address and what to do when the service's HTTP port cannot be bound."""
    import socket

    port = settings.http_port or spec.default_port
    with socket.socket(socket.AF_INET6 if ":" in settings.http_host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no clash
        try:
            probe.bind((settings.http_host, port))
        except OSError as exc:
            raise StackError(
                f"{spec.name}: cannot listen on {settings.http_host}:{port} ({exc.strerror or exc}) — another "
                f"process holds the port (another {spec.name}?); stop it or set REELFAB_HTTP_PORT"
            ) from None


BusFactory = Callable[[Settings, str], Bus]  # (settings, service name) -> the service's bus


def kafka_bus(settings: Settings, service: str) -> Bus:
    from reelfab.bus.kafka import KafkaBus

    return KafkaBus(settings, service, default_codec(settings))


async def run_service(spec: ServiceSpec, settings: Settings, wire: Wire, stop: asyncio.Event | None = None,
                      bus_factory: BusFactory = kafka_bus, *, handle_signals: bool = True) -> None:
    """Run the service until ``stop`` (or SIGTERM/SIGINT). ``bus_factory``: Kafka unless told otherwise
    (`reelfab demo --embedded` runs every service on one in-process bus). ``handle_signals=False``: the
    process's signals are its host's (several services in one process: the demo, tests), only ``stop``."""
    configure_logging(settings.log_format, settings.log_level, service=spec.name)
    log = get_logger("reelfab.service")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

    check_http_port(spec, settings)  # before anything starts: a taken port is named, not a uvicorn traceback
    pool = await create_pool(settings)  # a StackError naming the address and `make up` when it does not answer
    try:
        applied = await migrate(pool, spec.db_schema, delivery_migrations() + package_migrations(spec.package))
        if applied:
            log.info("migrated", schema=spec.db_schema, applied=[f"{m.source}:{m.version:04d}_{m.name}" for m in applied])
        bus = bus_factory(settings, spec.name)
        ctx = build_context(spec, settings, bus, pool, wire)

        bus.policy.outages.probed_only.update(ctx.probes)

        async def ready() -> bool:
            await probe_dependencies(bus, pool, ctx.probes)
            return bus.started

        server = _QuietServer(
            uvicorn.Config(
                http_app(ctx, ready),
                host=settings.http_host,
                port=settings.http_port or spec.default_port,
                log_level="warning",
                lifespan="off",
            )
        )
        http_task = asyncio.create_task(server.serve(), name="http")
        for hook in ctx.on_start:
            await hook()
        relay = OutboxRelay(
            pool, spec.db_schema, bus,
            batch_size=settings.outbox_batch_size, poll_interval_s=settings.outbox_poll_interval_s,
        )
        relay_task: asyncio.Task[None] | None = None
        try:
            # the relay runs before the consumers start: the first to join handle messages while the
            # others are still joining their group; what they write leaves at once
            await bus.connect()
            relay_task = asyncio.create_task(relay.run(stop), name="outbox-relay")
            await bus.start()
        except BaseException as exc:
            if relay_task is not None:
                relay_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await relay_task
            with contextlib.suppress(Exception):  # what connected before the failure
                await bus.stop()
            server.should_exit = True
            await http_task
            if isinstance(exc, KafkaConnectionError):
                raise StackError(
                    f"{spec.name}: Kafka does not answer at {settings.kafka_bootstrap} ({exc}); "
                    "start it with `make up` or set REELFAB_KAFKA_BOOTSTRAP"
                ) from None
            raise
        probe_task = asyncio.create_task(_probe_every(bus, pool, stop, settings.health_probe_interval_s, ctx.probes),
                                         name="dependency-probe")
        log.info("started", port=settings.http_port or spec.default_port, consumes=list(spec.consumes))
        await stop.wait()
        log.info("stopping")
        await relay_task
        await probe_task
        await bus.stop()
        for hook in ctx.on_stop:
            await hook()
        server.should_exit = True
        await http_task
        log.info("stopped")
    finally:
        await pool.close()


async def probe_dependencies(bus: Bus, pool: asyncpg.Pool,
                             probes: Mapping[str, Callable[[], Awaitable[None]]] | None = None) -> None:
    """Ask PostgreSQL and Kafka whether they answer, and record it: readiness and
    reelfab_dependency_up{service,dependency} follow, even when no message is flowing. Another
    dependency with a probe (``ServiceContext.probes``) is asked while it is down."""
    outages = bus.policy.outages
    for name, probe in (probes or {}).items():
        if name in outages.down:
            try:
                await asyncio.wait_for(probe(), 2.0)
            except Exception as exc:  # noqa: BLE001 - anything at all: it did not answer
                outages.probed(name, exc)
            else:
                outages.probed(name, None)
    try:
        await asyncio.wait_for(pool.fetchval("SELECT 1"), 2.0)
    except Exception as exc:  # anything at all: the database did not answer
        outages.probed("postgresql", exc)
    else:
        outages.probed("postgresql", None)
    try:
        await bus.reachable()
    except Exception as exc:
        outages.probed("kafka", exc)
    else:
        outages.probed("kafka", None)


async def _probe_every(bus: Bus, pool: asyncpg.Pool, stop: asyncio.Event, interval_s: float,
                       probes: Mapping[str, Callable[[], Awaitable[None]]]) -> None:
    while not stop.is_set():
        await probe_dependencies(bus, pool, probes)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


# Each service's distribution declares its wiring module in the ``reelfab.services`` entry-point group
# (services/<folder>/pyproject.toml); the runtime finds services there and never imports one by name.
SERVICE_GROUP = "reelfab.services"


def installed_services() -> dict[str, str]:
    """Service name -> wiring module, for every service distribution installed in this environment."""
    from importlib.metadata import entry_points

    return {e.name: e.value for e in sorted(entry_points(group=SERVICE_GROUP), key=lambda e: e.name)}


def service_module(name: str) -> Any:
    """The wiring module (``SPEC`` and ``wire``) of an installed service."""
    import importlib

    known = installed_services()
    if name not in known:
        raise KeyError(f"unknown service {name!r}; installed here: {', '.join(known) or 'none'}")
    return importlib.import_module(known[name])


def load_service(name: str) -> tuple[ServiceSpec, Wire]:
    module = service_module(name)
    return module.SPEC, module.wire


HandlerFactory = Callable[[ServiceContext], Callable[[Event[Any]], Awaitable[None]]]


def entry_point(spec: ServiceSpec, wire: Wire) -> Callable[[], None]:
    def main() -> None:
        from reelfab.settings import get_settings

        asyncio.run(run_service(spec, get_settings(), wire))

    return main


def job_failed(spec: ServiceSpec, event: Event[Any], reason_code: str, detail: str) -> JobFailed:
    """The job.failed record (not retryable) for the job ``event`` carries: a decision, not a fault."""
    job: SwapRequested | SwapCompleted | RenderCompleted = event.record  # the records a stage fails a job on
    return JobFailed(
        event_id=new_event_id(), occurred_at=now_utc(), producer=spec.name, trace_id=job.trace_id,
        job_id=job.job_id, stage=spec.name, reason_code=reason_code, reason=detail[:2000],
        retryable=False, attempts=event.attempt, subject_id=job.subject_id, consent_version=job.consent_version,
    )


async def fail_job(ctx: ServiceContext, event: Event[Any], handler: str, reason_code: str, detail: str) -> None:
    """Announce job.failed for ``event``'s job in the unit of work that marks the event processed. The
    registry audits consent denials from it."""
    assert ctx.uow is not None, "build_context gives every context its unit of work"
    async with ctx.uow.begin(event, handler) as tx:
        if tx.fresh:
            await tx.publish(JOB_FAILED, job_failed(ctx.spec, event, reason_code, detail))
    job: SwapRequested | SwapCompleted | RenderCompleted = event.record
    get_logger("reelfab.service").warning("job failed", job_id=job.job_id, reason=reason_code, detail=detail)
