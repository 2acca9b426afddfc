"""Valid records for the contract tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any


def swap_requested(job_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "occurred_at": datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
        "producer": "planner",
        "trace_id": None,
        "job_id": job_id or f"job-{uuid.uuid4().hex[:8]}",
        "subject_id": "face-1",
        "consent_version": 3,
        "source_image_uri": "file:///store/faces/face-1.png",
        "source_image_sha256": "ab" * 32,
        "template_id": "tpl-dance-1",
        "template_uri": "file:///store/templates/dance-1.mp4",
        "template_sha256": "cd" * 32,
        "template_tags": ["dance", "trend"],
        "swapper_model": "ghost_2_256",
        "commercial": True,
    }
    record.update(overrides)
    return record
