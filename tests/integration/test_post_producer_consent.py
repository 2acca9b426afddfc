"""The post-producer's consent checks at the handler level (real PostgreSQL outbox, real ffmpeg and
C2PA signing, the in-memory bus): a revocation stops a running render, consent is asked again — of
the local view and of the registry — after rendering and signing, before anything is stored or
announced, and the job's own commercial flag is the one checked."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from reelfab.bus.memory import InMemoryBus
from reelfab.bus.unit_of_work import PostgresUnitOfWork
from reelfab.consent.client import RegistryClient
from reelfab.consent.decision import Decision
from reelfab.consent.gate import ConsentGate
from reelfab.contracts.codec import default_codec
from reelfab.media.c2pa_sign import make_test_ca
from reelfab.media.render import RenderSpec
from reelfab.service import build_context
from reelfab.storage import FileStore
from reelfab_post_producer import handlers
from reelfab_post_producer import main as post_main
from reelfab_post_producer.bootstrap import PostProducer, bootstrap
from tests.conftest import make_settings, unique
from tests.integration.media_handlers_support import (
    Registry,
    clip,
    context,
    event,
    job_id,
    lease,
    outbox_rows,
    view,
)

pytestmark = [pytest.mark.postgres]
SMALL = RenderSpec(width=180, height=320, label_font_px=12, label_margin_px=8)


@pytest.fixture(scope="module")
def signing(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_test_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture
async def post_schema(pg_pool: Any, delivery_schema: str) -> str:
    """The delivery tables plus the post-producer's own (rendered_jobs)."""
    from reelfab.db import migrate, package_migrations

    await migrate(pg_pool, delivery_schema, package_migrations(post_main.SPEC.package))
    return delivery_schema


@pytest.fixture
def build(pg_pool: Any, post_schema: str, tmp_path: Path, signing: Any) -> Any:
    delivery_schema = post_schema
    settings = make_settings(state_dir=tmp_path / "state", storage_root=(tmp_path / "objects").as_uri())

    def make(registry: Registry, spec: RenderSpec = SMALL) -> PostProducer:
        ctx = context(post_main, pg_pool, delivery_schema, settings)
        v = view("post-producer")
        return bootstrap(ctx, view=v, gate=ConsentGate(v, registry),  # type: ignore[arg-type]
                         spec=spec, signing=signing, workdir=tmp_path / "post-work", stop_poll_s=0.05)

    return make


def swap_completed(post: PostProducer, tmp: Path, subject: str, *, seconds: float = 1.0,
                   commercial: bool | None = False) -> Any:
    mezzanine = clip(tmp / f"{subject}.mkv", seconds=seconds)
    track = tmp / f"{subject}.json"
    track.write_text(json.dumps({"version": 1, "width": 180, "height": 320, "fps": 25.0, "frames": []}))
    job = job_id()
    files: FileStore = post.store.files  # type: ignore[attr-defined]
    m = files.put_file(f"jobs/{job}/mezzanine.mkv", mezzanine)
    t = files.put_file(f"jobs/{job}/track.json", track)
    files.put_bytes(f"inputs/{job}/source.png", b"a copy of the subject's face")
    values = {
        "event_id": unique("ev"), "occurred_at": datetime.now(UTC), "producer": "swapper-gpu", "job_id": job,
        "subject_id": subject, "consent_version": 1, "mezzanine_uri": m.uri, "mezzanine_sha256": m.sha256,
        "face_track_uri": t.uri, "face_track_sha256": t.sha256, "backend": "classical", "swapper_model": "classical",
        "model_license": "non-commercial", "commercial_use_allowed": False, "frames": round(seconds * 25), "fps": 50.0,
        "duration_s": seconds, "template_id": "dance-1", "template_tags": ["dance"], "source_image_sha256": "ab" * 32,
        "platform": "tiktok", "caption_text": "consented", "commercial": commercial,
    }
    return event("SwapCompleted", "reelfab.swap.completed.v1", values)


async def outbox(post: PostProducer) -> list[tuple[str, dict[str, Any]]]:
    """What the handler announced: the outbox rows its unit of work wrote."""
    assert isinstance(post.uow, PostgresUnitOfWork)
    return await outbox_rows(post.uow.pool, post.uow.schema)


def _ffmpeg_children() -> list[int]:
    """Processes whose parent is this one and whose command is ffmpeg."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError):
            continue
        if ppid == os.getpid() and comm.startswith("ffmpeg"):
            found.append(int(entry.name))
    return found


def _failed(rows: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    assert [t for t, _ in rows] == ["reelfab.job.failed.v1"], rows
    return rows[0][1]


async def test_a_revocation_mid_render_kills_ffmpeg_and_fails_the_job(build: Any, tmp_path: Path) -> None:
    post = build(Registry(), RenderSpec())  # full size: a 30 s clip takes long enough to be caught running
    subject = unique("vera")
    post.view.apply(lease(subject))
    ev = swap_completed(post, tmp_path, subject, seconds=30.0)
    task = asyncio.create_task(handlers.on_swap_completed(post)(ev))
    deadline = time.monotonic() + 60
    while not list(post.workdir.glob("*/render.mp4")):  # ffmpeg has started writing
        assert not task.done(), task.result()
        assert time.monotonic() < deadline, "the render never started"
        await asyncio.sleep(0.05)
    post.view.apply(lease(subject, 2, "REVOKED"))  # the consent topic brings the revocation
    revoked_at = time.monotonic()
    await asyncio.wait_for(task, 30)
    assert time.monotonic() - revoked_at < 2.0, "the render ran on after the revocation"
    failed = _failed(await outbox(post))
    assert failed["reason_code"] == "consent.revoked" and failed["job_id"] == ev.record.job_id
    assert not _ffmpeg_children()
    assert not list(post.workdir.glob("*/*")), "the partial render was left behind"
    # the swapped video, its track and the job's copy of the face go with the job
    assert not list((tmp_path / "objects").glob(f"jobs/{ev.record.job_id}/*"))
    assert not list((tmp_path / "objects").glob(f"inputs/{ev.record.job_id}/*"))


async def test_a_revocation_the_view_has_not_seen_is_caught_by_the_registry_after_rendering(build: Any, tmp_path: Path) -> None:
    registry = Registry(Decision(True, "ok", "allowed", 1), Decision(False, "revoked", "consent v2 was revoked", 2))
    post = build(registry)
    subject = unique("vera")
    post.view.apply(lease(subject))  # the local view lags: it never hears of the revocation
    ev = swap_completed(post, tmp_path, subject)
    await handlers.on_swap_completed(post)(ev)
    failed = _failed(await outbox(post))
    assert failed["reason_code"] == "consent.revoked" and "after rendering" in failed["reason"]
    assert [(c["request"].purpose, c["image"], c["consume"]) for c in registry.calls] == [("render", False, False)] * 2
    assert not list((tmp_path / "objects").glob(f"jobs/{ev.record.job_id}/*")), "an output for a revoked subject was stored"
    assert not list(post.workdir.glob("*/*"))


async def test_a_revocation_while_signing_is_caught_by_the_view_before_announcing(
    build: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    post = build(Registry())  # the registry (stand-in) keeps saying yes: only the view knows
    subject = unique("vera")
    post.view.apply(lease(subject))
    real_signer = post.signer

    class SignThenRevoke:
        def sign(self, *args: Any, **kwargs: Any) -> str:
            label = real_signer.sign(*args, **kwargs)
            post.view.apply(lease(subject, 2, "REVOKED"))  # arrives after ffmpeg finished, before the announcement
            return label

    monkeypatch.setattr(post, "signer", SignThenRevoke())
    ev = swap_completed(post, tmp_path, subject)
    await handlers.on_swap_completed(post)(ev)
    assert _failed(await outbox(post))["reason_code"] == "consent.revoked"
    assert not list((tmp_path / "objects").glob(f"jobs/{ev.record.job_id}/*"))


@pytest.mark.parametrize("commercial", [True, None], ids=["commercial-job", "flag-unknown"])
async def test_the_jobs_commercial_flag_is_checked(build: Any, tmp_path: Path, commercial: bool | None) -> None:
    post = build(Registry())
    subject = unique("vera")
    post.view.apply(lease(subject, commercial=False))
    ev = swap_completed(post, tmp_path, subject, commercial=commercial)
    await handlers.on_swap_completed(post)(ev)
    assert _failed(await outbox(post))["reason_code"] == "consent.commercial_not_allowed"


async def test_a_non_commercial_job_with_consent_renders_and_is_announced(build: Any, tmp_path: Path) -> None:
    registry = Registry()
    post = build(registry)
    subject = unique("vera")
    post.view.apply(lease(subject, commercial=False))
    ev = swap_completed(post, tmp_path, subject, commercial=False)
    await handlers.on_swap_completed(post)(ev)
    rows = await outbox(post)
    assert [t for t, _ in rows] == ["reelfab.render.completed.v1"], rows
    assert rows[0][1]["is_aigc"] and rows[0][1]["spec_check"]["passed"]
    assert rows[0][1]["commercial"] is False  # the job's flag, carried for the publisher's check
    assert (tmp_path / "objects" / "jobs" / ev.record.job_id / "mezzanine.mkv").exists()  # kept for retention
    assert len(registry.calls) == 2 and not registry.calls[0]["request"].commercial
    # both checks name the job, so the registry does not hold the job's own counted use against it
    assert [(c["consume"], c["job_id"]) for c in registry.calls] == [(False, ev.record.job_id)] * 2


def test_the_post_producer_asks_the_registry(tmp_path: Path) -> None:
    settings = make_settings(state_dir=tmp_path, storage_root=(tmp_path / "o").as_uri(), consent_token="reader-token",
                             consent_registry_url="http://registry.invalid")
    ctx = build_context(post_main.SPEC, settings, InMemoryBus(settings, "post-producer", default_codec()), None,
                        post_main.wire)
    registry = ctx.extras["post"].gate.registry  # type: ignore[attr-defined]
    assert isinstance(registry, RegistryClient) and registry.url == "http://registry.invalid"


async def test_the_gate_asks_the_registry_without_an_image_when_told_to() -> None:
    bodies: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"allowed": False, "reason": "revoked", "detail": "revoked at the registry",
                                         "consent_version": 2})

    client = RegistryClient("http://registry", "t", transport=httpx.MockTransport(answer))
    v = view("post-producer")
    subject = unique("vera")
    v.apply(lease(subject))
    gate = ConsentGate(v, client)
    local = await gate.check(subject=subject, purpose="render", platform="tiktok", tags=("dance",), commercial=False)
    assert local.allowed and not bodies  # no image, not asked: the local view alone, as before
    asked = await gate.check(subject=subject, purpose="render", platform="tiktok", tags=("dance",), commercial=False,
                             ask_registry=True)
    assert (asked.allowed, asked.reason) == (False, "revoked")
    assert len(bodies) == 1 and "image_base64" not in bodies[0] and bodies[0]["consume"] is False
    await gate.check(subject=subject, purpose="swap", platform="tiktok", tags=("dance",), commercial=False,
                     image_bytes=b"png", consume=True, job_id="job-42")
    assert bodies[-1]["consume"] is True and bodies[-1]["job_id"] == "job-42"  # a redelivery is not counted twice


async def test_a_revocation_after_rendering_removes_what_was_made_from_the_face(build: Any, tmp_path: Path) -> None:
    """Jobs already finished when the subject withdraws: their swapped video, track, final file and the
    job's copies of the face leave the store when the revocation reaches the post-producer's view."""
    post = build(Registry())
    post.view.listeners.append(handlers.on_consent_withdrawn(post))
    subject, other = unique("vera"), unique("ada")
    post.view.apply(lease(subject))
    post.view.apply(lease(other))
    mine = swap_completed(post, tmp_path, subject)
    theirs = swap_completed(post, tmp_path, other)
    for ev in (mine, theirs):
        await handlers.on_swap_completed(post)(ev)
    objects = tmp_path / "objects"
    assert (objects / "jobs" / mine.record.job_id / "final.mp4").exists()
    await post.view.apply_async(lease(subject, 2, "REVOKED"))  # as the consent topic delivers it
    assert not list(objects.glob(f"jobs/{mine.record.job_id}/*")) and not list(objects.glob(f"inputs/{mine.record.job_id}/*"))
    assert (objects / "jobs" / theirs.record.job_id / "final.mp4").exists()  # another subject's job stays
    assert (objects / "inputs" / theirs.record.job_id / "source.png").exists()
    await post.view.apply_async(lease(other, 2, "AMENDED"))  # not a withdrawal: nothing goes
    assert (objects / "jobs" / theirs.record.job_id / "final.mp4").exists()
