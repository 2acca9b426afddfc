"""The registry's tunables (REELFAB_CONSENT_*, read by ``bootstrap``)."""

from __future__ import annotations

from dataclasses import dataclass

from .images import FACE_WORK_PIXELS, MAX_FACE_PIXELS


@dataclass
class RegistryConfig:
    asset_kind: str = "photo"
    phash_threshold: int = 8
    max_upload_bytes: int = 10 * 1024 * 1024
    max_face_pixels: int = MAX_FACE_PIXELS
    face_work_pixels: int = FACE_WORK_PIXELS
    face_concurrency: int = 2  # decodes + face work at once; the rest wait their turn
    checkpoint_interval_s: float = 300.0  # a signed audit checkpoint at least this often (if the chain grew)
    checkpoint_every: int = 100  # ... and once this many entries were appended since the last one
