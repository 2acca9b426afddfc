"""Exactly once through a real process death: the publisher runs as its own process, is killed with
SIGKILL while it uploads a video's chunks to the emulator (its uploads slowed so the kill lands
mid-upload), and a new process takes over once the dead one's claim runs out: one init, no chunk sent
twice, one post, one publish.completed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reelfab.bus.kafka import KafkaBus
from reelfab.consent.lease import public_key_text
from reelfab.contracts.codec import default_codec
from reelfab.contracts.topics import PUBLISH_COMPLETED, RENDER_COMPLETED
from reelfab.db import create_pool, delivery_migrations, migrate, package_migrations
from reelfab_publisher import main as publisher_main
from reelfab_publisher.bootstrap import bootstrap
from reelfab_publisher.desk import Approval, NotFound
from reelfab_publisher.review import ReviewDesk
from tests.conftest import eventually, make_settings, unique
from tests.integration.media_handlers_support import KEY, KEY_ID, context
from tests.integration.publisher_support import add_account, rendered, video
from tests.integration.test_planner_flow import consent_record
from tests.integration.test_publisher_flow import on_topic
from tests.tiktok_emulator import Emulator, running_emulator
from tests.unit.services.planner_samples import terms

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024


def slowed(emu: Emulator, seconds: float) -> Emulator:
    """Every chunk PUT waits ``seconds`` before the emulator takes it: a window to kill in."""
    inner = emu.app

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "PUT":
            await asyncio.sleep(seconds)
        await inner(scope, receive, send)

    emu.app = app  # type: ignore[assignment]
    return emu


def start(schema: str, name: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen([sys.executable, "-m", "tests.integration.publisher_process", schema, name], cwd=ROOT,
                            env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture
async def world(stack: Any, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    from reelfab.devtools.embedded import free_port

    run = uuid.uuid4().hex[:8]
    schema, subject = unique("publisher_kill"), f"kim-{run}"
    with running_emulator(slowed(Emulator(), 0.6)) as emu:
        user = emu.add_user("open-kill")
        overrides = dict(
            consent_public_keys=f"{KEY_ID}={public_key_text(KEY.public_key())}", log_format="json",
            state_dir=str(tmp_path / "state"), storage_root=(tmp_path / "objects").as_uri(),
            tiktok_api_url=emu.url, tiktok_client_key=emu.client_key, tiktok_client_secret=emu.client_secret,
            publisher_tick_s="0.2", publisher_status_poll_s="0.2", publisher_claim_lease_s="2",
            publisher_chunk_mb="5", http_port=str(free_port()))
        settings = make_settings(**overrides)
        env = {f"REELFAB_{k.upper()}": str(v) for k, v in overrides.items()}
        for k in ("consumer_session_timeout_ms", "consumer_heartbeat_interval_ms", "consumer_fetch_max_wait_ms"):
            env[f"REELFAB_{k.upper()}"] = str(getattr(settings, k))
        pool = await create_pool(settings)
        await migrate(pool, schema, delivery_migrations() + package_migrations("reelfab_publisher"))
        operator = bootstrap(context(publisher_main, pool, schema, settings))
        await add_account(operator, "tt", open_id="open-kill", access=user.access_token, refresh=user.refresh_token)
        bus = KafkaBus(settings, "test-driver", default_codec())
        await bus.start()
        await bus.publish("reelfab.consent.changed.v1", consent_record(terms(subject, tags=("dance",))))
        procs: list[subprocess.Popen[bytes]] = []
        try:
            yield {"emu": emu, "op": operator, "bus": bus, "subject": subject, "tmp": tmp_path, "procs": procs,
                   "start": lambda: procs.append(start(schema, f"publisher-kill-{run}", env, tmp_path / "pub.log"))}
        finally:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGTERM)
                    try:
                        p.wait(30)
                    except subprocess.TimeoutExpired:
                        os.killpg(p.pid, signal.SIGKILL)
            await bus.stop()
            await pool.close()


async def test_a_publisher_killed_mid_upload_posts_exactly_once_after_a_restart(world: dict[str, Any]) -> None:
    w = world
    emu: Emulator = w["emu"]
    desk = ReviewDesk(w["op"])
    since = datetime.now(UTC) - timedelta(seconds=5)
    uri, sha = video(w["op"], w["tmp"], 16 * MB)  # 3 chunks: 5 MB, 5 MB, 6 MB
    ev = rendered(uri, sha, subject=w["subject"])
    job = ev.record.job_id
    w["start"]()
    await w["bus"].publish(RENDER_COMPLETED, ev.record)

    async def waiting() -> bool:
        try:
            return (await desk.item(job)).status == "waiting"
        except NotFound:
            return False

    await eventually(waiting, timeout=60, interval=0.1)
    await desk.approve(job, Approval("tt", "PUBLIC_TO_EVERYONE"), "alice")
    await eventually(lambda: len(emu.requests_to("upload")) >= 1, timeout=60, interval=0.02)
    first = w["procs"][0]
    os.killpg(first.pid, signal.SIGKILL)  # mid-upload: one chunk answered, the next in flight or not sent
    first.wait(10)
    assert emu.posts == [], "killed before the upload could finish"

    w["start"]()  # a new process: the dead one's claim runs out (2 s), it resumes
    found: list[dict[str, Any]] = []

    async def published() -> bool:
        found[:] = await on_topic(w["bus"], PUBLISH_COMPLETED, job, since)
        return bool(found)

    await eventually(published, timeout=90, interval=0.2)
    await asyncio.sleep(1.0)  # anything twice would show by now
    assert len(emu.inits) == 1, "resumed the same upload, not a second init"
    assert len(emu.posts) == 1 and emu.posts[0].sha256 == sha
    assert len([r for r in emu.requests_to("upload") if r.status in (201, 206)]) == 3, "no chunk sent twice"
    assert len(await on_topic(w["bus"], PUBLISH_COMPLETED, job, since)) == 1
