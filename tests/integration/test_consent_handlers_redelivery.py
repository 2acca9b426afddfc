"""The registry's event handlers write on the connection their unit of work hands them (the delivery
rules of docs/architecture.md): a handler that fails after its write leaves nothing behind, so the redelivery that
follows adds exactly one audit entry or post, never two."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reelfab.contracts.topics import JOB_FAILED, PUBLISH_COMPLETED
from reelfab.db import create_pool
from reelfab.settings import Settings
from reelfab_consent_registry.bootstrap import Wired
from reelfab_consent_registry.use_cases import Registry
from tests.conftest import unique
from tests.integration.consent_api_support import drop_schema, make_schema, make_wired, pg
from tests.integration.media_handlers_support import event

pytestmark = pytest.mark.postgres


@pytest.fixture
async def wired(stack: Settings, tmp_path: Path) -> AsyncIterator[Wired]:
    pool = await create_pool(stack)
    schema = unique("consent_redeliver")
    await make_schema(pool, schema)
    yield make_wired(pool, schema, stack, tmp_path)
    await drop_schema(pool, schema)
    await pool.close()


def _base() -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "occurred_at": datetime.now(UTC), "producer": "post-producer",
            "job_id": f"job-{uuid.uuid4().hex[:8]}", "subject_id": "ada-01"}


async def _deliver_twice_failing_first(registry: Registry, monkeypatch: pytest.MonkeyPatch, method: str,
                                       handler: Any, ev: Any, count: Any) -> None:
    """First delivery: the registry's write succeeds, then the handler dies before its transaction
    commits (a crash, a lost connection); second delivery: it runs through."""
    real = getattr(registry, method)
    calls = {"n": 0}

    async def write_then_die(*args: Any, **kwargs: Any) -> None:
        await real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("died after the write, before the commit")

    monkeypatch.setattr(registry, method, write_then_die)
    with pytest.raises(RuntimeError):
        await handler(ev)
    assert await count() == 0, "the failed delivery's write outlived it"
    await handler(ev)  # the redelivery
    assert await count() == 1


async def test_a_redelivered_consent_denial_adds_one_audit_entry(wired: Wired,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    registry, db = wired.registry, pg(wired.registry)
    ev = event("JobFailed", "reelfab.job.failed.v1",
               {**_base(), "stage": "post-producer", "reason_code": "consent.revoked", "reason": "revoked",
                "retryable": False})

    async def entries() -> int:
        return int(await db.pool.fetchval(
            f'SELECT count(*) FROM "{db.schema}".audit_log WHERE action = $1', "consent.denied.reported"))

    await _deliver_twice_failing_first(registry, monkeypatch, "report_denial", wired.handlers[JOB_FAILED], ev, entries)


async def test_a_redelivered_publish_adds_one_post(wired: Wired, monkeypatch: pytest.MonkeyPatch) -> None:
    registry, db = wired.registry, pg(wired.registry)
    values = {**_base(), "consent_version": 1, "post_id": "post-1", "platform": "tiktok", "account": "studio",
              "published_at": datetime.now(UTC), "privacy_level": "SELF_ONLY", "dry_run": True}
    ev = event("PublishCompleted", "reelfab.publish.completed.v1", values)

    async def posts() -> int:
        return int(await db.pool.fetchval(f'SELECT count(*) FROM "{db.schema}".posts'))

    await _deliver_twice_failing_first(registry, monkeypatch, "record_post", wired.handlers[PUBLISH_COMPLETED], ev,
                                       posts)
    processed = await db.pool.fetchval(
        f'SELECT count(*) FROM "{db.schema}".processed_events WHERE event_id = $1', values["event_id"])
    assert processed == 1
    await wired.handlers[PUBLISH_COMPLETED](ev)  # once more, after it committed: a duplicate, nothing added
    assert await posts() == 1
