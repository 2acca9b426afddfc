"""The swapper's handler (real PostgreSQL outbox, real ffmpeg and the classical engine, the in-memory
bus): a template fails its quality gate before any swap — through job.failed, not a crash — and the
consuming consent check names the job, so a redelivery does not spend the daily cap twice."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import pytest

from reelfab.consent.decision import Decision
from reelfab.consent.gate import ConsentGate
from reelfab.devtools.synthetic import template_clip, virtual_person
from reelfab.faces.qc import TemplateRules
from reelfab.storage import open_store
from reelfab_swapper_gpu import handlers
from reelfab_swapper_gpu import main as swapper_main
from reelfab_swapper_gpu.adapters import backend_engines
from reelfab_swapper_gpu.bootstrap import Swapper, bootstrap
from tests.conftest import make_settings, unique
from tests.integration.media_handlers_support import (
    Registry,
    announced,
    clip,
    context,
    event,
    job_id,
    lease,
    view,
)

pytestmark = [pytest.mark.postgres]
FACE_PNG = cv2.imencode(".png", virtual_person(5, size=512))[1].tobytes()


@pytest.fixture
def build(pg_pool: Any, delivery_schema: str, tmp_path: Path) -> Any:
    settings = make_settings(state_dir=tmp_path / "state", storage_root=(tmp_path / "objects").as_uri(),
                             face_backend="classical")

    def make(registry: Registry, rules: TemplateRules | None = None) -> Swapper:
        ctx = context(swapper_main, pg_pool, delivery_schema, settings)
        v = view("swapper-gpu")
        return bootstrap(ctx, store=open_store(settings.storage_root), view=v,
                         gate=ConsentGate(v, registry),  # type: ignore[arg-type]
                         engine_factory=backend_engines(settings), template_rules=rules,
                         workdir=tmp_path / "swapper-work")

    return make


def swap_requested(swapper: Swapper, subject: str, template: Path) -> Any:
    job = job_id()
    src = swapper.store.put_bytes(f"inputs/{job}/face.png", FACE_PNG)
    tpl = swapper.store.put_file(f"inputs/{job}/template{template.suffix}", template)
    swapper.view.apply(lease(subject, image_sha256=src.sha256))  # type: ignore[attr-defined]
    values = {
        "event_id": unique("ev"), "occurred_at": datetime.now(UTC), "producer": "planner", "job_id": job,
        "subject_id": subject, "consent_version": 1, "source_image_uri": src.uri, "source_image_sha256": src.sha256,
        "template_id": "dance-1", "template_uri": tpl.uri, "template_sha256": tpl.sha256, "template_tags": ["dance"],
        "swapper_model": "classical", "priority": 0, "platform": "tiktok", "commercial": False,
    }
    return event("SwapRequested", "reelfab.swap.requested.v1", values)


@pytest.mark.parametrize(("size", "seconds"), [("540x960", 6.0), ("2x2", 6.0)], ids=["faceless", "two-by-two"])
async def test_a_template_without_a_face_fails_the_job_before_any_swap(
    build: Any, tmp_path: Path, size: str, seconds: float
) -> None:
    registry = Registry()
    swapper = build(registry)
    template = clip(tmp_path / "no-face.mp4", seconds=seconds, size=size, codec="libx264")
    ev = swap_requested(swapper, unique("vera"), template)
    await handlers.on_swap_requested(swapper)(ev)  # a decision: no exception, no retry, no DLQ
    rows = await announced(swapper.ctx)
    assert [t for t, _ in rows] == ["reelfab.job.failed.v1"], rows
    failed = rows[0][1]
    assert failed["reason_code"] == "template.no_face" and not failed["retryable"], failed
    assert not any(c["consume"] for c in registry.calls), "the daily cap was spent on a template that cannot be used"
    assert not list((tmp_path / "objects").glob(f"jobs/{ev.record.job_id}/*"))


async def test_an_unreadable_template_fails_the_job_with_its_reason(build: Any, tmp_path: Path) -> None:
    swapper = build(Registry())
    template = tmp_path / "junk.mp4"
    template.write_bytes(b"not a video at all")
    await handlers.on_swap_requested(swapper)(swap_requested(swapper, unique("vera"), template))
    rows = await announced(swapper.ctx)
    assert [(t, v["reason_code"]) for t, v in rows] == [("reelfab.job.failed.v1", "template.unreadable")]


async def test_the_consuming_check_names_the_job(build: Any, tmp_path: Path) -> None:
    registry = Registry(Decision(False, "daily_cap_reached", "3 uses today; the cap is 3", 1))
    swapper = build(registry, TemplateRules(min_seconds=0.5, min_short_side=16))
    template = template_clip(tmp_path / "t.mp4", seed=3, seconds=1.0, size=(360, 640)).path
    ev = swap_requested(swapper, unique("vera"), template)
    await handlers.on_swap_requested(swapper)(ev)  # the template passes its QC; the registry refuses
    rows = await announced(swapper.ctx)
    assert [(t, v["reason_code"]) for t, v in rows] == [("reelfab.job.failed.v1", "consent.daily_cap_reached")]
    consuming = [c for c in registry.calls if c["consume"]]
    assert len(consuming) == 1 and consuming[0]["job_id"] == ev.record.job_id and consuming[0]["image"]


async def test_a_consent_denial_removes_the_jobs_copies_of_the_face(build: Any, tmp_path: Path) -> None:
    registry = Registry(Decision(False, "revoked", "consent of the subject was revoked", 1))
    swapper = build(registry, TemplateRules(min_seconds=1.0))
    template = template_clip(tmp_path / "dance.mp4", seed=32, seconds=2.0).path
    ev = swap_requested(swapper, unique("vera"), template)
    await handlers.on_swap_requested(swapper)(ev)
    rows = await announced(swapper.ctx)
    assert [r[1]["reason_code"] for r in rows] == ["consent.revoked"], rows
    assert not list((tmp_path / "objects").glob(f"inputs/{ev.record.job_id}/*"))  # face and template copies gone


async def test_a_music_uri_outside_the_store_is_refused_before_any_swap(build: Any, tmp_path: Path) -> None:
    from reelfab.errors import ObjectRefused

    registry = Registry()
    swapper = build(registry, TemplateRules(min_seconds=1.0))
    template = template_clip(tmp_path / "dance.mp4", seed=32, seconds=2.0).path
    ev = swap_requested(swapper, unique("vera"), template)
    hostile = event("SwapRequested", "reelfab.swap.requested.v1",
                    {**ev.record.model_dump(), "music_uri": "file:///etc/hostname"})
    with pytest.raises(ObjectRefused):  # permanent: the bus dead-letters it at the first attempt
        await handlers.on_swap_requested(swapper)(hostile)
    assert registry.calls == [] and not list((tmp_path / "swapper-work").glob("*/*"))


async def test_a_source_image_uri_outside_the_store_is_dead_lettered_not_failed(build: Any, tmp_path: Path) -> None:
    from reelfab.errors import ObjectRefused

    registry = Registry()
    swapper = build(registry, TemplateRules(min_seconds=1.0))
    template = template_clip(tmp_path / "dance.mp4", seed=32, seconds=2.0).path
    ev = swap_requested(swapper, unique("vera"), template)
    hostile = event("SwapRequested", "reelfab.swap.requested.v1",
                    {**ev.record.model_dump(), "source_image_uri": "file:///etc/hostname"})
    with pytest.raises(ObjectRefused):  # permanent: the bus dead-letters it at the first attempt
        await handlers.on_swap_requested(swapper)(hostile)
    assert await announced(swapper.ctx) == [] and registry.calls == []
