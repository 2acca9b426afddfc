"""What the publisher's tests share: a publisher on a real PostgreSQL schema (its tables, the delivery
tables, the outbox) with the in-memory bus, a consent view holding signed test leases, rendered
"videos" in a file store, render.completed events for them, and accounts."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from reelfab.consent.gate import ConsentGate
from reelfab.contracts.topics import RENDER_COMPLETED
from reelfab.settings import Settings
from reelfab.storage import FileStore
from reelfab_publisher import main as publisher_main
from reelfab_publisher.bootstrap import Publisher, bootstrap
from reelfab_publisher.repository import AccountRow
from reelfab_publisher.review import ReviewDesk
from reelfab_publisher.tiktok_api import TikTokClient
from reelfab_publisher.worker import Worker
from tests.integration.media_handlers_support import (
    Registry,
    context,
    event,
    job_id,
    lease,
    outbox_rows,
    view,
)


class Clock:
    """A clock tests move by hand (tokens expire, pauses end, read-backs fall due)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def make_publisher(pool: Any, schema: str, tmp: Path, *, client: TikTokClient | None = None,
                         registry: Registry | None = None, clock: Clock | None = None,
                         subjects: tuple[str, ...] = ("ada",), **settings: Any) -> tuple[Publisher, Worker]:
    from reelfab.db import migrate, package_migrations

    await migrate(pool, schema, package_migrations(publisher_main.SPEC.package))
    s = Settings(state_dir=tmp / "state", storage_root=(tmp / "objects").as_uri(), log_format="pretty",
                 publisher_token_key=None, **settings)
    ctx = context(publisher_main, pool, schema, s)
    v = view("publisher")
    for subject in subjects:
        v.apply(lease(subject))
    p = bootstrap(ctx, view=v, gate=ConsentGate(v, registry or Registry()), client=client,  # type: ignore[arg-type]
                  clock=clock, dryrun_dir=tmp / "dryrun")
    return p, Worker(p, ReviewDesk(p))


def video(p: Publisher, tmp: Path, size: int = 300_000, name: str | None = None) -> tuple[str, str]:
    """A rendered "video" in the store: (uri, sha256). The bytes are random: the platform (the emulator)
    checks sizes and ranges, not codecs."""
    store = p.store
    assert isinstance(store, FileStore)
    data = os.urandom(size)
    path = tmp / (name or f"v-{hashlib.sha256(data).hexdigest()[:8]}.mp4")
    path.write_bytes(data)
    stored = store.put_file(f"final/{path.stem}/final.mp4", path)
    return stored.uri, stored.sha256


def rendered(uri: str, sha256: str, *, job: str | None = None, subject: str = "ada", duration_s: float = 20.0,
             title: str = "A virtual dance", hashtags: tuple[str, ...] = ("dance", "ai"), tags: tuple[str, ...] = ("dance",),
             commercial: bool | None = False, passed: bool = True) -> Any:
    values = {
        "event_id": f"ev-{os.urandom(6).hex()}", "occurred_at": datetime.now(UTC), "producer": "post-producer",
        "job_id": job or job_id(), "subject_id": subject, "consent_version": 1, "final_uri": uri, "final_sha256": sha256,
        "spec_check": {"passed": passed, "width": 1080, "height": 1920, "fps": 25.0, "video_codec": "h264",
                       "video_profile": "High", "pix_fmt": "yuv420p", "audio_codec": "aac", "sample_rate": 48000,
                       "duration_s": duration_s, "problems": [] if passed else ["fps 30 is not 25"]},
        "c2pa_manifest_label": "urn:c2pa:test", "title": title, "hashtags": list(hashtags), "platform": "tiktok",
        "is_aigc": True, "template_id": "tpl-1", "template_tags": list(tags), "arm_id": f"{subject}~tpl-1~-~plain",
        "commercial": commercial,
    }
    return event("RenderCompleted", RENDER_COMPLETED, values)


async def add_account(p: Publisher, name: str, *, platform: str = "tiktok", mode: str = "direct",
                      open_id: str | None = None, access: str | None = None, refresh: str | None = None,
                      expires_in: float = 7200, refresh_expires_in: float = 15552000, auto: bool = False,
                      auto_privacy: str | None = None, sandbox: bool = False) -> None:
    now = p.clock()
    c = p.tokens.cipher
    assert await p.repo.add_account(AccountRow(
        name=name, platform=platform, mode=mode, open_id=open_id,
        access_token=c.seal(access) if access else None,
        access_expires_at=now + timedelta(seconds=expires_in) if access else None,
        refresh_token=c.seal(refresh) if refresh else None,
        refresh_expires_at=now + timedelta(seconds=refresh_expires_in) if refresh else None,
        token_problem=None, auto_approve=auto, auto_privacy=auto_privacy, sandbox=sandbox, self_only=False,
        paused_until=None, paused_reason=None))


async def announced(p: Publisher, topic: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    rows = await outbox_rows(p.pool, p.spec.db_schema)
    return [r for r in rows if topic is None or r[0] == topic]


__all__ = ["Clock", "Registry", "add_account", "announced", "lease", "make_publisher", "rendered", "video"]
