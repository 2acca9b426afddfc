"""swapper-gpu handlers: consent events feed the local view; a swap job is checked (consent first,
before any pixel), swapped in a worker thread, stored, and announced — or failed with its reason."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from reelfab.bus import Event, new_event_id, now_utc
from reelfab.bus.idempotency import handle_once, was_processed
from reelfab.consent.gate import ConsentGate
from reelfab.consent.view import ConsentView
from reelfab.errors import ObjectMissing, PermanentError
from reelfab.faces.qc import TemplateRules, check_template, reasons_text
from reelfab.faces.types import FaceEngine
from reelfab.identifiers import key_segment, make_workdir
from reelfab.logging import get_logger
from reelfab.media.errors import MediaError
from reelfab.service import ServiceContext, fail_job
from reelfab.storage import FileStore, purge_job_media, sha256_file

from . import metrics
from .domain import ModelChoice, ModelRefused, choose_model
from .swap import Stopped, run_swap

log = get_logger("reelfab.swapper")


@dataclass
class Swapper:
    ctx: ServiceContext
    view: ConsentView
    gate: ConsentGate
    store: FileStore
    manifest: dict[str, tuple[str, bool]]
    installed: set[str]
    slots: asyncio.Semaphore
    workdir: Path
    detect_every: int = 5
    batch_size: int = 8
    engines: dict[tuple[str, str], FaceEngine] = field(default_factory=dict)
    template_rules: TemplateRules = field(default_factory=TemplateRules)
    template_verdicts: dict[tuple[str, str, str], tuple[str, str] | None] = field(default_factory=dict)

    def engine(self, choice: ModelChoice) -> FaceEngine:
        from reelfab.faces.backends import get_engine

        key = (choice.backend, choice.model)
        if key not in self.engines:  # sessions are loaded once per process and reused across jobs
            options = {"swapper": choice.model} if choice.backend == "onnx" else {}
            self.engines[key] = get_engine(choice.backend, self.ctx.settings, **options)
        return self.engines[key]

    def template_refusal(self, choice: ModelChoice, template: Path, sha256: str) -> tuple[str, str] | None:
        """(reason code, detail) when the template fails its quality gate (reelfab.faces.qc), else
        None. Blocking (decodes the clip and detects faces): call it in a worker thread. Verdicts
        are remembered per template content and engine, so a template reused by many jobs is judged once."""
        key = (sha256, choice.backend, choice.model)
        if key not in self.template_verdicts:
            try:
                result = check_template(template, self.engine(choice), self.template_rules)
            except MediaError as exc:
                verdict: tuple[str, str] | None = ("unreadable", f"template {template.name}: {exc}")
            else:
                verdict = None if result.passed else (_main_reason(result.codes()), f"template QC: {reasons_text(result.reasons)}")
            if len(self.template_verdicts) >= 1024:
                self.template_verdicts.pop(next(iter(self.template_verdicts)))
            self.template_verdicts[key] = verdict
        return self.template_verdicts[key]

    def revoked(self, subject: str) -> tuple[str, str] | None:
        withdrawn = self.view.withdrawn(subject)
        return None if withdrawn is None else (withdrawn[0], f"{withdrawn[1]}: the swap stopped mid-clip")


def on_swap_requested(swapper: Swapper) -> Any:
    ctx = swapper.ctx

    async def handle(event: Event[Any]) -> None:
        job = event.record
        assert ctx.pool is not None
        if await was_processed(ctx.pool, ctx.spec.schema, event.event_id):
            return
        metrics.QUEUE_LAG.observe(max(0.0, (datetime.now(UTC) - job.occurred_at).total_seconds()))
        tags = tuple(job.template_tags)
        decision = await swapper.gate.check(subject=job.face_id, purpose="swap", platform=job.platform, tags=tags,
                                            commercial=job.commercial)
        if not decision.allowed:  # before any byte of the face is read
            return await fail(swapper, event, f"consent.{decision.reason}", decision.detail)
        try:
            choice = choose_model(backend=job.backend, model=job.swapper_model, default_backend=ctx.settings.face_backend,
                                  commercial_job=job.commercial, commercial_mode=ctx.settings.commercial_mode,
                                  manifest=swapper.manifest, installed=swapper.installed)
        except ModelRefused as exc:
            return await fail(swapper, event, "model_refused", str(exc))
        template = swapper.store.local_path(job.template_uri)
        if job.music_uri:  # the post-producer reads it: a URI outside the store is refused now, not after the swap
            swapper.store.local_path(job.music_uri)
        if not template.is_file() or await asyncio.to_thread(sha256_file, template) != job.template_sha256:
            raise PermanentError(f"template {job.template_uri} is missing or its sha256 is not {job.template_sha256}")
        async with swapper.slots:
            # the template's own quality gate, before the face is fetched and the daily cap spent: a
            # clip without a face (or a 2x2 one) would otherwise "swap" into an unchanged copy, labelled
            # AI-generated
            refused = await asyncio.to_thread(swapper.template_refusal, choice, template, job.template_sha256)
        if refused is not None:
            return await fail(swapper, event, f"template.{refused[0]}", refused[1])
        try:
            source_bytes = swapper.store.get_bytes(job.source_image_uri, expect_sha256=job.source_image_sha256)
        except ObjectMissing as exc:  # gone or not those bytes: the job fails; a URI outside the store is
            return await fail(swapper, event, "source_unavailable", str(exc))  # dead-lettered (ObjectRefused)
        decision = await swapper.gate.check(subject=job.face_id, purpose="swap", platform=job.platform, tags=tags,
                                            commercial=job.commercial, image_sha256=job.source_image_sha256,
                                            image_bytes=source_bytes, consume=True, job_id=job.job_id)
        if not decision.allowed:
            return await fail(swapper, event, f"consent.{decision.reason}", decision.detail)
        image = cv2.imdecode(np.frombuffer(source_bytes, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise PermanentError(f"source image {job.source_image_uri} is not a readable image")
        workdir = make_workdir(swapper.workdir, job.job_id)
        key = key_segment(job.job_id, "job_id")
        try:
            async with swapper.slots:
                metrics.BATCH_SIZE.set(swapper.batch_size)
                out = await asyncio.to_thread(
                    run_swap, swapper.engine(choice), image, template, workdir, detect_every=swapper.detect_every,
                    batch_size=swapper.batch_size, should_stop=lambda: swapper.revoked(job.face_id))
            mezzanine = swapper.store.put_file(f"jobs/{key}/mezzanine.mkv", out.mezzanine, move=True)
            track = swapper.store.put_file(f"jobs/{key}/track.json", out.track, move=True)
        except Stopped as stop:
            return await fail(swapper, event, f"consent.{stop.reason}", str(stop))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        metrics.FRAMES_PER_SECOND.labels(choice.backend, choice.model).observe(out.fps)
        log.info("swapped", job_id=job.job_id, frames=out.frames, with_face=out.frames_with_face, fps=round(out.fps, 1))
        completed = {
            "event_id": new_event_id(), "occurred_at": now_utc(), "producer": ctx.spec.name, "trace_id": job.trace_id,
            "job_id": job.job_id, "face_id": job.face_id, "consent_version": decision.consent_version or job.consent_version,
            "mezzanine_uri": mezzanine.uri, "mezzanine_sha256": mezzanine.sha256,
            "face_track_uri": track.uri, "face_track_sha256": track.sha256,
            "backend": choice.backend, "swapper_model": choice.model, "model_license": choice.licence,
            "commercial_use_allowed": choice.commercial_use, "frames": out.frames, "fps": out.fps,
            "duration_s": out.info.duration_s, "template_id": job.template_id, "template_tags": list(job.template_tags),
            "source_image_sha256": job.source_image_sha256, "platform": job.platform, "music_uri": job.music_uri,
            "caption_text": job.caption_text, "caption_style": job.caption_style, "trend_id": job.trend_id,
            "arm_id": job.arm_id, "template_uri": job.template_uri, "template_sha256": job.template_sha256,
            "commercial": job.commercial,
        }

        async def announce(conn: Any) -> None:
            await ctx.outbox.add(conn, "reelfab.swap.completed.v1", completed)

        await handle_once(ctx.pool, ctx.spec.schema, event, "swap", announce)
        metrics.JOBS.labels("completed").inc()

    return handle


# the reason a job fails with when the template fails several rules: the one that matters most
_TEMPLATE_REASONS = ("no_face", "face_hidden", "resolution", "duration")


def _main_reason(codes: list[str]) -> str:
    return next((c for c in _TEMPLATE_REASONS if c in codes), codes[0] if codes else "rejected")


async def fail(swapper: Swapper, event: Event[Any], reason_code: str, detail: str) -> None:
    if reason_code.startswith("consent."):  # nothing made from the face outlives the decision
        await asyncio.to_thread(purge_job_media, swapper.store, event.record.job_id)
    await fail_job(swapper.ctx, event, "swap", reason_code, detail)
    metrics.JOBS.labels(reason_code.split(".")[0]).inc()
