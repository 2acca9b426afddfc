"""Process plumbing for the local stack: pid files, /proc checks, ports, waiting, locks, commands."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from reelfab.errors import StackError

Say = Callable[[str], None]


def split_hostport(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise StackError(f"bad host:port {address!r}")
    return host.strip("[]"), int(port)


# --- pids -------------------------------------------------------------------------------------------


def read_pid(path: Path) -> int | None:
    """First line of a pid file (our kafka.pid, PostgreSQL's postmaster.pid), or None."""
    try:
        first = path.read_text().split("\n", 1)[0].strip()
    except (FileNotFoundError, PermissionError):
        return None
    return int(first) if first.isdigit() else None


def write_pid(path: Path, pid: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(path)


def _reap(pid: int) -> None:
    # a child we started and that died stays a zombie (kill(pid, 0) succeeds) until reaped
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def pid_alive(pid: int | None) -> bool:
    if not pid or pid <= 0:
        return False
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, PermissionError, ProcessLookupError):
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def is_ours(pid: int | None, marker: str) -> bool:
    """Alive and its command line names `marker` (our config file or data dir): never signal a stranger."""
    return pid_alive(pid) and marker in cmdline(pid or 0)


def wait_dead(pid: int, timeout_s: float) -> bool:
    return wait_until(lambda: not pid_alive(pid), timeout_s, 0.05)


def terminate(pid: int, timeout_s: float = 30.0) -> bool:
    """SIGTERM, wait up to timeout_s, then SIGKILL. True when it went down by itself."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_dead(pid, timeout_s):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_dead(pid, 5.0)
    return False


def spawn_detached(cmd: Sequence[str], output: Path) -> int:
    """Start a daemon: own session (no Ctrl-C from the terminal that ran `up`), stdin from /dev/null,
    stdout and stderr appended to `output`. posix_spawn, not Popen: a Popen object collected while its
    process runs warns, and this process outlives the Python that started it."""
    fd = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        return os.posix_spawn(
            cmd[0],
            list(cmd),
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, fd, 1),
                (os.POSIX_SPAWN_DUP2, fd, 2),
            ],
            setsid=True,
        )
    except OSError as exc:
        raise StackError(f"could not start {cmd[0]}: {exc}") from exc
    finally:
        os.close(fd)


# --- ports ------------------------------------------------------------------------------------------


def port_open(host: str, port: int, timeout_s: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEXIP:HEXPORT, state 0A is LISTEN
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def port_owner(port: int) -> int | None:
    """Pid of the process listening on `port`, best effort (None when it cannot be seen)."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not wanted:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in wanted:
                        return int(proc.name)
    return None


def describe_owner(port: int) -> str:
    pid = port_owner(port)
    if pid is None:
        return "an unknown process"
    return f"pid {pid} ({cmdline(pid)[:160] or '?'})"


def foreign_port_error(service: str, host: str, port: int, state_dir: Path) -> StackError:
    return StackError(
        f"port {host}:{port} is taken by {describe_owner(port)}, which is not Reelfab's {service} "
        f"(state dir {state_dir}); stop it or choose another port in the settings"
    )


# --- waiting, locking, running --------------------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialises two `up`/`down` runs on one state dir (a CLI and a test session, say)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def tail(path: Path, lines: int = 30, since: int = 0) -> str:
    """The last lines of a log, only from byte offset `since` on (what this start wrote)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            end = handle.tell()
            if end < since:
                since = 0  # rotated meanwhile
            handle.seek(max(since, end - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:]) or "(nothing logged)"


def run(
    cmd: Sequence[str],
    what: str,
    timeout_s: float = 120.0,
    env: Mapping[str, str] | None = None,
    start_new_session: bool = False,
) -> str:
    """Run a command to completion; StackError with its output when it fails."""
    try:
        done = subprocess.run(
            list(cmd),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=timeout_s,
            check=False,
            env=env,
            start_new_session=start_new_session,
        )
    except FileNotFoundError as exc:
        raise StackError(f"{what}: {cmd[0]} not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"{what}: no answer after {timeout_s:.0f} s ({' '.join(cmd)})") from exc
    if done.returncode != 0:
        out = "\n".join(done.stdout.strip().splitlines()[-30:])
        raise StackError(f"{what} failed (exit {done.returncode}): {' '.join(cmd)}\n{out}")
    return done.stdout


def is_root() -> bool:
    return os.geteuid() == 0


def apt_install(packages: Sequence[str], why: str, say: Say) -> None:
    """Install Debian packages (root only); the stack's fallback when java/mvn/PostgreSQL are missing."""
    if not is_root() or shutil.which("apt-get") is None:
        raise StackError(f"{why}; install the Debian packages {' '.join(packages)} (needs root and apt-get)")
    say(f"{why}: installing {' '.join(packages)} with apt-get (one time)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update"], "apt-get update", timeout_s=600, env=env)
    run(["apt-get", "install", "-y", "--no-install-recommends", *packages], "apt-get install", 900, env=env)
