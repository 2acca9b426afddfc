"""The publisher as a running service on the real Kafka and PostgreSQL: render.completed on the topic →
the review queue → an operator's approval → publish.completed on the topic, once with the dry-run
platform (and engagement read back onto engagement.observed) and once through the TikTok client to the
emulator. Consent comes as signed leases on the consent topic; every name is unique to the run."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reelfab.bus.kafka import KafkaBus
from reelfab.consent.lease import public_key_text
from reelfab.contracts.codec import default_codec
from reelfab.contracts.topics import ENGAGEMENT_OBSERVED, PUBLISH_COMPLETED, RENDER_COMPLETED
from reelfab.db import create_pool
from reelfab.service import run_service
from reelfab_publisher import main as publisher_main
from reelfab_publisher.bootstrap import bootstrap
from reelfab_publisher.desk import Approval
from reelfab_publisher.review import ReviewDesk
from tests.conftest import eventually, make_settings, unique
from tests.integration.media_handlers_support import KEY, KEY_ID, context
from tests.integration.publisher_support import add_account, rendered, video
from tests.integration.test_planner_flow import consent_record
from tests.tiktok_emulator import running_emulator
from tests.unit.services.planner_samples import terms

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@pytest.fixture
async def running(stack: Any, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    from reelfab.db import delivery_migrations, migrate, package_migrations
    from reelfab.devtools.embedded import free_port

    run = uuid.uuid4().hex[:8]
    schema, subject = unique("publisher"), f"ada-{run}"
    with running_emulator() as emu:
        settings = make_settings(
            consent_public_keys=f"{KEY_ID}={public_key_text(KEY.public_key())}", log_format="json",
            state_dir=tmp_path / "state", storage_root=(tmp_path / "objects").as_uri(),
            publisher_dryrun_dir=tmp_path / "dryrun", publisher_tick_s=0.1, publisher_status_poll_s=0.1,
            publisher_readback_first_s=1.0, tiktok_api_url=emu.url, tiktok_client_key=emu.client_key,
            tiktok_client_secret=emu.client_secret, http_port=free_port())
        pool = await create_pool(settings)
        await migrate(pool, schema, delivery_migrations() + package_migrations("reelfab_publisher"))
        bus = KafkaBus(settings, "test-driver", default_codec())
        await bus.start()
        await bus.publish("reelfab.consent.changed.v1", consent_record(terms(subject, tags=("dance",))))
        # the operator's side: the same tables and key, as `reelfab review` opens them
        operator = bootstrap(context(publisher_main, pool, schema, settings))
        spec = dataclasses.replace(publisher_main.SPEC, name=f"publisher-{run}", db_schema=schema)
        stop = asyncio.Event()
        task = asyncio.create_task(run_service(spec, settings, publisher_main.wire, stop))
        try:
            yield {"bus": bus, "subject": subject, "op": operator, "desk": ReviewDesk(operator), "emu": emu,
                   "tmp": tmp_path, "task": task, "settings": settings}
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)
            await bus.stop()
            await pool.close()


async def on_topic(bus: KafkaBus, topic: str, key: str, since: datetime) -> list[dict[str, Any]]:
    return [bus.codec.decode(m.value).value for m in await bus.scan(topic, since) if m.key == key.encode()]


async def through_review(f: dict[str, Any], account: str, privacy: str) -> tuple[Any, list[dict[str, Any]]]:
    since = datetime.now(UTC) - timedelta(seconds=5)
    uri, sha = video(f["op"], f["tmp"])
    ev = rendered(uri, sha, subject=f["subject"])
    await f["bus"].publish(RENDER_COMPLETED, ev.record)
    job = ev.record.job_id

    async def waiting() -> bool:
        assert not f["task"].done(), f["task"].exception()
        return job in [i.job_id for i in await f["desk"].waiting()]

    await eventually(waiting, timeout=60)
    await f["desk"].approve(job, Approval(account, privacy), "operator-alice")
    found: list[dict[str, Any]] = []

    async def published() -> bool:
        found[:] = await on_topic(f["bus"], PUBLISH_COMPLETED, job, since)
        return bool(found)

    await eventually(published, timeout=60, interval=0.2)
    return ev, found


async def test_dry_run_render_to_review_to_publish_and_engagement_over_the_bus(running: dict[str, Any]) -> None:
    f = running
    await add_account(f["op"], "dry", platform="dryrun")
    ev, found = await through_review(f, "dry", "PUBLIC_TO_EVERYONE")
    done, = found
    assert done["dry_run"] is True and done["subject_id"] == f["subject"] and done["account"] == "dry"
    assert list((f["tmp"] / "dryrun" / "dry").glob(f"{done['post_id']}.json"))
    since = datetime.now(UTC) - timedelta(seconds=30)

    async def read_back() -> bool:
        return bool(await on_topic(f["bus"], ENGAGEMENT_OBSERVED, done["post_id"], since))

    await eventually(read_back, timeout=30, interval=0.3)


async def test_tiktok_render_to_review_to_publish_over_the_bus(running: dict[str, Any]) -> None:
    f = running
    user = f["emu"].add_user("open-flow")
    await add_account(f["op"], "tt", open_id="open-flow", access=user.access_token, refresh=user.refresh_token)
    ev, found = await through_review(f, "tt", "PUBLIC_TO_EVERYONE")
    done, = found
    post, = f["emu"].posts
    assert done["post_id"] == post.post_id and done["dry_run"] is False and done["privacy_level"] == "PUBLIC_TO_EVERYONE"
    assert post.post_info is not None and post.post_info["is_aigc"] is True
    assert post.sha256 == ev.record.final_sha256
