"""Analytics as a running service on the real Kafka and PostgreSQL: publications and engagement
readings in, a PolicyUpdated on the compacted policy topic whose posterior for the good arm moved (by
the post weight, each post's newest reading only); an impossible reading on the dead-letter topic
naming its field; K moderation strikes (K distinct jobs) within the window out as one SubjectFlagged
DISABLED (and the subject disabled in the next policy), strikes spread wider than the window, or one
job failing K times, as nothing; a post id a second job claims dead-lettered naming the post and both
jobs, its credit staying with the first job's arms.

The service runs in-process (``run_service``) under a schema and consumer group of its own, and every
subject, post and template is unique to the run, so what other tests left on the shared topics
changes nothing here."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from reelfab.bus.kafka import KafkaBus
from reelfab.contracts.codec import default_codec
from reelfab.db import create_pool, delivery_migrations, migrate, package_migrations
from reelfab.service import run_service
from reelfab_analytics import cli
from reelfab_analytics import main as analytics_main
from tests.conftest import eventually, make_settings, unique
from tests.integration.test_planner_flow import until_serving

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

PUBLISHED, OBSERVED = "reelfab.publish.completed.v1", "reelfab.engagement.observed.v1"
POLICY, FLAGGED, FAILED = "reelfab.policy.updated.v1", "reelfab.subject.flagged.v1", "reelfab.job.failed.v1"
WEIGHT = 20.0  # analytics_post_weight: readings here have 1,000 views, so every post weighs this much


@pytest.fixture
async def analytics(stack: Any) -> AsyncIterator[dict[str, Any]]:
    from reelfab.devtools.embedded import free_port

    run = uuid.uuid4().hex[:8]
    schema = unique("analytics")
    settings = make_settings(analytics_policy_flush_s=0.2, analytics_post_weight=WEIGHT, analytics_strike_limit=3,
                             analytics_strike_window_s=3600.0, log_format="json", http_port=free_port())
    spec = dataclasses.replace(analytics_main.SPEC, name=f"analytics-{run}", db_schema=schema)  # a group of its own
    pool = await create_pool(settings)
    await migrate(pool, schema, delivery_migrations() + package_migrations("reelfab_analytics"))  # before we look
    bus = KafkaBus(settings, "test-driver", default_codec())
    await bus.start()
    stop = asyncio.Event()
    task = asyncio.create_task(run_service(spec, settings, analytics_main.wire, stop))
    world = {"bus": bus, "pool": pool, "schema": schema, "run": run, "task": task, "producer": spec.name,
             "since": datetime.now(UTC) - timedelta(seconds=5), "port": settings.http_port}
    try:
        await until_ready(world)
        yield world
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await bus.stop()
        await pool.close()


def base(**values: Any) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "occurred_at": datetime.now(UTC), "producer": "test", **values}


def publication(post: str, job: str, arm_id: str) -> dict[str, Any]:
    subject, template = arm_id.split("~")[:2]
    return base(job_id=job, subject_id=subject, consent_version=1, platform="tiktok", post_id=post, account="acc",
                published_at=datetime.now(UTC), privacy_level="SELF_ONLY", dry_run=True, template_id=template,
                arm_id=arm_id)


def reading(post: str, *, completion: float | None, at: datetime, views: int = 1000, likes: int = 10) -> dict[str, Any]:
    return base(post_id=post, platform="tiktok", observed_at=at, views=views, likes=likes, comments=0, shares=0,
                avg_watch_time_s=9.5, completion_rate=completion)


def strike(job: str, subject: str, at: datetime, reason_code: str = "spam_risk") -> dict[str, Any]:
    return base(occurred_at=at, job_id=job, stage="publisher", reason_code=reason_code,
                reason="the platform flagged the post as spam", retryable=False, subject_id=subject)


async def processed(world: dict[str, Any], *event_ids: str) -> bool:
    assert not world["task"].done(), world["task"].result()
    found = await world["pool"].fetchval(
        f'SELECT count(*) FROM "{world["schema"]}".processed_events WHERE event_id = ANY($1::text[])', list(event_ids))
    return int(found) == len(event_ids)


async def until_ready(world: dict[str, Any]) -> None:
    """The service is ready (/readyz: every consumer has joined) and consuming: a probe reading (of a post
    nobody published) is processed."""
    await until_serving(world["task"], world["port"])
    probe = reading(f"probe-{world['run']}", completion=0.5, at=datetime.now(UTC))
    await world["bus"].publish(OBSERVED, probe)
    await eventually(lambda: processed(world, probe["event_id"]), timeout=90, interval=0.2)


async def values_on(world: dict[str, Any], topic: str) -> list[dict[str, Any]]:
    codec = default_codec()
    return [codec.decode(m.value).value for m in await world["bus"].scan(topic, world["since"])]


async def policies(world: dict[str, Any], space: str) -> list[dict[str, Any]]:
    return [v for v in await values_on(world, POLICY) if v["producer"] == world["producer"] and v["arm_space"] == space]


async def test_engagement_moves_the_good_arm_s_posterior_in_the_published_policy(analytics: dict[str, Any]) -> None:
    w, run, now = analytics, analytics["run"], datetime.now(UTC)
    good, poor = f"good-{run}", f"poor-{run}"
    posts = {f"p{i}-{run}": (f"{subject}~t{i % 2}-{run}~-~bold", f"j{i}-{run}")
             for i, subject in enumerate([good, good, poor, poor])}
    for post, (arm_id, job) in posts.items():
        await w["bus"].publish(PUBLISHED, publication(post, job, arm_id))
    good_posts = [p for p, (arm, _) in posts.items() if arm.startswith(good)]
    for post, (arm_id, _) in posts.items():
        first = 0.5 if arm_id.startswith(good) else 0.1
        await w["bus"].publish(OBSERVED, reading(post, completion=first, at=now - timedelta(hours=2)))
    for post in good_posts:  # engagement grew: the newer reading replaces the post's contribution
        await w["bus"].publish(OBSERVED, reading(post, completion=0.8, at=now - timedelta(hours=1)))
    await w["bus"].publish(OBSERVED, reading(good_posts[0], completion=0.05, at=now - timedelta(hours=3)))  # late, older
    bad = reading(f"p9-{run}", completion=None, at=now, views=-7)
    await w["bus"].publish(OBSERVED, bad)

    arms: dict[str, dict[str, Any]] = {}

    async def moved() -> bool:
        for record in await policies(w, "subject"):
            arms.update({a["arm_id"]: a for a in record["arms"] if a["arm_id"] in (good, poor)})
        g = arms.get(good)
        return g is not None and g["pulls"] == 2 and abs(g["alpha"] - (1 + 2 * WEIGHT * 0.8)) < 1e-6 \
            and arms.get(poor, {}).get("pulls") == 2

    await eventually(moved, timeout=60, interval=0.2)
    g, p = arms[good], arms[poor]
    print(f"\npolicy: {good} Beta({g['alpha']:.1f}, {g['beta']:.1f}) mean {g['mean']:.3f}; "
          f"{poor} Beta({p['alpha']:.1f}, {p['beta']:.1f}) mean {p['mean']:.3f}")
    # two posts of weight 20 at 0.8 (their 0.5 and the late 0.05 replaced or ignored): Beta(33, 9)
    assert g["beta"] == pytest.approx(1 + 2 * WEIGHT * 0.2) and g["mean"] == pytest.approx(33 / 42)
    assert p["alpha"] == pytest.approx(1 + 2 * WEIGHT * 0.1) and p["mean"] == pytest.approx(5 / 42)
    assert g["mean"] > 0.5 > p["mean"] and not g["disabled"]
    records = await policies(w, "subject")
    versions = [r["policy_version"] for r in records]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)  # one record per batch, increasing
    pair = {a["arm_id"]: a for r in await policies(w, "subject_template") for a in r["arms"]}
    assert pair[f"{good}~t0-{run}"]["pulls"] == 1

    async def dead_lettered() -> list[Any]:
        return [m for m in await w["bus"].scan(OBSERVED + ".dlq", w["since"])
                if m.key == bad["post_id"].encode() and m.header("reelfab.service") == w["producer"].encode()]

    await eventually(lambda: _nonempty(dead_lettered()), timeout=30)
    [dead] = await dead_lettered()
    assert b"views is -7" in (dead.header("reelfab.error.message") or b"")
    count = await w["pool"].fetchval(f'SELECT count(*) FROM "{w["schema"]}".observations WHERE post_id = $1', bad["post_id"])
    assert count == 0

    # the report reads the same tables: the good subject leads the leaderboard
    runner = CliRunner()
    result = await asyncio.to_thread(runner.invoke, cli.app, ["report", "--json", "--space", "subject", "--top", "50",
                                                               "--schema", w["schema"]])
    assert result.exit_code == 0, result.output
    ranked = [a["arm_id"] for a in json.loads(result.output)["spaces"][0]["arms"]]
    assert ranked.index(good) < ranked.index(poor)


async def _nonempty(found: Any) -> bool:
    return bool(await found)


async def test_k_strikes_within_the_window_flag_and_disable_the_subject(analytics: dict[str, Any]) -> None:
    w, run, now = analytics, analytics["run"], datetime.now(UTC)
    struck, spread, repeated = f"struck-{run}", f"spread-{run}", f"repeated-{run}"
    wide = [strike(f"w{i}-{run}", spread, now - timedelta(hours=3 - 1.5 * i)) for i in range(3)]  # 1.5 h apart
    # one job announced failed three times (three event ids), a second job once: two strikes, not four
    again = [strike(f"r0-{run}", repeated, now - timedelta(minutes=30 - 5 * i), "moderation_rejected") for i in range(3)]
    again.append(strike(f"r1-{run}", repeated, now - timedelta(minutes=10), "moderation_rejected"))
    for value in wide + again:
        await w["bus"].publish(FAILED, value)
    close = [strike(f"c{i}-{run}", struck, now - timedelta(minutes=30 - 10 * i)) for i in range(3)]  # within 1 h
    for value in close:
        await w["bus"].publish(FAILED, value)
    found: list[dict[str, Any]] = []

    async def flagged() -> bool:
        found[:] = [v for v in await values_on(w, FLAGGED) if v["subject_id"] in (struck, spread, repeated)]
        return bool(found)

    await eventually(flagged, timeout=60, interval=0.2)
    await eventually(lambda: processed(w, *(v["event_id"] for v in wide + again + close)), timeout=30)
    await asyncio.sleep(1.0)  # a second flag, were there one, would be on the topic by now
    found[:] = [v for v in await values_on(w, FLAGGED) if v["subject_id"] in (struck, spread, repeated)]
    # the struck subject, once; the spread one never reached 3 within an hour; the repeated one has 2 jobs
    assert len(found) == 1
    [flag] = found
    assert (flag["subject_id"], flag["subject_kind"], flag["action"]) == (struck, "FACE", "DISABLED")
    assert flag["producer"] == w["producer"] and "3 moderation strikes" in flag["reason"]
    evidence = json.loads(flag["evidence"])
    assert sorted(s["job_id"] for s in evidence["strikes"]) == sorted(v["job_id"] for v in close)
    assert sorted(evidence["jobs"]) == sorted(v["job_id"] for v in close)
    kept = await w["pool"].fetchval(f'SELECT count(*) FROM "{w["schema"]}".strikes WHERE target_id = $1', repeated)
    assert kept == 4  # every failure kept, counted per job
    audit = await w["pool"].fetch(f'SELECT actor, rule, action FROM "{w["schema"]}".rule_audit WHERE target_id = $1',
                                  struck)
    assert [(r["actor"], r["rule"], r["action"]) for r in audit] == [(f"{w['producer']}/strikes", "strikes", "DISABLED")]

    async def disabled_in_policy() -> bool:
        arms = {a["arm_id"]: a for r in await policies(w, "subject") for a in r["arms"]}
        return bool(arms.get(struck, {}).get("disabled"))

    await eventually(disabled_in_policy, timeout=30, interval=0.2)  # the planner will never choose it


async def test_a_post_id_claimed_by_a_second_job_is_dead_lettered_and_keeps_its_credit(analytics: dict[str, Any]) -> None:
    w, run, now = analytics, analytics["run"], datetime.now(UTC)
    post, first, second = f"reused-{run}", f"j1-{run}", f"j2-{run}"
    mine, theirs = f"own-{run}~t0-{run}~-~bold", f"other-{run}~t1-{run}~-~bold"
    await w["bus"].publish(PUBLISHED, publication(post, first, mine))
    again = publication(post, first, mine)  # the same job announcing its post again: fine
    await w["bus"].publish(PUBLISHED, again)
    await eventually(lambda: processed(w, again["event_id"]), timeout=30, interval=0.2)
    claim = publication(post, second, theirs)
    await w["bus"].publish(PUBLISHED, claim)

    async def dead_lettered() -> list[Any]:
        return [m for m in await w["bus"].scan(PUBLISHED + ".dlq", w["since"])
                if m.key == second.encode() and m.header("reelfab.service") == w["producer"].encode()]

    await eventually(lambda: _nonempty(dead_lettered()), timeout=30)
    [dead] = await dead_lettered()
    message = (dead.header("reelfab.error.message") or b"").decode()
    assert f"post_id {post}" in message and f"job {first}" in message and f"job {second}" in message
    assert not await processed(w, claim["event_id"])
    row = await w["pool"].fetchrow(f'SELECT job_id, subject_id FROM "{w["schema"]}".posts WHERE post_id = $1', post)
    assert (row["job_id"], row["subject_id"]) == (first, f"own-{run}")
    reading_ = reading(post, completion=0.6, at=now - timedelta(minutes=1))
    await w["bus"].publish(OBSERVED, reading_)
    await eventually(lambda: processed(w, reading_["event_id"]), timeout=30, interval=0.2)
    arms = {r["arm_id"]: int(r["pulls"]) for r in await w["pool"].fetch(
        f'SELECT arm_id, pulls FROM "{w["schema"]}".arms WHERE space = $1', "subject")}
    assert arms.get(f"own-{run}") == 1 and f"other-{run}" not in arms  # the credit stays with the first job
