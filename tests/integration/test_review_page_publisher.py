"""The review page of the real publisher service, in a real browser: the publisher runs as a service
(run_service) on the real Kafka and PostgreSQL; a real H.264 MP4 goes into the file store and its
render.completed onto the bus. Debian's headless Chromium logs in with an operator's token, waits for the
job to reach the queue, plays the video the service serves, chooses the dry-run account and a privacy
level, consents and approves; the poster then posts it: publish.completed on the topic, the dry-run
sidecar (is_aigc) beside the posted MP4, the approval in the review audit under the operator's name, and
the job page showing it published. A screenshot of that page lands in
.reelfab/test-artifacts/review-page-published.png.

The service's HTTP server runs in this test's event loop, so every selenium call (blocking) runs in a
thread (asyncio.to_thread) while the loop serves the browser."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from reelfab.bus.kafka import KafkaBus
from reelfab.consent.lease import public_key_text
from reelfab.contracts.codec import default_codec
from reelfab.contracts.topics import PUBLISH_COMPLETED, RENDER_COMPLETED
from reelfab.db import create_pool
from reelfab.service import run_service
from reelfab.storage import FileStore, sha256_file
from reelfab_publisher import main as publisher_main
from reelfab_publisher.bootstrap import Publisher, bootstrap
from reelfab_publisher.dryrun import dry_run_post_id
from reelfab_publisher.review import token_sha256
from tests.conftest import eventually, make_settings, unique
from tests.integration.media_handlers_support import KEY, KEY_ID, context, job_id
from tests.integration.publisher_support import add_account, rendered
from tests.integration.test_planner_flow import consent_record
from tests.integration.test_publisher_flow import on_topic
from tests.integration.test_review_page_browser import (  # noqa: F401 - chromium, browser: fixtures
    ARTIFACTS,
    browser,
    chromium,
    make_mp4,
    play_video,
    save_screenshot,
    wait,
)
from tests.unit.services.planner_samples import terms

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.timeout(900)]

OPERATOR = "alice"
ACCOUNT = "dry"
PRIVACY = "FOLLOWER_OF_CREATOR"
SECONDS = 4.0  # the MP4's length, announced as the render's duration
QUEUE_WAIT_S = 60.0  # render.completed reaches the queue through Kafka (a fresh consumer group joins first)
SHOT = "review-page-published.png"


@dataclasses.dataclass
class Running:
    bus: KafkaBus  # the test's own producer and scanner on the real broker
    op: Publisher  # the operator's side: the service's tables, as `reelfab review` opens them
    task: asyncio.Task[None]
    url: str
    token: str
    subject: str
    tmp: Path


@pytest.fixture
async def running(stack: Any, tmp_path: Path) -> AsyncIterator[Running]:
    from reelfab.db import delivery_migrations, migrate, package_migrations
    from reelfab.devtools.embedded import free_port

    run = uuid.uuid4().hex[:8]
    schema, subject, port = unique("publisher_page"), f"ada-page-{run}", free_port()
    settings = make_settings(
        consent_public_keys=f"{KEY_ID}={public_key_text(KEY.public_key())}", log_format="json",
        state_dir=tmp_path / "state", storage_root=(tmp_path / "objects").as_uri(),
        publisher_dryrun_dir=tmp_path / "dryrun", publisher_tick_s=0.1, http_port=port,
    )  # fmt: skip
    pool = await create_pool(settings)
    await migrate(pool, schema, delivery_migrations() + package_migrations("reelfab_publisher"))
    bus = KafkaBus(settings, "test-driver", default_codec())
    await bus.start()
    await bus.publish("reelfab.consent.changed.v1", consent_record(terms(subject, tags=("dance",))))
    op = bootstrap(context(publisher_main, pool, schema, settings))
    await add_account(op, ACCOUNT, platform="dryrun")
    token = secrets.token_urlsafe(24)
    assert await op.repo.add_operator(OPERATOR, token_sha256(token))
    spec = dataclasses.replace(publisher_main.SPEC, name=f"publisher-page-{run}", db_schema=schema)
    stop = asyncio.Event()
    task = asyncio.create_task(run_service(spec, settings, publisher_main.wire, stop))
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:

            async def serving() -> bool:
                assert not task.done(), task.exception() if not task.cancelled() else "cancelled"
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(serving, timeout=60, interval=0.1)
        yield Running(bus, op, task, base, token, subject, tmp_path)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await bus.stop()
        await pool.close()


def store_video(p: Publisher, mp4: Path, job: str) -> tuple[str, str]:
    """The MP4 in the service's file store, where the post-producer puts a final render: (uri, sha256)."""
    store = p.store
    assert isinstance(store, FileStore)
    stored = store.put_file(f"final/{job}/final.mp4", mp4)
    return stored.uri, stored.sha256


def log_in(driver: WebDriver, url: str, token: str) -> None:
    driver.get(f"{url}/review/")
    wait(driver).until(ec.presence_of_element_located((By.ID, "token")))  # no session yet: the login page
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "login").click()
    wait(driver).until(ec.presence_of_element_located((By.ID, "operator")))
    assert driver.find_element(By.ID, "operator").text == OPERATOR


def wait_in_queue(driver: WebDriver, job: str, task: asyncio.Task[None]) -> WebElement:
    """The job's row in the queue, reloading the page until the service has taken it off the bus."""

    def listed(d: WebDriver) -> WebElement | bool:
        assert not task.done(), "the publisher service stopped"
        rows = d.find_elements(By.CSS_SELECTOR, f'#waiting tr[data-job="{job}"]')
        if rows:
            return rows[0]
        d.refresh()
        return False

    found = WebDriverWait(driver, QUEUE_WAIT_S, poll_frequency=0.5).until(
        listed, f"job {job} did not reach the review queue within {QUEUE_WAIT_S:.0f} s"
    )
    assert isinstance(found, WebElement)
    return found


def review_and_approve(
    driver: WebDriver, url: str, token: str, job: str, task: asyncio.Task[None]
) -> dict[str, Any]:
    log_in(driver, url, token)
    row = wait_in_queue(driver, job, task)
    assert "A virtual dance in the browser" in row.text
    row.find_element(By.LINK_TEXT, job).click()
    wait(driver).until(ec.presence_of_element_located((By.ID, "player")))
    assert driver.find_element(By.ID, "job-id").text == job
    assert driver.find_element(By.ID, "state").text == "waiting"

    playback = play_video(driver)
    duration = driver.execute_script("return document.getElementById('player').duration;")
    assert playback["readyState"] >= 2 and playback["videoWidth"] == 540, playback
    assert abs(duration - SECONDS) < 0.5, duration

    account = Select(driver.find_element(By.ID, "account"))
    choosable = [o.get_attribute("value") for o in account.options if o.is_enabled()]
    assert choosable == [ACCOUNT], choosable
    account.select_by_value(ACCOUNT)
    wait(driver).until(lambda d: d.find_element(By.ID, "privacy_level").is_enabled())
    privacy = Select(driver.find_element(By.ID, "privacy_level"))
    offered = [
        o.get_attribute("value") for o in privacy.options if o.is_enabled() and o.get_attribute("value")
    ]
    assert PRIVACY in offered, offered
    privacy.select_by_value(PRIVACY)
    assert driver.find_element(By.ID, "aigc-notice").is_displayed()

    driver.find_element(By.ID, "consent").click()
    driver.find_element(By.ID, "approve").click()
    wait(driver).until(ec.presence_of_element_located((By.ID, "flash")))
    flash = driver.find_element(By.ID, "flash").text
    assert f"Approved {job}" in flash, flash
    assert driver.find_elements(By.CSS_SELECTOR, f'#waiting tr[data-job="{job}"]') == []
    return playback


def published_page(driver: webdriver.Chrome, url: str, job: str, shot: Path) -> dict[str, str]:
    driver.get(f"{url}/review/jobs/{job}")
    wait(driver).until(ec.presence_of_element_located((By.ID, "state")))
    page = {
        "state": driver.find_element(By.ID, "state").text,
        "decided_by": driver.find_element(By.ID, "decided-by").text,
        "decision": driver.find_element(By.ID, "decision").text,
    }
    save_screenshot(driver, shot)
    return page


async def test_an_operator_approves_in_chromium_and_the_publisher_posts_it(
    running: Running,
    browser: webdriver.Chrome,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    f = running
    since = datetime.now(UTC) - timedelta(seconds=5)
    mp4 = await asyncio.to_thread(make_mp4, tmp_path / "final.mp4", SECONDS)
    job = job_id()
    uri, sha = await asyncio.to_thread(store_video, f.op, mp4, job)
    ev = rendered(
        uri, sha, job=job, subject=f.subject, duration_s=SECONDS, title="A virtual dance in the browser"
    )
    await f.bus.publish(RENDER_COMPLETED, ev.record)

    playback = await asyncio.to_thread(review_and_approve, browser, f.url, f.token, job, f.task)

    found: list[dict[str, Any]] = []

    async def posted() -> bool:
        assert not f.task.done(), "the publisher service stopped"
        found[:] = await on_topic(f.bus, PUBLISH_COMPLETED, job, since)
        return bool(found)

    await eventually(posted, timeout=60, interval=0.2)
    (done,) = found
    assert done["dry_run"] is True and done["account"] == ACCOUNT and done["privacy_level"] == PRIVACY, done
    assert done["subject_id"] == f.subject and done["post_id"] == dry_run_post_id(job), done

    folder = f.tmp / "dryrun" / ACCOUNT
    sidecar = json.loads((folder / f"{done['post_id']}.json").read_text(encoding="utf-8"))
    assert sidecar["is_aigc"] is True and sidecar["post_info"]["is_aigc"] is True, sidecar
    assert sidecar["job_id"] == job and sidecar["dry_run"] is True and sidecar["sha256"] == sha, sidecar
    assert sidecar["post_info"]["privacy_level"] == PRIVACY, sidecar
    assert sha256_file(folder / f"{done['post_id']}.mp4") == sha  # the bytes reviewed are the bytes posted

    audit = await f.op.repo.audit_of(job)
    approved = [a for a in audit if a["action"] == "approved"]
    assert [a["actor"] for a in approved] == [OPERATOR], audit
    assert approved[0]["detail"]["account"] == ACCOUNT and approved[0]["detail"]["privacy_level"] == PRIVACY
    assert approved[0]["detail"]["is_aigc"] is True and approved[0]["detail"]["sha256"] == sha
    assert [a["action"] for a in audit] == ["approved", "published"], audit

    page = await asyncio.to_thread(published_page, browser, f.url, job, tmp_path / SHOT)
    assert page["state"] == "published" and page["decided_by"] == OPERATOR, page
    assert done["post_id"] in page["decision"], page
    assert playback["readyState"] >= 2
    assert (tmp_path / SHOT).stat().st_size > 10_000 and (ARTIFACTS / SHOT).stat().st_size > 10_000
