"""`reelfab demo`: the factory's media path on this machine, end to end, with generated people
(no real person). It starts the consent registry, swapper-gpu, post-producer and publisher in one
process over the local stack, gives a virtual person consent, submits a swap job and follows it to a
signed, platform-spec MP4, then through the publisher's review queue (the demo approves as an operator,
recorded as "demo-operator") to a post: on the dry-run platform (a local folder) by default, or through
the TikTok client to REELFAB_TIKTOK_API_URL with ``--publish-to tiktok --account NAME``."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import httpx

from reelfab.contracts.topics import (
    JOB_FAILED,
    PUBLISH_COMPLETED,
    RENDER_COMPLETED,
    SWAP_COMPLETED,
    SWAP_REQUESTED,
)
from reelfab.settings import Settings

SUBJECT = "demo-vera"


@dataclass(frozen=True)
class DemoResult:
    final: Path
    face: Path
    template: Path
    music: Path
    job_seconds: float  # from publishing the swap job to render.completed on the topic
    post: dict[str, Any] | None = None  # publish.completed's value


async def run_demo(settings: Settings, folder: Path, say: Callable[[str], None], *, publish_to: str = "dryrun",
                   account: str | None = None) -> DemoResult:
    import asyncpg

    from reelfab.bus.kafka import KafkaBus
    from reelfab.contracts.codec import default_codec
    from reelfab.devtools.embedded import RunningService
    from reelfab.devtools.synthetic import music_bed, template_clip, virtual_person
    from reelfab.media.c2pa_sign import read_manifest
    from reelfab.storage import open_store
    from reelfab_consent_registry import main as registry_main
    from reelfab_consent_registry import tokens
    from reelfab_post_producer import main as post_main
    from reelfab_publisher import main as publisher_main
    from reelfab_swapper_gpu import main as swapper_main

    if publish_to not in ("dryrun", "tiktok", "none"):
        raise ValueError(f"--publish-to {publish_to!r}: one of dryrun, tiktok, none")
    if publish_to == "tiktok" and not account:
        raise ValueError("--publish-to tiktok needs --account NAME (`reelfab accounts add NAME …` first)")
    if publish_to != "none" and account:
        await _check_account(account, publish_to)  # before minutes of swapping, not after

    settings = settings.model_copy(update={"consent_asset_kind": "synthetic", "log_level": "WARNING"})
    folder.mkdir(parents=True, exist_ok=True)
    say("generating a virtual person, a template clip and a music bed (no real person in any of them)")
    face = folder / "vera.png"
    cv2.imwrite(str(face), virtual_person(1))
    clip = await asyncio.to_thread(template_clip, folder / "template.mp4", seed=1, seconds=8.0, size=(720, 1280))
    music = await asyncio.to_thread(music_bed, folder / "bed.m4a", seed=1, seconds=20.0)

    registry = RunningService(registry_main, settings)
    await registry.ready()
    say(f"consent registry up on {registry.url}")
    pool = await asyncpg.create_pool(settings.postgres_dsn, min_size=1, max_size=2)
    admin = await tokens.create_token(pool, registry.spec.db_schema, f"demo-admin-{uuid.uuid4().hex[:6]}", "admin")
    reader = await tokens.create_token(pool, registry.spec.db_schema, f"demo-worker-{uuid.uuid4().hex[:6]}", "reader")
    await pool.close()
    await give_consent(registry.url, admin, face, say)

    workers = settings.model_copy(update={"consent_token": reader, "consent_registry_url": registry.url})
    swapper, post = RunningService(swapper_main, workers), RunningService(post_main, workers)
    publisher = RunningService(publisher_main, workers) if publish_to != "none" else None
    bus = KafkaBus(settings, "demo", default_codec(settings))
    try:
        await swapper.ready()
        await post.ready()
        if publisher is not None:
            await publisher.ready()
        say("swapper-gpu, post-producer and publisher up; submitting a swap job")
        await bus.start()
        store = open_store(settings.storage_root)
        job_id = f"demo-{uuid.uuid4().hex[:8]}"
        request = swap_request(store, job_id, face, clip.path, music, producer="demo")
        submitted = time.perf_counter()
        await bus.publish(SWAP_REQUESTED, request)
        topic, value = await _follow(bus, job_id, say)
        job_seconds = time.perf_counter() - submitted
        if topic == JOB_FAILED:
            raise RuntimeError(f"the job failed at {value['stage']}: {value['reason_code']}: {value['reason']}")
        final = folder / "final.mp4"
        shutil.copyfile(store.local_path(value["final_uri"]), final)
        manifest = read_manifest(final)
        spec = value["spec_check"]
        say(f"final video: {final}")
        say(f"  {spec['width']}x{spec['height']} {spec['video_codec']} {spec['video_profile']} {spec['fps']} fps, "
            f"{spec['audio_codec']} {spec['sample_rate']} Hz, {spec['duration_s']:.2f} s, spec check passed: {spec['passed']}")
        say(f"  C2PA Content Credentials: valid={manifest.valid}, label {manifest.active_label}")
        say(f"  title: {value['title']}   {' '.join('#' + t for t in value['hashtags'])}")
        say(f"  the job took {job_seconds:.1f} s from request to signed video")
        posted = None
        if publisher is not None:
            posted = await publish(bus, job_id, publish_to, account, say)
        else:
            say("not published (--publish-to none): the video waits in the publisher's review queue "
                "(`reelfab review list`, or the review page once `reelfab serve publisher` runs)")
        return DemoResult(final, face, clip.path, music, job_seconds, posted)
    finally:
        await bus.stop()
        for service in (publisher, post, swapper, registry):
            if service is not None:
                await service.stop()


OPERATOR = "demo-operator"


async def _check_account(account: str, publish_to: str) -> None:
    from reelfab_publisher.accounts import account_problem
    from reelfab_publisher.cli import publisher_session

    async with publisher_session() as p:
        a = await p.repo.account(account)
        if a is None:
            raise DemoRefused(f"no account {account!r}: add it first with `reelfab accounts add {account} …`")
        if (a.platform == "dryrun") != (publish_to == "dryrun"):
            raise DemoRefused(f"account {account} is a {a.platform} account, not one for --publish-to {publish_to}")
        problem = account_problem(a, p.clock())
        if problem is not None:
            raise DemoRefused(f"account {account} cannot post now: {problem}")


class DemoRefused(Exception):
    """The demo cannot do what was asked (the message says why); nothing was started."""


def settings_url() -> str:
    from reelfab.settings import get_settings

    return get_settings().tiktok_api_url


async def publish(bus: Any, job_id: str, publish_to: str, account: str | None, say: Callable[[str], None]) -> dict[str, Any]:
    """The video through the publisher's review queue: the demo approves it as an operator (audited as
    demo-operator), choosing a privacy level the account offers (SELF_ONLY where it can), then waits for
    publish.completed."""
    from reelfab_publisher.cli import publisher_session
    from reelfab_publisher.desk import Approval, NotFound
    from reelfab_publisher.review import ReviewDesk

    since = datetime.now(UTC).replace(microsecond=0)
    async with publisher_session() as p:
        desk = ReviewDesk(p)
        if publish_to == "dryrun" and account is None:
            account = "demo-dryrun"
            if await p.repo.account(account) is None:
                from reelfab_publisher.repository import AccountRow

                await p.repo.add_account(AccountRow(account, "dryrun", "direct", None, None, None, None, None, None,
                                                    False, None, False, False, None, None))
        assert account is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while True:
            try:
                item = await desk.item(job_id)
                break
            except NotFound:
                if loop.time() > deadline:
                    raise TimeoutError(f"{job_id} did not reach the review queue within 60 s") from None
                await asyncio.sleep(0.25)
        choice = next((a for a in await desk.accounts() if a.name == account), None)
        if choice is None:
            raise DemoRefused(f"no account {account!r}: add it with `reelfab accounts add {account} …`")
        if not choice.privacy_level_options:
            raise DemoRefused(f"account {account} cannot post now: {choice.problem}")
        privacy = "SELF_ONLY" if "SELF_ONLY" in choice.privacy_level_options else choice.privacy_level_options[0]
        await desk.approve(item.job_id, Approval(account, privacy), OPERATOR)
        say(f"review: approved by {OPERATOR} for {account} ({choice.platform}, {privacy}); labelled AI-generated")
    topic, value = await _follow(bus, job_id, say, topics=(PUBLISH_COMPLETED, JOB_FAILED), since=since)
    if topic == JOB_FAILED:
        raise DemoRefused(f"publishing failed: {value['reason_code']}: {value['reason']}")
    where = "to the dry-run folder" if value["dry_run"] else f"on {value['platform']} through {settings_url()}"
    post = value["post_id"]
    what = f"post {post}" if value["dry_run"] or not post.startswith("v_") else \
        f"publish id {post} (TikTok gives a post id only for public posts)"
    say(f"published {where}: {what} by {value['account']} ({value['privacy_level']}, is_aigc)"
        + (f" ({value['share_url']})" if value.get("share_url") else ""))
    return dict(value)


def swap_request(store: Any, job_id: str, face: Path, template: Path, music: Path, *, producer: str) -> dict[str, Any]:
    """The demo's swap.requested value for ``job_id``: the face, template and music copied into the
    store under inputs/<job id>/ (bench/job.py submits the same jobs)."""
    src, tpl = store.put_file(f"inputs/{job_id}/vera.png", face), store.put_file(f"inputs/{job_id}/t.mp4", template)
    mus = store.put_file(f"inputs/{job_id}/bed.m4a", music)
    return {
        "event_id": str(uuid.uuid4()), "occurred_at": datetime.now(UTC), "producer": producer, "job_id": job_id,
        "subject_id": SUBJECT, "consent_version": 1, "source_image_uri": src.uri, "source_image_sha256": src.sha256,
        "template_id": f"{producer}-dance", "template_uri": tpl.uri, "template_sha256": tpl.sha256,
        "template_tags": ["dance"], "swapper_model": "classical", "platform": "tiktok", "commercial": False,
        "music_uri": mus.uri, "caption_text": "A virtual dance, made with consent",
    }  # fmt: skip


async def give_consent(url: str, token: str, face: Path, say: Callable[[str], None]) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as api:
        r = await api.post("/subjects", json={"subject_id": SUBJECT, "display_name": "Virtual Vera"})
        if r.status_code not in (201, 409):
            raise RuntimeError(f"creating the subject: {r.status_code} {r.text}")
        r = await api.post(f"/subjects/{SUBJECT}/images", files={"image": ("vera.png", face.read_bytes(), "image/png")})
        if r.status_code not in (201, 409):
            raise RuntimeError(f"enrolling the face: {r.status_code} {r.text}")
        r = await api.post(f"/subjects/{SUBJECT}/consents", files={"document": ("consent.txt", b"Vera consents (demo)", "text/plain")},
                           data={"platforms": "tiktok", "allowed_tags": "dance", "commercial_use": "false"})
        if r.status_code not in (201, 409):
            raise RuntimeError(f"granting consent: {r.status_code} {r.text}")
        say(f"{SUBJECT}: enrolled and consent granted (lease signed, published on the consent topic)")


async def _follow(bus: Any, job_id: str, say: Callable[[str], None], timeout: float = 600,
                  topics: tuple[str, ...] = (SWAP_COMPLETED, RENDER_COMPLETED, JOB_FAILED),
                  since: datetime | None = None) -> tuple[str, dict[str, Any]]:
    codec = bus.codec
    since = since or datetime.now(UTC).replace(microsecond=0)
    seen: set[str] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for topic in topics:
            for msg in await bus.scan(topic, since):
                if msg.key != job_id.encode() or topic in seen:
                    continue
                seen.add(topic)
                value = codec.decode(msg.value).value
                if topic == SWAP_COMPLETED:
                    say(f"swapped {value['frames']} frames at {value['fps']:.1f} frames/s; post-producing")
                else:
                    return topic, value
        await asyncio.sleep(0.25)
    raise TimeoutError(f"no result for {job_id} within {timeout:.0f} s")
