"""`reelfab serve <service>`: every service starts against the real stack, answers /healthz and
/readyz, serves /metrics, records what it consumes, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from reelfab.bus.kafka import KafkaBus
from reelfab.contracts.codec import default_codec
from reelfab.db import create_pool
from reelfab.service import installed_services
from tests.conftest import eventually, make_settings

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


LOGS: dict[int, Path] = {}  # a process's pid -> its log file


def _log(proc: subprocess.Popen[bytes]) -> str:
    """The process's output so far (a file, not a pipe: a service that logs more than a pipe holds
    while nobody reads would block on its next line and look hung)."""
    return LOGS[proc.pid].read_text(errors="replace")


@pytest.fixture(scope="module")
def running_services(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    logs = tmp_path_factory.mktemp("service-logs")
    for name in installed_services():
        port = _free_port()
        env = {
            **os.environ,
            "REELFAB_HTTP_PORT": str(port),
            "REELFAB_CONSUMER_SESSION_TIMEOUT_MS": "6000",
            "REELFAB_CONSUMER_HEARTBEAT_INTERVAL_MS": "300",
        }
        log = logs / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "reelfab.cli", "serve", name], env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
        LOGS[proc.pid] = log
        procs[name] = (proc, port)
    yield procs
    for proc, _ in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _get(port: int, path: str) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2)
    except httpx.HTTPError:
        return None


async def test_every_service_is_healthy_ready_and_serves_metrics(running_services: Any) -> None:
    for name, (proc, port) in running_services.items():
        await eventually(lambda p=port, pr=proc, n=name: _ok(p, "/readyz", pr, n), timeout=90, interval=0.2)
        health = _get(port, "/healthz")
        assert health is not None and health.json() == {"service": name, "status": "ok"}
        metrics = _get(port, "/metrics")
        assert metrics is not None and metrics.status_code == 200
        for metric in ("reelfab_events_consumed_total", "reelfab_dlq_total", "reelfab_stage_seconds"):
            assert f"# TYPE {metric}" in metrics.text


def _ok(port: int, path: str, proc: subprocess.Popen[bytes], name: str) -> bool:
    if proc.poll() is not None:
        out = _log(proc)
        raise AssertionError(f"{name} exited with {proc.returncode}:\n{out[-3000:]}")
    r = _get(port, path)
    return r is not None and r.status_code == 200


async def test_a_trend_reaches_the_planner_and_is_processed(running_services: Any, stack: Any) -> None:
    settings = make_settings()
    _, port = running_services["planner"]
    await eventually(
        lambda: _get(port, "/readyz") is not None and _get(port, "/readyz").status_code == 200, timeout=90
    )
    bus = KafkaBus(settings, "trend-detector", default_codec())
    await bus.start()
    event_id = str(uuid.uuid4())
    try:
        await bus.publish(
            "reelfab.trend.detected.v1",
            {
                "event_id": event_id,
                "occurred_at": datetime.now(UTC),
                "producer": "trend-detector",
                "trend_id": f"trend-{event_id[:8]}",
                "source": "test",
                "title": "Dance challenge",
                "tags": ["dance"],
                "urgency": 0.8,
            },
        )
    finally:
        await bus.stop()
    pool = await create_pool(settings)
    try:

        async def recorded() -> bool:
            return bool(
                await pool.fetchval("SELECT 1 FROM planner.processed_events WHERE event_id = $1", event_id)
            )

        await eventually(recorded, timeout=30)
        metrics = _get(port, "/metrics")
        assert metrics is not None
        assert (
            'reelfab_events_consumed_total{outcome="ok",service="planner",topic="reelfab.trend.detected.v1"}'
            in metrics.text
        )
    finally:
        await pool.close()


def test_every_service_stops_cleanly_on_sigterm(running_services: Any) -> None:
    for _name, (proc, _port) in running_services.items():
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 40
    for name, (proc, _port) in running_services.items():
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        out = _log(proc)
        assert code == 0, f"{name} exited with {code}:\n{out[-3000:]}"
        assert '"event": "stopped"' in out, f"{name} did not log a clean stop:\n{out[-2000:]}"
