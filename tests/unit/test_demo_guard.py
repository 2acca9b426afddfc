"""What ends a demo run from outside: the stack going away (named), Ctrl-C (the demo's, not a
service's), and a log that a reconnecting client would flood."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

import pytest

from reelfab.devtools.demo import Throttle
from reelfab.devtools.demo.guard import Guard, endpoints, owning_signals, watch_stack
from reelfab.settings import Settings


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


def test_endpoints_are_postgres_and_the_first_kafka_broker_unless_embedded() -> None:
    settings = Settings(kafka_bootstrap="10.0.0.5:9094,10.0.0.6:9094", postgres_host="db", postgres_port=6543)
    assert endpoints(settings, embedded=False) == [("PostgreSQL", "db", 6543), ("Kafka", "10.0.0.5", 9094)]
    assert endpoints(settings, embedded=True) == [("PostgreSQL", "db", 6543)]


async def test_a_stack_that_goes_away_stops_the_run_naming_it() -> None:
    with socket.socket() as alive:
        alive.bind(("127.0.0.1", 0))
        alive.listen()
        up, down = alive.getsockname()[1], closed_port()
        run = asyncio.create_task(asyncio.sleep(60))
        guard = Guard(run)
        await asyncio.wait_for(watch_stack(guard, [("PostgreSQL", "127.0.0.1", up), ("Kafka", "127.0.0.1", down)],
                                           every_s=0.01, down_after=3), 10)
    with pytest.raises(asyncio.CancelledError):
        await run
    assert guard.reason is not None
    assert guard.reason == f"Kafka at 127.0.0.1:{down} stopped answering mid-run"
    assert "make up" in guard.hint


async def test_a_stack_that_answers_is_left_alone() -> None:
    with socket.socket() as alive:
        alive.bind(("127.0.0.1", 0))
        alive.listen(64)
        run = asyncio.create_task(asyncio.sleep(60))
        guard = Guard(run)
        watch = asyncio.create_task(watch_stack(guard, [("Kafka", "127.0.0.1", alive.getsockname()[1])], every_s=0.01))
        await asyncio.sleep(0.3)
        assert not run.done() and guard.reason is None
        watch.cancel()
        run.cancel()


async def test_ctrl_c_cancels_the_run_with_a_reason_and_the_handler_goes_with_it() -> None:
    run = asyncio.create_task(asyncio.sleep(60))
    guard = Guard(run)
    with owning_signals(guard):
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(run, 5)
    assert guard.reason == "interrupted (Ctrl-C)"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's own again


def test_the_log_keeps_a_burst_of_each_message_then_says_how_many_it_left_out() -> None:
    now = [0.0]
    throttle = Throttle(burst=3, window_s=60, clock=lambda: now[0])

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, msg, None, None)

    kept = [throttle.filter(record("Unable connect to %s")) for _ in range(1000)]
    assert kept.count(True) == 3
    assert throttle.filter(record("another message"))  # counted apart
    now[0] = 61.0
    first = record("Unable connect to %s")
    assert throttle.filter(first)
    assert first.msg.endswith("[and 997 more like this left out of the log]")
