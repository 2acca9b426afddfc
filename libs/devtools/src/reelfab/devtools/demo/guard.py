"""What ends a demo run from outside its own steps: Ctrl-C or SIGTERM (the demo owns the process's
signals; its six services do not install their own), and the stack going away mid-run (Kafka or
PostgreSQL no longer accepting connections). Either cancels the run's task with a reason; the run then
stops its services and the CLI prints the reason, not a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

from reelfab.settings import Settings

PROBE_EVERY_S = 2.0
DOWN_AFTER = 3  # consecutive failed probes before the run is stopped (≈ 6 s of a stack that is gone)


class Guard:
    """Cancels ``task`` once with the first reason given; a second stop (a second Ctrl-C) cancels
    again, which also cuts short the services' clean stop."""

    def __init__(self, task: asyncio.Task[object]) -> None:
        self.task = task
        self.reason: str | None = None  # what happened, one clause
        self.hint = ""  # what to do about it, for the closing message

    def stop(self, reason: str, hint: str = "") -> None:
        if self.reason is None:
            self.reason, self.hint = reason, hint
        self.task.cancel()


@contextlib.contextmanager
def owning_signals(guard: Guard) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig, reason in ((signal.SIGINT, "interrupted (Ctrl-C)"), (signal.SIGTERM, "stopped by SIGTERM")):
        try:
            loop.add_signal_handler(sig, guard.stop, reason)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread: the host's signals
            continue
        installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def endpoints(settings: Settings, *, embedded: bool) -> list[tuple[str, str, int]]:
    """(what, host, port) the run depends on: PostgreSQL always, Kafka's first bootstrap broker unless
    the bus is in-process."""
    found = [("PostgreSQL", settings.postgres_host, settings.postgres_port)]
    if not embedded:
        first = settings.kafka_bootstrap.split(",")[0].strip()
        host, _, port = first.rpartition(":")
        found.append(("Kafka", host.strip("[]") or "127.0.0.1", int(port)))
    return found


async def _answers(host: str, port: int) -> bool:
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), PROBE_EVERY_S)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def watch_stack(guard: Guard, targets: list[tuple[str, str, int]], *, every_s: float = PROBE_EVERY_S,
                      down_after: int = DOWN_AFTER) -> None:
    """Probe each target every ``every_s``; after ``down_after`` failed probes in a row, stop the run
    naming what went away."""
    failures = dict.fromkeys((what for what, _h, _p in targets), 0)
    while True:
        for what, host, port in targets:
            failures[what] = 0 if await _answers(host, port) else failures[what] + 1
            if failures[what] >= down_after:
                guard.stop(f"{what} at {host}:{port} stopped answering mid-run",
                           "start the stack again with `make up`, then run the demo again")
                return
        await asyncio.sleep(every_s)


async def watch_services(guard: Guard, services: dict[str, asyncio.Task[None]]) -> None:
    """Stop the run when one of its services ends on its own (it crashed, or gave up on a dependency),
    naming it and its error, instead of waiting out a round's timeout."""
    done, _pending = await asyncio.wait(services.values(), return_when=asyncio.FIRST_COMPLETED)
    for name, task in services.items():
        if task in done:
            error = None if task.cancelled() else task.exception()
            guard.stop(f"the {name} service stopped mid-run"
                       + (f": {type(error).__name__}: {error}" if error is not None else ""))
            return
