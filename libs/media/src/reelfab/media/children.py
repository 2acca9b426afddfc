"""Child processes that die with their parent: every ffmpeg/ffprobe the pipeline starts goes through
``popen`` or ``run`` here, so a service killed with SIGKILL (OOM killer, ``kill -9``, a node drain
that runs out of grace) leaves no orphaned encoder behind burning CPU and writing files.

On Linux the child asks the kernel, between fork and exec, for SIGKILL when its parent dies
(``prctl(PR_SET_PDEATHSIG, SIGKILL)``); elsewhere the functions are plain ``subprocess`` calls.

Two things to know:

- The "parent" the kernel watches is the *thread* that forked the child. Start a child from the
  thread that waits for it (a worker thread of ``asyncio.to_thread`` does: it lives until the call
  returns), never from a short-lived thread that exits while the child should keep running.
- ``preexec_fn`` runs in the forked child before exec. It only calls a libc function resolved here
  in advance and ``os.getppid``/``os.kill`` (no imports, no allocation-heavy work), which keeps it
  safe in a threaded parent."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _load_prctl() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_PRCTL = _load_prctl()


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when the forking thread's process dies; None
    where the platform cannot (then the child is a plain child)."""
    if _PRCTL is None:
        return None
    prctl = _PRCTL
    parent = os.getpid()
    kill_signal = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, kill_signal, 0, 0, 0)
        # the parent may have died between fork and prctl: then nobody would send the signal
        if os.getppid() != parent:
            os.kill(os.getpid(), kill_signal)

    return preexec


def popen(cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen`` whose child dies with this process."""
    _add_preexec(kwargs)
    return subprocess.Popen(list(cmd), **kwargs)


def run(cmd: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run`` whose child dies with this process (timeouts kill it as ``run`` does)."""
    _add_preexec(kwargs)
    return subprocess.run(list(cmd), **kwargs)


def _add_preexec(kwargs: dict[str, Any]) -> None:
    if "preexec_fn" in kwargs:
        raise TypeError("children.popen/run set preexec_fn themselves")
    kwargs["preexec_fn"] = die_with_parent()
