"""What the post-producer's workflow needs from the world, as protocols: bootstrap.py wires the real
adapters (adapters.py: ffmpeg, ffprobe, C2PA, the object store, PostgreSQL) or fakes (unit tests)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from reelfab.consent.decision import Decision
from reelfab.media.render import RenderJob, StopCheck
from reelfab.media.spec_check import SpecCheck
from reelfab.storage import StoredObject

Clock = Callable[[], datetime]


class Renderer(Protocol):
    def render(self, job: RenderJob, *, should_stop: StopCheck | None = None) -> None:
        """Render ``job`` to ``job.output`` (blocking). Raises RenderStopped, and deletes the partial
        output, once ``should_stop`` answers while it runs."""


class SpecChecker(Protocol):
    def verify(self, path: Path, expected_duration_s: float) -> SpecCheck:
        """Probe ``path`` against the platform spec (blocking)."""

    def label(self, path: Path, duration_s: float) -> str | None:
        """``None`` when the spec's visible AI label is in ``path``'s picture, else what is wrong (blocking)."""


class Signer(Protocol):
    def sign(self, input: Path, output: Path, *, title: str, ingredients: Sequence[Mapping[str, str]]) -> str:
        """Write ``input`` with a signed C2PA manifest (AI action) to ``output``; returns its label."""


class ConsentCheck(Protocol):
    """The point-of-use check (reelfab.consent.gate.ConsentGate)."""

    async def check(self, *, subject: str, purpose: str, platform: str, tags: tuple[str, ...] = (),
                    commercial: bool = True, ask_registry: bool = False, job_id: str | None = None) -> Decision: ...


class MediaStore(Protocol):
    """The object store, as the post-producer uses it (reelfab.storage.FileStore)."""

    def local_path(self, uri: str) -> Path: ...
    def get_bytes(self, uri: str, *, expect_sha256: str | None = None) -> bytes: ...
    def put_file(self, key: str, path: Path, *, move: bool = False) -> StoredObject: ...
    def delete(self, uri: str) -> None: ...

    def purge_job(self, job_id: str) -> int:
        """Everything the store holds for one job; returns the bytes freed."""


class RenderedJobs(Protocol):
    """The jobs this service rendered, by subject (the rendered_jobs table)."""

    async def add(self, conn: Any, job_id: str, subject_id: str) -> None:
        """Record a rendered job on ``conn``, the unit of work's connection (None in memory)."""

    async def of_subject(self, subject: str) -> list[str]: ...
    async def remove(self, subject: str, job_ids: Sequence[str]) -> None: ...
