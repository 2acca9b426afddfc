"""A service's scratch space for media jobs (the swapper's and the post-producer's work folders),
cleaned of what a killed process left behind.

A process killed mid-job (``kill -9``, the OOM killer) leaves its job folders — mezzanines,
half-rendered MP4s, gigabytes each — in ``<state_dir>/<service>-work``. A restarted service must not
let them pile up, but several replicas may share one state_dir on a host, so "everything in the
root" is not ours to delete: another live replica may be writing there right now.

So each process claims a folder of its own inside the root, ``owner-<pid>-<random>``, and holds an
exclusive ``flock`` on its ``.lock`` file for its whole life. The kernel drops that lock when the
process dies, however it dies (no stale pid file, no pid reuse to be fooled by). At start, every
sibling owner folder whose lock can be taken belongs to a dead process and is removed; a folder
whose lock is held belongs to a live replica and is left alone. Job folders (``make_workdir``) are
made inside the claimed folder.

Loose entries directly in the root (job folders of a version before owner folders) are removed when
they are older than this process: nothing live made them after we started, and a version without
owner folders does not run beside this one for long (a rolling update)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
import uuid
from pathlib import Path

from reelfab.logging import get_logger

OWNER_PREFIX = "owner-"
LOCK_NAME = ".lock"
log = get_logger("reelfab.media.workroot")

# while a process runs, the descriptors holding its claims stay open (closing one drops the lock)
_HELD: dict[Path, int] = {}


def claim_work_root(root: Path, *, started_at: float | None = None) -> Path:
    """Remove what dead processes left in ``root`` and return a fresh folder that this process owns
    (locked until it exits). ``started_at``: this process's start (epoch seconds; default now)."""
    root.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() if started_at is None else started_at
    removed = clean_stale(root, older_than=cutoff)
    mine = root / f"{OWNER_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    mine.mkdir()
    # locked before it gets its name: another process never sees an unlocked .lock of a live owner
    fd = os.open(mine / (LOCK_NAME + ".new"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"{os.getpid()}\n".encode())
    os.rename(mine / (LOCK_NAME + ".new"), mine / LOCK_NAME)
    _HELD[mine.resolve()] = fd
    if removed:
        log.info("stale work folders removed", root=str(root), removed=removed)
    return mine


def release(folder: Path) -> None:
    """Give up a claim (tests, orderly shutdown): the folder and its lock go."""
    fd = _HELD.pop(folder.resolve(), None)
    shutil.rmtree(folder, ignore_errors=True)
    if fd is not None:
        os.close(fd)


def clean_stale(root: Path, *, older_than: float) -> int:
    """Remove owner folders of dead processes and loose entries modified before ``older_than``;
    returns how many entries went."""
    removed = 0
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(OWNER_PREFIX) and entry.is_dir() and not entry.is_symlink():
            if entry.resolve() in _HELD or _owner_alive(entry):
                continue
        else:
            try:
                if entry.lstat().st_mtime >= older_than:
                    continue  # made after we started: someone live made it
            except FileNotFoundError:
                continue
        _remove(entry)
        removed += 1
    return removed


def _owner_alive(folder: Path) -> bool:
    lock = folder / LOCK_NAME
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        # a claim being made this instant has its folder before its lock file: young means live
        return time.time() - folder.lstat().st_mtime < 60
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the lock we may have taken
    return False


def _remove(entry: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink()
