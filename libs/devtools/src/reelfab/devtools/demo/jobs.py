"""One swap job by hand for a virtual person (bench/job.py submits the same jobs): the consent it
needs and the swap.requested value, with the face, template and music copied into the store."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

SUBJECT = "demo-vera"


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
