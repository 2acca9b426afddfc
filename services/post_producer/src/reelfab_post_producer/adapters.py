"""The real adapters behind the post-producer's ports: ffmpeg (reelfab.media.render), ffprobe
(reelfab.media.spec_check), C2PA signing (reelfab.media.c2pa_sign) and the object store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reelfab.media.c2pa_sign import SigningMaterial, sign_video
from reelfab.media.label_check import label_problem
from reelfab.media.render import RenderJob, RenderSpec, StopCheck, render
from reelfab.media.spec_check import SpecCheck, verify
from reelfab.storage import FileStore, StoredObject, purge_job_media
from reelfab.version import __version__


@dataclass(frozen=True)
class FfmpegRenderer:
    """One ffmpeg pass to the platform spec; ``should_stop`` is asked every ``poll_s`` while it runs."""

    spec: RenderSpec
    poll_s: float = 0.2

    def render(self, job: RenderJob, *, should_stop: StopCheck | None = None) -> None:
        render(job, self.spec, should_stop=should_stop, poll_s=self.poll_s)


@dataclass(frozen=True)
class FfprobeSpecCheck:
    spec: RenderSpec

    def verify(self, path: Path, expected_duration_s: float) -> SpecCheck:
        return verify(path, self.spec, expected_duration_s)

    def label(self, path: Path, duration_s: float) -> str | None:
        return label_problem(path, self.spec, duration_s)


@dataclass(frozen=True)
class C2paSigner:
    """C2PA Content Credentials with the AI action, signed with ``material``."""

    material: SigningMaterial

    def sign(self, input: Path, output: Path, *, title: str, ingredients: Sequence[Mapping[str, str]]) -> str:
        return sign_video(input, output, self.material, title=title, claim_generator=f"reelfab/{__version__}",
                          ingredients=ingredients, ai_action=True)


@dataclass(frozen=True)
class StoreMedia:
    """The object store (a FileStore) as the MediaStore port."""

    files: FileStore

    def local_path(self, uri: str) -> Path:
        return self.files.local_path(uri)

    def get_bytes(self, uri: str, *, expect_sha256: str | None = None) -> bytes:
        return self.files.get_bytes(uri, expect_sha256=expect_sha256)

    def put_file(self, key: str, path: Path, *, move: bool = False) -> StoredObject:
        return self.files.put_file(key, path, move=move)

    def delete(self, uri: str) -> None:
        self.files.delete(uri)

    def purge_job(self, job_id: str) -> int:
        return purge_job_media(self.files, job_id)
