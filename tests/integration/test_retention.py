"""`reelfab storage prune` on the real stack: terminal events on the real topics decide which
objects of a temp store go; old delivery rows go from a fresh schema while recent or pending
ones stay."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from reelfab.cli import app
from reelfab.storage import FileStore
from tests.conftest import unique

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

runner = CliRunner()
H = timedelta(hours=1)
D = timedelta(days=1)
POLICY_ENV = {
    "REELFAB_RETENTION_INTERMEDIATE_GRACE": "PT6H",
    "REELFAB_RETENTION_ORPHAN_AGE": "P7D",
    "REELFAB_RETENTION_INPUT_MAX_AGE": "P10D",
    "REELFAB_RETENTION_FINAL_MAX_AGE": "P30D",
    "REELFAB_RETENTION_REDELIVERY_HORIZON": "P7D",
    "REELFAB_RETENTION_RENDERED_IS_FINISHED": "true",
    "COLUMNS": "250",
}


def _base(job_id: str, at: datetime) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "occurred_at": at, "producer": "retention-test", "job_id": job_id}


def rendered(job_id: str, at: datetime) -> tuple[str, dict[str, Any]]:
    spec = {"passed": True, "width": 1080, "height": 1920, "fps": 25.0, "video_codec": "h264", "video_profile": "High",
            "pix_fmt": "yuv420p", "audio_codec": "aac", "sample_rate": 48000, "duration_s": 3.0, "problems": []}
    return "reelfab.render.completed.v1", {
        **_base(job_id, at), "subject_id": "subj", "consent_version": 1, "final_uri": f"file:///x/{job_id}/final.mp4",
        "final_sha256": "0" * 64, "spec_check": spec, "c2pa_manifest_label": None, "title": "t", "hashtags": [],
        "platform": "tiktok", "is_aigc": True, "template_id": "tpl", "arm_id": None,
    }


def published(job_id: str, at: datetime) -> tuple[str, dict[str, Any]]:
    return "reelfab.publish.completed.v1", {
        **_base(job_id, at), "subject_id": "subj", "consent_version": 1, "platform": "tiktok", "post_id": f"p-{job_id}",
        "account": "acct", "published_at": at, "privacy_level": "SELF_ONLY", "dry_run": True, "share_url": None,
        "template_id": None, "arm_id": None,
    }


def failed(job_id: str, at: datetime) -> tuple[str, dict[str, Any]]:
    return "reelfab.job.failed.v1", {
        **_base(job_id, at), "stage": "swapper-gpu", "reason_code": "test", "reason": "test", "retryable": False,
        "attempts": 1,
    }


async def _publish(settings: Any, events: list[tuple[str, dict[str, Any]]]) -> None:
    from reelfab.bus.kafka import KafkaBus
    from reelfab.contracts.codec import default_codec

    bus = KafkaBus(settings, "retention-test", default_codec(settings))
    await bus.start()
    try:
        for topic, value in events:
            await bus.publish(topic, value)
    finally:
        await bus.stop()


def _put(store: FileStore, key: str, age: timedelta, size: int = 64) -> None:
    store.put_bytes(key, os.urandom(size))
    t = (datetime.now(UTC) - age).timestamp()
    os.utime(store.root / key, (t, t))


async def _cli(*args: str, env: dict[str, str] | None = None) -> Any:
    # the command runs its own event loop: give it a thread of its own
    return await asyncio.to_thread(runner.invoke, app, list(args), env={**POLICY_ENV, **(env or {})})


async def test_prune_deletes_exactly_what_the_policy_lets_go(stack: Any, pg_pool: Any, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    job = {name: unique(f"rt-{name}").replace("_", "-") for name in
           ("published", "failed", "rendered", "fresh", "running", "orphan", "oldfinal")}
    await _publish(stack, [
        published(job["published"], now - 8 * H), rendered(job["published"], now - 9 * H),
        failed(job["failed"], now - 10 * H),
        rendered(job["rendered"], now - 7 * H),
        published(job["fresh"], now - 1 * H),
    ])
    store = FileStore(tmp_path / "store")
    expect_gone = {
        f"jobs/{job['published']}/mezzanine.mkv": 9 * H, f"jobs/{job['published']}/track.json": 9 * H,
        f"inputs/{job['published']}/source.png": 9 * H, f"inputs/{job['published']}/t.mp4": 9 * H,
        f"jobs/{job['failed']}/mezzanine.mkv": 11 * H, f"inputs/{job['failed']}/source.png": 11 * H,
        f"jobs/{job['rendered']}/mezzanine.mkv": 8 * H, f"jobs/{job['rendered']}/track.json": 8 * H,
        f"jobs/{job['orphan']}/mezzanine.mkv": 8 * D, f"jobs/{job['orphan']}/track.json": 8 * D,
        f"jobs/{job['oldfinal']}/final.mp4": 31 * D,
        f"jobs/{job['running']}/.part-abc123": 2 * D,
    }
    expect_kept = {
        f"jobs/{job['published']}/final.mp4": 8 * H, f"jobs/{job['rendered']}/final.mp4": 7 * H,
        f"jobs/{job['fresh']}/mezzanine.mkv": 2 * H, f"jobs/{job['fresh']}/track.json": 2 * H,
        f"inputs/{job['fresh']}/source.png": 2 * H,
        f"jobs/{job['running']}/mezzanine.mkv": 3 * D, f"jobs/{job['running']}/track.json": 3 * D,
        f"inputs/{job['running']}/source.png": 3 * D, f"inputs/{job['orphan']}/source.png": 8 * D,
        "consent/subj-1/0f0f.sealed": 1000 * D, "consent/subj-1/.part-zz": 1000 * D,
        "models/notes.txt": 1000 * D, f"jobs/{job['published']}/notes.txt": 1000 * D,
    }
    for key, age in {**expect_gone, **expect_kept}.items():
        _put(store, key, age)
    gone_bytes = 64 * len(expect_gone)

    # delivery rows in a schema of the test's own
    from reelfab.db import delivery_migrations, migrate

    schema = unique("rt")
    await migrate(pg_pool, schema, delivery_migrations())
    try:
        ins = f'INSERT INTO "{schema}".outbox (topic, key, value, created_at, published_at) VALUES ($1, $2, $3, $4, $5)'
        await pg_pool.execute(ins, "t", "old-published", b"x", now - 9 * D, now - 8 * D)
        await pg_pool.execute(ins, "t", "recent-published", b"x", now - 2 * H, now - H)
        await pg_pool.execute(ins, "t", "old-pending", b"x", now - 30 * D, None)
        pins = f'INSERT INTO "{schema}".processed_events (event_id, topic, handler, processed_at) VALUES ($1, $2, $3, $4)'
        await pg_pool.execute(pins, "old-mark", "t", "h", now - 8 * D)
        await pg_pool.execute(pins, "recent-mark", "t", "h", now - 6 * D)

        root = store.root_uri
        from reelfab.retention.adapters import delivery_schemas

        assert any(t.schema == schema and t.outbox and t.processed_events for t in await delivery_schemas(pg_pool))

        # with Kafka away nothing is decided, so nothing goes
        from reelfab.errors import StackError
        from reelfab.settings import get_settings

        get_settings.cache_clear()
        try:
            away = await _cli("storage", "prune", "--apply", "--root", root, "--schema", schema,
                              env={"REELFAB_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
        finally:
            get_settings.cache_clear()  # the next command reads the real stack's settings again
        assert isinstance(away.exception, StackError) and "nothing was pruned" in str(away.exception)
        assert {o.key for o in store.list_objects()} == set(expect_gone) | set(expect_kept)

        # dry run: says exactly what would go, deletes nothing
        dry = await _cli("storage", "prune", "--json", "--root", root, "--schema", schema)
        assert dry.exit_code == 0, dry.output
        report = json.loads(dry.stdout)
        assert report["applied"] is False
        assert {o["key"] for o in report["objects"]} == set(expect_gone), report["objects"]
        assert report["to_delete"]["total"] == {"objects": len(expect_gone), "bytes": gone_bytes}
        assert {(r["table"], r["rows"]) for r in report["rows"]} == {("outbox", 1), ("processed_events", 1)}
        assert {o.key for o in store.list_objects()} == set(expect_gone) | set(expect_kept)
        assert await pg_pool.fetchval(f'SELECT count(*) FROM "{schema}".outbox') == 3

        # apply (the table, as an operator sees it)
        applied = await _cli("storage", "prune", "--apply", "--root", root, "--schema", schema)
        assert applied.exit_code == 0, applied.output
        assert f"freed 768 B ({gone_bytes} bytes, {len(expect_gone)} objects) and 2 delivery rows" in applied.stdout
        assert {o.key for o in store.list_objects()} == set(expect_kept)
        assert not (store.root / "jobs" / job["orphan"]).exists()  # emptied folders go too
        assert sorted(r["key"] for r in await pg_pool.fetch(f'SELECT key FROM "{schema}".outbox')) == [
            "old-pending", "recent-published"]
        assert [r["event_id"] for r in await pg_pool.fetch(f'SELECT event_id FROM "{schema}".processed_events')] == [
            "recent-mark"]

        # usage after: the gauges' view, per kind
        usage = await _cli("storage", "usage", "--json", "--root", root)
        assert usage.exit_code == 0, usage.output
        kinds = json.loads(usage.stdout)["usage"]
        assert kinds["consent"] == {"objects": 2, "bytes": 128}
        assert kinds["intermediate"]["objects"] == 4 and kinds["final"]["objects"] == 2
        assert kinds["total"]["objects"] == len(expect_kept)

        # a second run finds nothing more to do
        again = await _cli("storage", "prune", "--json", "--apply", "--root", root, "--schema", schema)
        assert again.exit_code == 0 and json.loads(again.stdout)["objects"] == []
    finally:
        await pg_pool.execute(f'DROP SCHEMA "{schema}" CASCADE')


async def test_the_retention_worker_prunes_every_round_and_survives_an_unreachable_kafka(
    stack: Any, tmp_path: Path
) -> None:
    import socket

    import httpx

    store = FileStore(tmp_path / "store")
    _put(store, "jobs/rt-worker/.part-crashed", 2 * D)  # a crashed write: partial past its age
    _put(store, "consent/ada/x.sealed", 400 * D)  # never
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from reelfab.settings import get_settings

    get_settings.cache_clear()  # the CLI reads settings once per process: this run gets a Kafka that is away
    try:
        down = await _cli("storage", "prune", "--apply", "--no-rows", "--root", store.root.as_uri(), "--every",
                          "0.1", "--rounds", "2", env={"REELFAB_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"})
    finally:
        get_settings.cache_clear()
    assert down.exit_code == 0, down.output
    assert down.output.count("retention round failed, nothing deleted") == 2
    assert (store.root / "jobs/rt-worker/.part-crashed").exists()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        metrics_port = s.getsockname()[1]
    up = await _cli("storage", "prune", "--apply", "--no-rows", "--root", store.root.as_uri(), "--every", "0.1",
                    "--rounds", "2", "--metrics-port", str(metrics_port))
    assert up.exit_code == 0, up.output
    assert up.output.count("freed") == 2 and not (store.root / "jobs/rt-worker/.part-crashed").exists()
    assert (store.root / "consent/ada/x.sealed").exists()
    async with httpx.AsyncClient() as client:
        scraped = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)).text
    assert 'reelfab_storage_bytes{kind="consent"} 64.0' in scraped
