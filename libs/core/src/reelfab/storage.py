"""Object storage by URI. Media travels between services as a URI plus sha256, never as bytes on
Kafka. ``file://`` roots serve one machine or a shared volume; ``s3://`` will sit behind the same
interface. Writes are atomic (temp file + rename) and hashed; keys cannot escape the root."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol
from urllib.parse import unquote, urlparse

from reelfab.errors import ObjectMissing, ObjectRefused, StorageError, StoreUnavailable

_CHUNK = 1 << 20


@dataclass(frozen=True)
class StoredObject:
    uri: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ObjectInfo:
    """One object as a listing sees it: its key, size in bytes and last modification (UTC)."""

    key: str
    size: int
    mtime: datetime


class ObjectStore(Protocol):
    root_uri: str

    def put_bytes(self, key: str, data: bytes) -> StoredObject: ...
    def put_file(self, key: str, path: Path) -> StoredObject: ...
    def get_bytes(self, uri: str, *, expect_sha256: str | None = None) -> bytes: ...
    def local_path(self, uri: str) -> Path: ...
    def exists(self, uri: str) -> bool: ...
    def delete(self, uri: str) -> None: ...


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _safe_key(key: str) -> PurePosixPath:
    """A relative key of non-empty, non-dot segments; refused (never normalised) otherwise."""
    if not key or key.strip() != key:
        raise ObjectRefused(f"object key {key!r} is empty or has surrounding spaces")
    if "\\" in key or any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise ObjectRefused(f"object key {key!r} contains a backslash or a control character")
    if key.startswith("/"):
        raise ObjectRefused(f"object key {key!r} is absolute; keys are relative to the store's root")
    segments = key.split("/")
    if any(seg in ("", ".", "..") for seg in segments):
        # checked on the raw text: PurePosixPath would silently fold 'jobs//abs' into 'jobs/abs'
        raise ObjectRefused(f"object key {key!r} has an empty, '.' or '..' segment")
    return PurePosixPath(*segments)


class FileStore:
    """A folder on a local or shared filesystem, addressed by file:// URIs."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.root_uri = self.root.as_uri()

    def check_available(self) -> None:
        """StoreUnavailable when the root itself is gone (an unmounted volume), not just one object."""
        if not self.root.is_dir():
            raise StoreUnavailable(f"the store's root {self.root} is not there (volume unmounted?)")

    def _path_for_key(self, key: str) -> Path:
        path = (self.root / _safe_key(key)).resolve()
        # resolve() follows symlinks, so a link inside the root pointing outside is refused too
        if not path.is_relative_to(self.root):
            raise ObjectRefused(f"object key {key!r} resolves outside the store's root {self.root}")
        return path

    def local_path(self, uri: str) -> Path:
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise ObjectRefused(f"{uri!r} is not a file:// URI; this store serves {self.root_uri}")
        if parsed.netloc not in ("", "localhost"):  # file://otherhost/... names another machine's file
            raise ObjectRefused(f"{uri!r} names host {parsed.netloc!r}; this store serves {self.root_uri}")
        path = Path(unquote(parsed.path)).resolve()
        if not path.is_relative_to(self.root):
            raise ObjectRefused(f"{uri!r} is outside the store's root {self.root_uri}")
        return path

    def _write_atomic(self, key: str, src: BinaryIO) -> StoredObject:
        dest = self._path_for_key(key)
        self.check_available()  # never recreate a vanished root: writes would land beside the volume
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            return self._write_into(dest, src)
        except OSError as exc:  # disk full, I/O error, stale mount: not the message's fault
            raise StoreUnavailable(f"writing {key}: {exc}") from exc

    def _write_into(self, dest: Path, src: BinaryIO) -> StoredObject:
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return StoredObject(dest.as_uri(), digest.hexdigest(), size)

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        import io

        return self._write_atomic(key, io.BytesIO(data))

    def put_file(self, key: str, path: Path, *, move: bool = False) -> StoredObject:
        """Store a copy of ``path``; with ``move`` the file itself is renamed into the store when it
        is on the same filesystem (a large mezzanine is hashed once and never copied)."""
        if move:
            dest = self._path_for_key(key)
            self.check_available()
            dest.parent.mkdir(parents=True, exist_ok=True)
            digest, size = sha256_file(path), path.stat().st_size
            try:
                os.replace(path, dest)
                return StoredObject(dest.as_uri(), digest, size)
            except OSError:
                pass  # another filesystem: copy below
        with path.open("rb") as f:
            return self._write_atomic(key, f)

    def get_bytes(self, uri: str, *, expect_sha256: str | None = None) -> bytes:
        path = self.local_path(uri)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self.check_available()
            raise ObjectMissing(f"no object at {uri}") from None
        except OSError as exc:
            raise StoreUnavailable(f"reading {uri}: {exc}") from exc
        if expect_sha256 is not None:
            actual = hashlib.sha256(data).hexdigest()
            if actual != expect_sha256:
                raise ObjectMissing(f"{uri}: sha256 {actual} does not match the expected {expect_sha256}")
        return data

    def exists(self, uri: str) -> bool:
        return self.local_path(uri).is_file()

    def delete(self, uri: str) -> None:
        self.local_path(uri).unlink(missing_ok=True)

    def copy_to(self, uri: str, dest: Path) -> Path:
        shutil.copyfile(self.local_path(uri), dest)
        return dest

    # -- listing and deletion by key (retention; see reelfab.retention) ---------------------

    def list_objects(self, prefix: str = "") -> list[ObjectInfo]:
        """Every regular file under the root (or under the key prefix ``prefix``), in key order.

        Symbolic links are neither followed nor listed, so a listing never leaves the root;
        temporary ``.part-`` files of writes in progress (or of crashed ones) are listed."""
        self.check_available()
        start = self._path_for_key(prefix) if prefix else self.root
        found: list[ObjectInfo] = []

        def fail(exc: OSError) -> None:
            if not isinstance(exc, FileNotFoundError):  # a folder removed while we walk is fine
                raise StoreUnavailable(f"listing {exc.filename}: {exc}") from exc

        for folder, _dirs, files in os.walk(start, onerror=fail, followlinks=False):
            for name in files:
                path = Path(folder) / name
                try:
                    st = path.lstat()
                except FileNotFoundError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue  # a symbolic link or something stranger: not an object
                key = path.relative_to(self.root).as_posix()
                found.append(ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
        found.sort(key=lambda o: o.key)
        return found

    def stat_key(self, key: str) -> ObjectInfo | None:
        """The object at ``key`` as a listing would show it, or None when there is none."""
        path = self._path_for_key(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        if not path.is_file():
            return None
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def delete_key(self, key: str) -> int:
        """Remove the object at ``key``; returns the bytes freed (0 when it was not there).

        Folders left empty by the removal are removed too, up to (never including) the root."""
        path = self._path_for_key(key)
        self.check_available()
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StoreUnavailable(f"deleting {key}: {exc}") from exc
        parent = path.parent
        while parent != self.root and parent.is_relative_to(self.root):
            try:
                parent.rmdir()  # fails (and stops here) when a writer put something new in it
            except OSError:
                break
            parent = parent.parent
        return size


def purge_job_media(store: FileStore, job_id: str) -> int:
    """Delete everything the store holds for one job (``jobs/<id>/`` and the per-job input copies
    ``inputs/<id>/``, which include a copy of the subject's face); returns the bytes freed.

    For a job stopped by consent (revoked, erased, expired): nothing made from or for the face may
    outlive the decision, and none of it may wait for retention's grace period."""
    from reelfab.identifiers import key_segment

    segment = key_segment(job_id, "job_id")
    freed = 0
    for prefix in (f"jobs/{segment}", f"inputs/{segment}"):
        for obj in store.list_objects(prefix):  # a prefix with nothing under it lists nothing
            freed += store.delete_key(obj.key)
    return freed


def open_store(root_uri: str) -> FileStore:
    parsed = urlparse(root_uri)
    if parsed.scheme == "file":
        return FileStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        raise StorageError(f"{root_uri}: s3:// storage is not available in this build; use a file:// root")
    raise StorageError(f"{root_uri!r}: unsupported storage scheme {parsed.scheme!r} (expected file://)")
