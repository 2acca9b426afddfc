"""The learning loop on the real Kafka and PostgreSQL, both services running: publications and
engagement readings go to analytics, analytics publishes the policy, the planner takes it, and the
planner's next plan follows it. Two rounds: first subject A's posts do well and B's badly, and a trend
plans A; then newer readings turn it round (a post's newest reading replaces its earlier one) and the
next trend plans B. Each plan draws afresh (Thompson sampling), so the assertion rests on the policy:
A's subject arm near Beta(77, 5) against B's near Beta(3, 79), a gap no template draw can close.

Names are unique to the run (schemas, consumer groups, subjects, tags, posts)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reelfab.bus.kafka import KafkaBus
from reelfab.consent.lease import public_key_text
from reelfab.contracts.arms import Combination
from reelfab.contracts.codec import default_codec
from reelfab.db import create_pool, delivery_migrations, migrate, package_migrations
from reelfab.devtools.embedded import free_port
from reelfab.service import run_service
from reelfab_analytics import main as analytics_main
from reelfab_planner import main as planner_main
from reelfab_planner.catalogue import caption_styles
from reelfab_planner.catalogue_store import PostgresCatalogueStore
from reelfab_planner.repository import PostgresPlannerStore
from tests.conftest import eventually, make_settings, unique
from tests.integration.media_handlers_support import KEY, KEY_ID
from tests.integration.test_planner_flow import consent_record, jobs_of, trend, until_ready, until_serving
from tests.unit.services.planner_samples import template, terms

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]
PUBLISHED, OBSERVED, TRENDS = "reelfab.publish.completed.v1", "reelfab.engagement.observed.v1", "reelfab.trend.detected.v1"
EXPEDITED = "reelfab.swap.expedited.v1"
TEMPLATES = 4
WEIGHT = 20.0


@pytest.fixture
async def loop(stack: Any) -> AsyncIterator[dict[str, Any]]:
    run = uuid.uuid4().hex[:8]
    tag = f"loop{run}"
    settings = make_settings(consent_public_keys=f"{KEY_ID}={public_key_text(KEY.public_key())}", planner_max_share=1.0,
                             analytics_policy_flush_s=0.2, analytics_post_weight=WEIGHT, log_format="json")
    planner_schema, analytics_schema = unique("planner"), unique("analytics")
    pool = await create_pool(settings)
    await migrate(pool, planner_schema, delivery_migrations() + package_migrations("reelfab_planner"))
    await migrate(pool, analytics_schema, delivery_migrations() + package_migrations("reelfab_analytics"))
    catalogue = PostgresCatalogueStore(pool, planner_schema)
    templates = [f"t{i}-{run}" for i in range(TEMPLATES)]
    for i, template_id in enumerate(templates):
        await catalogue.add_template(dataclasses.replace(template(template_id, tag), sha256=f"{i}{run}".ljust(64, "0")))
    bus = KafkaBus(settings, "test-driver", default_codec())
    await bus.start()
    a, b = f"ana-{run}", f"ben-{run}"
    for subject in (a, b):
        await bus.publish("reelfab.consent.changed.v1", consent_record(terms(subject, tags=(tag,))))
    stop, ports = asyncio.Event(), (free_port(), free_port())
    tasks = [
        asyncio.create_task(run_service(dataclasses.replace(planner_main.SPEC, name=f"planner-{run}", db_schema=planner_schema),
                                        settings.model_copy(update={"http_port": ports[0]}), planner_main.wire, stop)),
        asyncio.create_task(run_service(dataclasses.replace(analytics_main.SPEC, name=f"analytics-{run}",
                                                            db_schema=analytics_schema),
                                        settings.model_copy(update={"http_port": ports[1]}), analytics_main.wire, stop)),
    ]
    store = PostgresPlannerStore(pool, planner_schema)
    try:
        world = {"bus": bus, "tag": tag, "run": run, "a": a, "b": b, "templates": templates, "store": store,
                 "task": tasks[0], "analytics": tasks[1], "port": ports[0]}
        await until_serving(tasks[1], ports[1])
        await until_ready(store, world, bus)
        yield world
    finally:
        stop.set()
        for task in tasks:
            await asyncio.wait_for(task, 60)
        await bus.stop()
        await pool.close()


def _base(**values: Any) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "occurred_at": datetime.now(UTC), "producer": "test", **values}


async def _publish_posts(w: dict[str, Any], style: str) -> dict[str, str]:
    """One published post per subject and template; post id -> subject."""
    posts: dict[str, str] = {}
    for subject in (w["a"], w["b"]):
        for template_id in w["templates"]:
            post = f"p-{subject}-{template_id}"
            arm_id = Combination(subject, template_id, None, style).arm_id
            await w["bus"].publish(PUBLISHED, _base(
                job_id=f"j-{post}", subject_id=subject, consent_version=1, platform="tiktok", post_id=post, account="acc",
                published_at=datetime.now(UTC), privacy_level="SELF_ONLY", dry_run=True, template_id=template_id,
                arm_id=arm_id))
            posts[post] = subject
    return posts


async def _read(w: dict[str, Any], posts: dict[str, str], good: str, at: datetime) -> None:
    for post, subject in posts.items():
        await w["bus"].publish(OBSERVED, _base(
            post_id=post, platform="tiktok", observed_at=at, views=1000, likes=10, comments=0, shares=0,
            avg_watch_time_s=9.0, completion_rate=0.95 if subject == good else 0.02))


async def _planner_holds(w: dict[str, Any], good: str, bad: str) -> dict[str, float]:
    """The subject means in the planner's stored policy once ``good`` leads ``bad`` clearly."""
    means: dict[str, float] = {}

    async def leads() -> bool:
        assert not w["task"].done(), w["task"].result()
        assert not w["analytics"].done(), w["analytics"].result()
        held = (await w["store"].policy()).get("subject")
        if held is None:
            return False
        means.clear()
        means.update({a["arm_id"]: a["alpha"] / (a["alpha"] + a["beta"]) for a in held[1] if a["arm_id"] in (good, bad)})
        return means.get(good, 0.0) > 0.9 and means.get(bad, 1.0) < 0.1

    await eventually(leads, timeout=60, interval=0.2)
    await asyncio.sleep(0.5)  # the handler saves the policy, then takes it into memory: let it finish
    return means


async def _trend_plan(w: dict[str, Any]) -> list[dict[str, Any]]:
    since = datetime.now(UTC) - timedelta(seconds=5)
    ask = trend(w["run"], [w["tag"]], max_jobs=2)
    await w["bus"].publish(TRENDS, ask)
    found: list[dict[str, Any]] = []

    async def planned() -> bool:
        found[:] = await jobs_of(w["bus"], EXPEDITED, ask["trend_id"], since)
        return len(found) == 2

    await eventually(planned, timeout=30, interval=0.2)
    return found


async def test_engagement_changes_the_policy_and_the_next_plan(loop: dict[str, Any]) -> None:
    w = loop
    style = caption_styles(None)[0].style_id
    posts = await _publish_posts(w, style)
    start = datetime.now(UTC) - timedelta(hours=3)

    await _read(w, posts, w["a"], start)
    first_means = await _planner_holds(w, w["a"], w["b"])
    first = await _trend_plan(w)
    print(f"\nround 1: policy means {first_means}; planned {[j['subject_id'] for j in first]}")
    assert {j["subject_id"] for j in first} == {w["a"]}

    await _read(w, posts, w["b"], start + timedelta(hours=1))  # newer readings: B's posts took off, A's faded
    second_means = await _planner_holds(w, w["b"], w["a"])
    second = await _trend_plan(w)
    print(f"round 2: policy means {second_means}; planned {[j['subject_id'] for j in second]}")
    assert {j["subject_id"] for j in second} == {w["b"]}
    assert not {j["arm_id"] for j in first} & {j["arm_id"] for j in second}  # nothing planned twice
