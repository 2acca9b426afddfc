"""The dry-run platform, on a temporary folder: a post is the verified bytes plus a sidecar, made once per
job; a wrong or missing video, a hostile account or job id, or bad post_info is refused before anything is
written; a crash between the two renames, or a damaged video, is not taken for a post and is redone."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reelfab.errors import PermanentError, StoreUnavailable
from reelfab_publisher.dryrun import DryRunPlatform, DryRunPost, InvalidAccount, VideoRefused, dry_run_post_id

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64
SHA = hashlib.sha256(VIDEO).hexdigest()
POST_INFO = {"title": "Ada dances #fyp", "privacy_level": "SELF_ONLY", "disable_comment": False}
LINEAGE = {"subject_id": "ada", "template_id": "t1", "model": "classical"}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "render" / "final.mp4"
    path.parent.mkdir()
    path.write_bytes(VIDEO)
    return path


@pytest.fixture
def platform(tmp_path: Path) -> DryRunPlatform:
    return DryRunPlatform(tmp_path / "posted", clock=Clock())


def publish(platform: DryRunPlatform, video: Path, **overrides: Any) -> DryRunPost:
    args: dict[str, Any] = {"job_id": "job-1", "video": video, "sha256": SHA, "account": "demo_account",
                            "post_info": POST_INFO, "lineage": LINEAGE}
    return platform.publish(**(args | overrides))


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_a_post_is_the_video_and_its_sidecar(platform: DryRunPlatform, video: Path) -> None:
    post = publish(platform, video)
    assert post.post_id == dry_run_post_id("job-1") and post.post_id.startswith("dry-")
    assert post.video == platform.folder / "demo_account" / f"{post.post_id}.mp4"
    assert post.sidecar == platform.folder / "demo_account" / f"{post.post_id}.json"
    assert post.share_url == post.video.as_uri() and post.share_url.startswith("file:///")
    assert post.video.read_bytes() == VIDEO
    assert post.published_at == T0 + timedelta(seconds=1)
    sidecar = json.loads(post.sidecar.read_text())
    assert sidecar == {
        "job_id": "job-1", "post_id": post.post_id, "account": "demo_account",
        "published_at": "2030-01-02T03:04:06+00:00", "sha256": SHA, "size_bytes": len(VIDEO),
        "is_aigc": True, "post_info": POST_INFO, "lineage": LINEAGE, "dry_run": True,
    }
    assert files_under(platform.folder) == [f"demo_account/{post.post_id}.{ext}" for ext in ("json", "mp4")]
    assert platform.find("job-1") == post


def test_post_ids_are_stable_and_distinct_per_job() -> None:
    assert dry_run_post_id("job-1") == dry_run_post_id("job-1")
    ids = {dry_run_post_id(f"job-{i}") for i in range(1000)}
    assert len(ids) == 1000


def test_is_aigc_is_always_true_whatever_post_info_says(platform: DryRunPlatform, video: Path) -> None:
    post = publish(platform, video, post_info={"title": "x", "is_aigc": False})
    sidecar = json.loads(post.sidecar.read_text())
    assert sidecar["is_aigc"] is True and sidecar["post_info"] == {"title": "x", "is_aigc": False}


def test_a_second_publish_returns_the_first_post_and_writes_nothing(
        platform: DryRunPlatform, video: Path, tmp_path: Path) -> None:
    first = publish(platform, video)
    stamps = {p: p.stat().st_mtime_ns for p in (first.video, first.sidecar)}
    other = tmp_path / "other.mp4"
    other.write_bytes(b"other bytes")
    again = publish(platform, other, sha256=hashlib.sha256(b"other bytes").hexdigest(), account="second")
    assert again == first  # same published_at: the clock's later time was not used
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert files_under(platform.folder) == [f"demo_account/{first.post_id}.{ext}" for ext in ("json", "mp4")]


def test_a_redelivery_finds_the_post_after_the_render_was_cleaned_up(
        platform: DryRunPlatform, video: Path) -> None:
    first = publish(platform, video)
    video.unlink()
    assert publish(platform, video) == first


def test_a_video_that_is_not_the_reviewed_bytes_is_refused_naming_both_hashes(
        platform: DryRunPlatform, video: Path) -> None:
    wrong = hashlib.sha256(b"what was reviewed").hexdigest()
    with pytest.raises(VideoRefused) as caught:
        publish(platform, video, sha256=wrong)
    assert isinstance(caught.value, PermanentError)
    assert str(video) in str(caught.value) and SHA in str(caught.value) and wrong in str(caught.value)
    assert files_under(platform.folder) == []  # no temp file left behind either
    assert platform.find("job-1") is None


def test_an_uppercase_sha256_is_accepted(platform: DryRunPlatform, video: Path) -> None:
    assert publish(platform, video, sha256=SHA.upper()).video.read_bytes() == VIDEO


@pytest.mark.parametrize("sha", ["", "abc", "g" * 64, SHA + "0"])
def test_a_malformed_sha256_is_refused(platform: DryRunPlatform, video: Path, sha: str) -> None:
    with pytest.raises(VideoRefused, match="64 hexadecimal"):
        publish(platform, video, sha256=sha)


def test_a_missing_video_is_refused(platform: DryRunPlatform, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.mp4"
    with pytest.raises(VideoRefused, match="missing") as caught:
        publish(platform, missing)
    assert str(missing) in str(caught.value)
    with pytest.raises(VideoRefused, match="missing"):
        publish(platform, tmp_path)  # a folder is not a video


@pytest.mark.parametrize("account", ["", ".", "..", "../escape", "a/b", "a\\b", "/abs", "sp ace",
                                     "nul\x00", "new\nline", "x" * 65, "émile"])
def test_hostile_account_names_are_refused(platform: DryRunPlatform, video: Path, account: str) -> None:
    with pytest.raises(InvalidAccount):
        publish(platform, video, account=account)
    assert not platform.folder.exists() or files_under(platform.folder) == []
    assert not (platform.folder.parent / "escape").exists()


@pytest.mark.parametrize("account", ["a", "demo_account", "Ada.Lovelace", "x~y-z", "...", "x" * 64])
def test_ordinary_account_names_are_accepted(platform: DryRunPlatform, video: Path, account: str) -> None:
    assert publish(platform, video, account=account).video.parent == platform.folder / account


@pytest.mark.parametrize("job_id", ["", ".", "..", ".hidden", "../x", "a/b", "sp ace", "x" * 129, "tab\t"])
def test_hostile_job_ids_are_refused(platform: DryRunPlatform, video: Path, job_id: str) -> None:
    with pytest.raises(PermanentError, match="job_id"):
        publish(platform, video, job_id=job_id)
    with pytest.raises(PermanentError, match="job_id"):
        platform.find(job_id)


def test_post_info_that_is_not_json_is_refused_before_anything_is_written(
        platform: DryRunPlatform, video: Path) -> None:
    with pytest.raises(PermanentError, match="not JSON"):
        publish(platform, video, post_info={"title": object()})
    with pytest.raises(PermanentError, match="not JSON"):
        publish(platform, video, lineage={"score": float("nan")})
    assert not platform.folder.exists() or files_under(platform.folder) == []


def test_a_crash_between_the_two_renames_is_not_a_post_and_is_redone(
        platform: DryRunPlatform, video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_replace = os.replace

    def crash_on_sidecar(src: Any, dst: Any) -> None:
        if str(dst).endswith(".json"):
            raise OSError("power cut")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_sidecar)
    with pytest.raises(StoreUnavailable, match="power cut"):
        publish(platform, video)
    post_id = dry_run_post_id("job-1")
    assert files_under(platform.folder) == [f"demo_account/{post_id}.mp4"]  # the temp sidecar is gone
    assert platform.find("job-1") is None

    monkeypatch.setattr(os, "replace", real_replace)
    post = publish(platform, video)
    assert platform.find("job-1") == post and post.video.read_bytes() == VIDEO


def test_a_sidecar_whose_video_is_torn_or_damaged_is_not_a_post(
        platform: DryRunPlatform, video: Path) -> None:
    post = publish(platform, video)
    post.video.unlink()
    post.video.write_bytes(VIDEO[: len(VIDEO) // 2])  # a torn copy
    assert platform.find("job-1") is None
    post.video.unlink()
    post.video.write_bytes(VIDEO[:-1] + bytes([VIDEO[-1] ^ 1]))  # same size, other bytes
    assert platform.find("job-1") is None
    post.video.unlink()
    assert platform.find("job-1") is None
    again = publish(platform, video)  # the next attempt redoes the post
    assert platform.find("job-1") == again and again.video.read_bytes() == VIDEO


def test_a_damaged_or_foreign_sidecar_is_not_a_post(platform: DryRunPlatform, video: Path) -> None:
    post = publish(platform, video)
    good = post.sidecar.read_text()
    post.sidecar.write_text(good[: len(good) // 2])
    assert platform.find("job-1") is None
    post.sidecar.write_text(json.dumps(json.loads(good) | {"job_id": "job-2"}))
    assert platform.find("job-1") is None
    post.sidecar.write_text("[]")
    assert platform.find("job-1") is None


def test_the_posted_video_is_a_copy_the_render_cannot_change_afterwards(
        platform: DryRunPlatform, video: Path) -> None:
    post = publish(platform, video)
    assert post.video.stat().st_ino != video.stat().st_ino and post.video.read_bytes() == VIDEO
    video.write_bytes(b"changed after posting")
    assert post.video.read_bytes() == VIDEO and platform.find("job-1") == post


def test_find_ignores_strays_in_the_folder(platform: DryRunPlatform, video: Path) -> None:
    post = publish(platform, video)
    (platform.folder / "a file").write_text("not an account")
    (platform.folder / "bad name").mkdir()
    assert platform.find("job-1") == post
    assert platform.find("job-never") is None
    assert DryRunPlatform(platform.folder / "absent", clock=Clock()).find("job-1") is None


def test_a_naive_clock_is_refused(tmp_path: Path, video: Path) -> None:
    naive = DryRunPlatform(tmp_path / "posted", clock=lambda: datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        publish(naive, video)
