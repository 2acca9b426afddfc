"""The dry-run platform: "posts" a video into a local folder with a JSON sidecar instead of to TikTok.

It lets the whole factory (review, posting, read-back, learning) run end to end with no account and
nothing public. It keeps the promises a real platform adapter must keep:

- exactly once per job: the post id is derived from the job id alone, and ``publish`` first looks for
  the job's post (``find``) and returns it without writing anything, so a redelivered message never
  posts twice;
- no half posts: the video and then the sidecar are written through the object store (reelfab.storage:
  a temporary name in the target folder, then an atomic rename), the sidecar last; ``find`` only
  believes a sidecar that names this job and whose recorded sha256 matches the video beside it, so a
  crash between the two renames, or a damaged video, reads as "not posted" and the next attempt redoes it;
- the bytes posted are the bytes reviewed: the video's sha256 is checked (on the copy that is posted, so
  a file changing while it is copied is caught too) before anything becomes visible;
- nothing from a message is joined into a path unvalidated: the job id must be an opaque identifier
  (reelfab.identifiers) and the account name must match ``ACCOUNT_PATTERN`` and not be ``.``/``..``.

Layout: ``<folder>/<account>/<post_id>.mp4`` and ``<folder>/<account>/<post_id>.json``.

Two concurrent ``publish`` calls for one job (never made by the publisher, which handles a job's
messages in order) would both write the same post id; the last rename wins and both return it."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reelfab.errors import PermanentError
from reelfab.identifiers import check_identifier
from reelfab.storage import FileStore, sha256_file

ACCOUNT_PATTERN = r"^[A-Za-z0-9_.~-]{1,64}$"
_ACCOUNT = re.compile(ACCOUNT_PATTERN)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class InvalidAccount(PermanentError):
    """An account name that cannot name a folder safely."""


class VideoRefused(PermanentError):
    """The video to post is missing, or is not the bytes its sha256 says (the message names both)."""


@dataclass(frozen=True)
class DryRunPost:
    post_id: str
    share_url: str  # the posted file's file:// URI
    published_at: datetime
    video: Path
    sidecar: Path


def dry_run_post_id(job_id: str) -> str:
    """The job's post id: stable (a redelivery finds the same post) and unique per job."""
    return "dry-" + hashlib.sha256(job_id.encode()).hexdigest()[:16]


def check_account(account: str) -> str:
    """``account`` unchanged when it may be a folder name; InvalidAccount otherwise."""
    if not isinstance(account, str) or _ACCOUNT.fullmatch(account) is None or account in (".", ".."):
        raise InvalidAccount(f"account {account!r:.80} is not a valid account name (expected "
                             f"{ACCOUNT_PATTERN}, not '.' or '..')")
    return account


class DryRunPlatform:
    def __init__(self, folder: Path, *, clock: Callable[[], datetime]) -> None:
        self.folder = folder.resolve()
        self._clock = clock
        self._files: FileStore | None = None  # made on the first post: wiring alone creates no folder

    def publish(self, *, job_id: str, video: Path, sha256: str, account: str,
                post_info: Mapping[str, Any], lineage: Mapping[str, Any]) -> DryRunPost:
        """Post ``video`` for ``job_id`` to ``account``, or return the job's post if it exists already."""
        check_identifier(job_id, "job_id")
        check_account(account)
        expected = sha256.lower() if isinstance(sha256, str) else ""
        if _SHA256.fullmatch(expected) is None:
            raise VideoRefused(f"job {job_id}: sha256 {sha256!r:.80} is not 64 hexadecimal digits")
        existing = self.find(job_id)
        if existing is not None:
            return existing
        if not video.is_file():
            raise VideoRefused(f"job {job_id}: the video {video} is missing (or not a regular file)")
        post_id = dry_run_post_id(job_id)
        published_at = self._now()
        sidecar_text = _sidecar_text({
            "job_id": job_id, "post_id": post_id, "account": account,
            "published_at": published_at.isoformat(), "sha256": expected,
            "size_bytes": video.stat().st_size, "is_aigc": True,
            "post_info": dict(post_info), "lineage": dict(lineage), "dry_run": True,
        })  # serialised before anything is written: bad post_info leaves no orphan video
        # the object store writes each file under a temporary name and renames it into place (atomic),
        # hashing what it wrote: the posted copy is the one checked against the reviewed sha256
        stored = self._store.put_file(f"{account}/{post_id}.mp4", video)
        if stored.sha256 != expected:
            self._store.delete(stored.uri)
            raise VideoRefused(f"the video {video} has sha256 {stored.sha256}, not the expected {expected}: "
                               "refusing to post bytes other than the reviewed ones")
        sidecar = self._store.put_bytes(f"{account}/{post_id}.json", sidecar_text.encode())  # last: it makes the post
        final_video, final_sidecar = self._store.local_path(stored.uri), self._store.local_path(sidecar.uri)
        return DryRunPost(post_id, final_video.as_uri(), published_at, final_video, final_sidecar)

    def find(self, job_id: str) -> DryRunPost | None:
        """The job's post, whichever account it went to, or None when there is no complete one."""
        check_identifier(job_id, "job_id")
        post_id = dry_run_post_id(job_id)
        if not self.folder.is_dir():
            return None
        for account_dir in sorted(self.folder.iterdir()):
            name = account_dir.name
            if _ACCOUNT.fullmatch(name) is None or name in (".", "..") or not account_dir.is_dir():
                continue
            sidecar, video = account_dir / f"{post_id}.json", account_dir / f"{post_id}.mp4"
            post = _read_post(sidecar, video, job_id, post_id)
            if post is not None:
                return post
        return None

    @property
    def _store(self) -> FileStore:
        if self._files is None:
            self._files = FileStore(self.folder)
        return self._files

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the dry-run platform's clock must return timezone-aware datetimes")
        return now.astimezone(UTC)


def _sidecar_text(payload: Mapping[str, Any]) -> str:
    try:
        return json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"job {payload['job_id']}: post_info or lineage is not JSON: {exc}") from exc


def _read_post(sidecar: Path, video: Path, job_id: str, post_id: str) -> DryRunPost | None:
    """The post a sidecar records, when it is whole, names this job and matches the video beside it."""
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("job_id") != job_id or data.get("post_id") != post_id:
            return None
        recorded, size = data.get("sha256"), data.get("size_bytes")
        published_at = datetime.fromisoformat(str(data["published_at"]))
        if not video.is_file() or video.stat().st_size != size or sha256_file(video) != recorded:
            return None  # a torn or damaged post: not a post (the size check spares hashing most)
    except (OSError, ValueError, KeyError):
        return None
    return DryRunPost(post_id, video.as_uri(), published_at, video, sidecar)
