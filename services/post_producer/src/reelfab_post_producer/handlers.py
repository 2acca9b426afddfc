"""post-producer handlers: consent events feed the local view; a swapped mezzanine is re-checked
against consent (a revocation since the swap stops it here), rendered to the platform spec in one
ffmpeg pass, verified with ffprobe, signed with C2PA Content Credentials, stored and announced."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reelfab.bus import Event, new_event_id, now_utc
from reelfab.bus.idempotency import handle_once, was_processed
from reelfab.consent.decision import Decision
from reelfab.consent.gate import ConsentGate
from reelfab.consent.lease import LeaseTerms
from reelfab.consent.view import ConsentView
from reelfab.errors import PermanentError
from reelfab.identifiers import key_segment, make_workdir
from reelfab.logging import get_logger
from reelfab.media.c2pa_sign import SigningMaterial, sign_video
from reelfab.media.render import RenderJob, RenderSpec, RenderStopped, StopCheck, render
from reelfab.media.spec_check import verify
from reelfab.media.titles import title_and_hashtags
from reelfab.service import ServiceContext, fail_job
from reelfab.storage import FileStore, purge_job_media, sha256_file
from reelfab.version import __version__

log = get_logger("reelfab.post")


@dataclass
class PostProducer:
    ctx: ServiceContext
    view: ConsentView
    gate: ConsentGate
    store: FileStore
    spec: RenderSpec
    signing: SigningMaterial
    workdir: Path
    stop_poll_s: float = 0.2  # how often a running render looks at the consent view

    def revoked(self, subject: str) -> tuple[str, str] | None:
        withdrawn = self.view.withdrawn(subject)
        return None if withdrawn is None else (withdrawn[0], f"{withdrawn[1]}: the render stopped")


def on_swap_completed(post: PostProducer) -> Any:
    ctx = post.ctx

    async def handle(event: Event[Any]) -> None:
        r = event.record
        assert ctx.pool is not None
        if await was_processed(ctx.pool, ctx.spec.schema, event.event_id):
            return
        # the job's own commercial flag; unknown (a swapper older than the field) asks the stricter question
        commercial = True if r.commercial is None else bool(r.commercial)

        async def consent() -> Decision:
            # the local view, then the registry's authoritative answer (no image needed): a revocation
            # the view has not consumed yet still stops the job
            return await post.gate.check(subject=r.face_id, purpose="render", platform=r.platform,
                                         tags=tuple(r.template_tags), commercial=commercial, ask_registry=True,
                                         job_id=r.job_id)  # the job's own use is inside the daily cap already

        decision = await consent()
        if not decision.allowed:
            return await fail(post, event, f"consent.{decision.reason}", decision.detail)
        mezzanine = post.store.local_path(r.mezzanine_uri)
        if not mezzanine.is_file() or await asyncio.to_thread(sha256_file, mezzanine) != r.mezzanine_sha256:
            raise PermanentError(f"mezzanine {r.mezzanine_uri} is missing or its sha256 is not {r.mezzanine_sha256}")
        track = json.loads(post.store.get_bytes(r.face_track_uri, expect_sha256=r.face_track_sha256))
        music = post.store.local_path(r.music_uri) if r.music_uri else None
        work = make_workdir(post.workdir, r.job_id)
        try:
            try:
                rendered, check, label, title, tags = await asyncio.to_thread(
                    _produce, post, r, mezzanine, music, track, work, lambda: post.revoked(r.face_id))
            except RenderStopped as stop:
                return await fail(post, event, f"consent.{stop.reason}", str(stop))
            # rendered and signed: consent again, before anything is stored or announced. The event's
            # time is this moment: the video was complete and its consent verified as of then
            finished_at = now_utc()
            decision = await consent()
            if not decision.allowed:
                rendered.unlink(missing_ok=True)  # made for a subject who withdrew: it goes, now
                return await fail(post, event, f"consent.{decision.reason}",
                                  f"{decision.detail} (checked after rendering: the output was deleted)")
            final = post.store.put_file(f"jobs/{key_segment(r.job_id, 'job_id')}/final.mp4", rendered, move=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        completed = {
            "event_id": new_event_id(), "occurred_at": finished_at, "producer": ctx.spec.name, "trace_id": r.trace_id,
            "job_id": r.job_id, "face_id": r.face_id, "consent_version": decision.consent_version or r.consent_version,
            "final_uri": final.uri, "final_sha256": final.sha256, "spec_check": _spec_record(check),
            "c2pa_manifest_id": label, "title": title, "hashtags": tags, "platform": r.platform, "is_aigc": True,
            "template_id": r.template_id, "arm_id": r.arm_id,
        }

        async def announce(conn: Any) -> None:
            await conn.execute(f'INSERT INTO "{ctx.spec.schema}".rendered_jobs (job_id, face_id) VALUES ($1, $2) '
                               "ON CONFLICT DO NOTHING", r.job_id, r.face_id)
            await ctx.outbox.add(conn, "reelfab.render.completed.v1", completed)

        late = post.revoked(r.face_id)  # a revocation the view took in while the file was stored
        if late is not None:
            post.store.delete(final.uri)
            return await fail(post, event, f"consent.{late[0]}", f"{late[1]} (after rendering: the output was deleted)")
        await handle_once(ctx.pool, ctx.spec.schema, event, "render", announce)
        log.info("rendered", job_id=r.job_id, final=final.uri)

    return handle


def _produce(post: PostProducer, r: Any, mezzanine: Path, music: Path | None, track: dict[str, Any],
             work: Path, should_stop: StopCheck | None = None) -> tuple[Path, Any, str, str, list[str]]:
    """The blocking part, in a worker thread: one ffmpeg pass (killed when ``should_stop`` answers),
    the spec check, the C2PA signature."""
    metadata = {"job_id": r.job_id, "consent_version": str(r.consent_version), "ai_generated": "true",
                "comment": "AI-generated: face swapped with consent (Reelfab)"}
    job = RenderJob(input=mezzanine, output=work / "render.mp4", duration_s=r.duration_s, music=music,
                    caption_text=r.caption_text, face_track=track, metadata=metadata)
    render(job, post.spec, should_stop=should_stop, poll_s=post.stop_poll_s)
    check = verify(job.output, post.spec, r.duration_s)
    if not check.passed:  # a mismatch is a failure, not a warning
        raise PermanentError(f"rendered file fails the platform spec: {'; '.join(check.problems)}")
    title, tags = title_and_hashtags(list(r.template_tags), list(r.trend_tags), None, platform=r.platform)
    ingredients = [{"title": f"template {r.template_id}", "sha256": r.template_sha256 or "", "format": "video/mp4",
                    "relationship": "parentOf"},
                   {"title": f"source face of {r.face_id}", "sha256": r.source_image_sha256, "format": "image/png",
                    "relationship": "componentOf"}]
    if not r.template_sha256:
        ingredients = ingredients[1:]
    signed = work / "final.mp4"
    label = sign_video(job.output, signed, post.signing, title=title, claim_generator=f"reelfab/{__version__}",
                       ingredients=ingredients, ai_action=True)
    return signed, check, label, title, tags


def _spec_record(check: Any) -> dict[str, Any]:
    return {"passed": check.passed, "width": check.width, "height": check.height, "fps": check.fps,
            "video_codec": check.video_codec, "video_profile": check.video_profile, "pix_fmt": check.pix_fmt,
            "audio_codec": check.audio_codec, "sample_rate": check.sample_rate, "duration_s": check.duration_s,
            "problems": list(check.problems)}


async def on_consent_withdrawn(post: PostProducer, terms: LeaseTerms) -> int:
    """A revocation or an erasure reaches the jobs already rendered for the subject: their media in the
    store (the swapped mezzanine, the track, the final file) and the job's copies of the face go; a
    published post is the registry's takedown list's business. Returns the bytes freed."""
    if terms.status not in ("REVOKED", "ERASED") or post.ctx.pool is None:
        return 0
    schema = post.ctx.spec.schema
    jobs = [r["job_id"] for r in await post.ctx.pool.fetch(
        f'SELECT job_id FROM "{schema}".rendered_jobs WHERE face_id = $1', terms.subject)]
    freed = 0
    for job_id in jobs:
        freed += await asyncio.to_thread(purge_job_media, post.store, job_id)
    if jobs:
        await post.ctx.pool.execute(f'DELETE FROM "{schema}".rendered_jobs WHERE face_id = $1 AND job_id = ANY($2)',
                                    terms.subject, jobs)
        log.info("media of a withdrawn consent removed", subject=terms.subject, status=terms.status,
                 jobs=len(jobs), freed_bytes=freed)
    return freed


async def fail(post: PostProducer, event: Event[Any], reason_code: str, detail: str) -> None:
    if reason_code.startswith("consent."):  # the swapped video and the face's copies go with the job
        await asyncio.to_thread(purge_job_media, post.store, event.record.job_id)
    await fail_job(post.ctx, event, "render", reason_code, detail)
