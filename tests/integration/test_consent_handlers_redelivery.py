"""The registry's event handlers write on the connection the delivery hands them (DESIGN.md delivery
rules): a handler that fails after its write leaves nothing behind, so the redelivery that follows adds
exactly one audit entry or post, never two."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reelfab.db import create_pool
from reelfab.settings import Settings
from reelfab_consent_registry import handlers
from reelfab_consent_registry.registry import Registry
from tests.conftest import unique
from tests.integration.consent_api_support import drop_schema, make_registry, make_schema
from tests.integration.media_handlers_support import event

pytestmark = pytest.mark.postgres


@pytest.fixture
async def registry(stack: Settings, tmp_path: Path) -> AsyncIterator[Registry]:
    pool = await create_pool(stack)
    schema = unique("consent_redeliver")
    await make_schema(pool, schema)
    yield make_registry(pool, schema, stack, tmp_path)
    await drop_schema(pool, schema)
    await pool.close()


def _base() -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "occurred_at": datetime.now(UTC), "producer": "post-producer",
            "job_id": f"job-{uuid.uuid4().hex[:8]}", "face_id": "ada-01"}


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


async def test_a_redelivered_consent_denial_adds_one_audit_entry(registry: Registry,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ev = event("JobFailed", "reelfab.job.failed.v1",
               {**_base(), "stage": "post-producer", "reason_code": "consent.revoked", "reason": "revoked",
                "retryable": False})

    async def entries() -> int:
        return int(await registry.pool.fetchval(
            f'SELECT count(*) FROM "{registry.schema}".audit_log WHERE action = $1', "consent.denied.reported"))

    await _deliver_twice_failing_first(registry, monkeypatch, "report_denial",
                                       handlers.on_job_failed(None, registry), ev, entries)  # type: ignore[arg-type]


async def test_a_redelivered_publish_adds_one_post(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    values = {**_base(), "consent_version": 1, "post_id": "post-1", "platform": "tiktok", "account": "studio",
              "published_at": datetime.now(UTC), "privacy_level": "SELF_ONLY", "dry_run": True}
    ev = event("PublishCompleted", "reelfab.publish.completed.v1", values)

    async def posts() -> int:
        return int(await registry.pool.fetchval(f'SELECT count(*) FROM "{registry.schema}".posts'))

    await _deliver_twice_failing_first(registry, monkeypatch, "record_post",
                                       handlers.on_publish_completed(None, registry), ev, posts)  # type: ignore[arg-type]
    processed = await registry.pool.fetchval(
        f'SELECT count(*) FROM "{registry.schema}".processed_events WHERE event_id = $1', values["event_id"])
    assert processed == 1
