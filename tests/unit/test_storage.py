from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from reelfab.errors import StorageError
from reelfab.storage import open_store


def test_put_and_get_bytes_with_sha256(tmp_path: Path) -> None:
    store = open_store(tmp_path.as_uri())
    obj = store.put_bytes("faces/subject-1/a.png", b"pixels")
    assert obj.sha256 == hashlib.sha256(b"pixels").hexdigest() and obj.size == 6
    assert obj.uri.startswith("file://") and obj.uri.endswith("faces/subject-1/a.png")
    assert store.get_bytes(obj.uri, expect_sha256=obj.sha256) == b"pixels"
    assert store.exists(obj.uri)
    store.delete(obj.uri)
    assert not store.exists(obj.uri)


def test_put_file_streams_and_leaves_no_temp_files(tmp_path: Path) -> None:
    src = tmp_path / "clip.bin"
    data = os.urandom(3 * (1 << 20) + 17)
    src.write_bytes(data)
    store = open_store((tmp_path / "store").as_uri())
    obj = store.put_file("templates/clip.bin", src)
    assert obj.sha256 == hashlib.sha256(data).hexdigest() and obj.size == len(data)
    assert [p.name for p in (tmp_path / "store" / "templates").iterdir()] == ["clip.bin"]


def test_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    store = open_store(tmp_path.as_uri())
    obj = store.put_bytes("a", b"one")
    with pytest.raises(StorageError, match="does not match"):
        store.get_bytes(obj.uri, expect_sha256="0" * 64)


@pytest.mark.parametrize("key", ["../outside", "a/../../b", "/etc/passwd", "", "a/../b", "a\\b", " a"])
def test_keys_that_escape_the_root_are_refused(tmp_path: Path, key: str) -> None:
    store = open_store((tmp_path / "root").as_uri())
    with pytest.raises(StorageError):
        store.put_bytes(key, b"x")
    assert not (tmp_path / "outside").exists()


def test_a_symlink_pointing_outside_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = open_store(root.as_uri())
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StorageError, match="outside the store's root"):
        store.put_bytes("link/file", b"x")
    assert not (tmp_path / "elsewhere" / "file").exists()


def test_uris_outside_the_root_and_other_schemes_are_refused(tmp_path: Path) -> None:
    store = open_store((tmp_path / "root").as_uri())
    (tmp_path / "secret").write_bytes(b"s")
    with pytest.raises(StorageError, match="outside"):
        store.get_bytes((tmp_path / "secret").as_uri())
    with pytest.raises(StorageError, match="not a file://"):
        store.get_bytes("http://example.invalid/x")
    with pytest.raises(StorageError, match="unsupported storage scheme"):
        open_store("ftp://host/x")
    with pytest.raises(StorageError, match="s3://"):
        open_store("s3://bucket/prefix")
    with pytest.raises(StorageError, match="no object"):
        store.get_bytes(store.root_uri + "/missing")


def test_put_file_can_move_a_large_file_in_without_copying(tmp_path: Path) -> None:
    src = tmp_path / "mezzanine.mkv"
    src.write_bytes(b"frames" * 1000)
    store = open_store((tmp_path / "store").as_uri())
    inode = src.stat().st_ino
    obj = store.put_file("jobs/j1/mezzanine.mkv", src, move=True)
    dest = store.local_path(obj.uri)
    assert not src.exists() and dest.stat().st_ino == inode  # renamed, not copied
    assert obj.sha256 == hashlib.sha256(b"frames" * 1000).hexdigest() and obj.size == 6000
async def test_a_store_key_outside_the_root_is_permanent_at_once(tmp_path: Any) -> None:
    from reelfab.bus.outage import Outages
    from reelfab.bus.policy import DeliveryPolicy, is_permanent
    from reelfab.errors import ObjectRefused
    from tests.unit.test_outage import FAST, Flaky, deliver

    store = open_store((tmp_path / "store").as_uri())
    with pytest.raises(ObjectRefused) as caught:
        store.local_path("file:///etc/passwd")
    assert is_permanent(caught.value)
    policy = DeliveryPolicy("svc-escape", FAST, 1 << 20, Outages("svc-escape"))
    flaky = Flaky(caught.value)
    outcome, [letter] = await deliver(policy, flaky)
    assert outcome == "dead_lettered" and flaky.attempts == [1] and letter.attempts == 1




def test_purging_a_job_removes_its_media_and_its_copies_of_the_face_only(tmp_path: Path) -> None:
    from reelfab.identifiers import InvalidIdentifier
    from reelfab.storage import purge_job_media

    store = open_store((tmp_path / "store").as_uri())
    for key in ("jobs/job-1/mezzanine.mkv", "jobs/job-1/track.json", "inputs/job-1/source.png",
                "jobs/job-10/final.mp4", "inputs/job-2/source.png", "consent/ada/x.sealed"):
        store.put_bytes(key, b"12345")
    assert purge_job_media(store, "job-1") == 15
    left = sorted(o.key for o in store.list_objects())
    assert left == ["consent/ada/x.sealed", "inputs/job-2/source.png", "jobs/job-10/final.mp4"]
    assert purge_job_media(store, "job-never") == 0
    with pytest.raises(InvalidIdentifier):
        purge_job_media(store, "..")


@pytest.mark.parametrize("uri", ["file://evilhost{root}/x", "file://127.0.0.2{root}/x", "http://x{root}/x"])
def test_a_uri_naming_another_host_is_refused(tmp_path: Path, uri: str) -> None:
    from reelfab.errors import ObjectRefused

    store = open_store((tmp_path / "store").as_uri())
    store.put_bytes("x", b"1")
    with pytest.raises(ObjectRefused):
        store.local_path(uri.format(root=store.root))
    assert store.local_path(f"file://localhost{store.root}/x") == store.root / "x"
