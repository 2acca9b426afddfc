"""A real PostgreSQL (Debian's server binaries) under settings.state_dir/postgres.

initdb once into postgres/data (trust auth, UTF8), pg_ctl start on 127.0.0.1:settings.postgres_port
with fsync off, log in postgres/postgres.log; the pid is PostgreSQL's own data/postmaster.pid.
As root, the folder belongs to the `postgres` user and every server command runs through runuser.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shlex
import shutil
import stat
import time
from pathlib import Path
from typing import Any

from reelfab.bus.admin import run_sync
from reelfab.errors import StackError
from reelfab.settings import Settings

from . import procs
from .procs import Say

PG_LIB = Path("/usr/lib/postgresql")
SYSTEM_USER = "postgres"  # Debian's server account, which owns the data dir when we run as root
START_TIMEOUT_S = 60
# a Unix socket path must fit in 107 bytes; past that the server listens on TCP only
MAX_SOCKET_DIR = 90


# --- paths --------------------------------------------------------------------------------------------


# where the cluster lives when the postgres account cannot reach the project's state dir (a clone
# under a 0700 folder, as mktemp -d makes): outside the project, named after it, still ours alone
FALLBACK_ROOT = Path("/var/lib/reelfab")


def pg_dir(settings: Settings) -> Path:
    local = Path(settings.state_dir).resolve() / "postgres"
    if not procs.is_root() or _reachable(local):
        return local
    digest = hashlib.sha256(str(local).encode()).hexdigest()[:12]
    return FALLBACK_ROOT / f"postgres-{digest}"


def _reachable(folder: Path) -> bool:
    try:
        server_uid = pwd.getpwnam(SYSTEM_USER).pw_uid
    except KeyError:
        return True  # no account yet: apt creates it; the check in ensure_initdb speaks then
    for parent in folder.parents:
        try:
            mode = parent.stat()
        except FileNotFoundError:
            continue  # created later with the default umask, traversable
        if not mode.st_mode & stat.S_IXOTH and mode.st_uid != server_uid:
            return False
    return True


def data_dir(settings: Settings) -> Path:
    return pg_dir(settings) / "data"


def log_path(settings: Settings) -> Path:
    return pg_dir(settings) / "postgres.log"


def _lock_path(settings: Settings) -> Path:
    return Path(settings.state_dir).resolve() / ".postgres.lock"


def pid_path(settings: Settings) -> Path:
    return data_dir(settings) / "postmaster.pid"


# --- binaries and users ------------------------------------------------------------------------------


def _versions() -> list[tuple[int, Path]]:
    found = []
    if PG_LIB.is_dir():
        for entry in PG_LIB.iterdir():
            if entry.name.isdigit() and (entry / "bin" / "pg_ctl").exists():
                found.append((int(entry.name), entry / "bin"))
    return sorted(found)


def find_bin(say: Say) -> Path:
    """The bin folder of the highest installed PostgreSQL major version, installing one if none."""
    versions = _versions()
    if not versions:
        procs.apt_install(["postgresql"], f"no PostgreSQL server under {PG_LIB}", say)
        versions = _versions()
        if not versions:
            raise StackError(f"installed postgresql but found no {PG_LIB}/<N>/bin/pg_ctl")
    return versions[-1][1]


def _as_server_user(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root: run its commands as the postgres account
    return ["runuser", "-u", SYSTEM_USER, "--", *cmd] if procs.is_root() else cmd


def _chown_to_server_user(path: Path) -> None:
    if not procs.is_root():
        return
    try:
        account = pwd.getpwnam(SYSTEM_USER)
    except KeyError as exc:
        raise StackError(f"running as root but there is no '{SYSTEM_USER}' user to own {path}") from exc
    os.chown(path, account.pw_uid, account.pw_gid)


def _check_reachable(folder: Path) -> None:
    """As root, the postgres account must be able to walk down to the data dir; say which folder blocks it."""
    if not procs.is_root():
        return
    for parent in reversed(folder.parents):
        mode = parent.stat()
        if not mode.st_mode & stat.S_IXOTH and mode.st_uid != pwd.getpwnam(SYSTEM_USER).pw_uid:
            raise StackError(
                f"the '{SYSTEM_USER}' user cannot reach {folder}: {parent} has mode "
                f"{stat.filemode(mode.st_mode)} (no search permission for others); use a state dir "
                f"under a world-traversable folder (REELFAB_STATE_DIR) or chmod o+x {parent}"
            )


# --- init, start, stop ----------------------------------------------------------------------------------


def ensure_initdb(settings: Settings, bin_dir: Path, say: Say) -> None:
    data = data_dir(settings)
    if (data / "PG_VERSION").exists():
        return
    say(f"postgres: initdb {data} (first run only)")
    folder = pg_dir(settings)
    if not folder.is_relative_to(Path(settings.state_dir).resolve()):
        say(f"postgres: the '{SYSTEM_USER}' account cannot reach {settings.state_dir}; the cluster lives in {folder}")
        FALLBACK_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    _chown_to_server_user(folder)
    _check_reachable(folder)
    staging = folder / "data.partial"  # an interrupted initdb leaves a folder initdb refuses to reuse
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(data, ignore_errors=True)
    cmd = [str(bin_dir / "initdb"), "-D", str(staging), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
    procs.run(_as_server_user([*cmd, "--locale=C", "--no-sync"]), "initdb", timeout_s=120)
    staging.rename(data)


def _server_options(settings: Settings) -> str:
    data = data_dir(settings)
    socket_dir = shlex.quote(str(data)) if len(str(data)) <= MAX_SOCKET_DIR else "''"
    return f"-h {settings.postgres_host} -p {settings.postgres_port} -k {socket_dir} -c fsync=off"


def _running_pid(settings: Settings) -> int | None:
    pid = procs.read_pid(pid_path(settings))
    return pid if procs.is_ours(pid, str(data_dir(settings))) else None


def _running_port(settings: Settings) -> int | None:
    # postmaster.pid: pid, data dir, start time, port, socket dir, listen address, shmem key, status
    try:
        lines = pid_path(settings).read_text().splitlines()
    except FileNotFoundError:
        return None
    return int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None


def _major(bin_dir: Path) -> int:
    return int(bin_dir.parent.name)


def _check_data_version(settings: Settings, bin_dir: Path) -> None:
    try:
        made_by = int((data_dir(settings) / "PG_VERSION").read_text().strip())
    except (FileNotFoundError, ValueError):
        return
    if made_by != _major(bin_dir):
        raise StackError(
            f"{data_dir(settings)} was made by PostgreSQL {made_by} but the server found is "
            f"{_major(bin_dir)}; remove {pg_dir(settings)} (its data is lost) or install postgresql-{made_by}"
        )


def launch(settings: Settings, bin_dir: Path, say: Say) -> int:
    log = log_path(settings)
    if not log.exists():
        log.touch()
        _chown_to_server_user(log)
    cmd = [
        str(bin_dir / "pg_ctl"), "-D", str(data_dir(settings)), "-l", str(log),
        "-o", _server_options(settings), "-w", "-t", str(START_TIMEOUT_S), "start",
    ]  # fmt: skip
    try:
        # own session: the server must not get the Ctrl-C of the terminal that ran `up`
        procs.run(_as_server_user(cmd), "pg_ctl start", START_TIMEOUT_S + 10, start_new_session=True)
    except StackError as exc:
        raise StackError(f"{exc}\n--- tail of {log}:\n{procs.tail(log, 20)}") from exc
    pid = procs.read_pid(pid_path(settings))
    if pid is None:
        raise StackError(f"pg_ctl reported a start but {pid_path(settings)} has no pid")
    return pid


async def _ensure_database_async(settings: Settings) -> list[str]:
    import asyncpg

    made: list[str] = []
    conn = await asyncpg.connect(
        host=settings.postgres_host,
        port=settings.postgres_port,
        user="postgres",
        database="postgres",
        timeout=10,
    )
    try:
        user, db = settings.postgres_user, settings.postgres_db
        if not await conn.fetchval("select 1 from pg_roles where rolname = $1", user):
            await conn.execute(f"create role {_ident(user)} login superuser")
            made.append(f"role {user}")
        if not await conn.fetchval("select 1 from pg_database where datname = $1", db):
            await conn.execute(f"create database {_ident(db)} owner {_ident(user)}")
            made.append(f"database {db}")
    finally:
        await conn.close()
    return made


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def ensure_database(settings: Settings, say: Say) -> None:
    try:
        made = run_sync(lambda: _ensure_database_async(settings))
    except Exception as exc:
        raise StackError(f"postgres: could not create {settings.postgres_db!r}: {exc!r}") from exc
    if made:
        say(f"postgres: created {', '.join(made)}")


def start_postgres(settings: Settings, say: Say = print) -> str:
    with procs.file_lock(_lock_path(settings)):
        host, port = settings.postgres_host, settings.postgres_port
        pid = _running_pid(settings)
        if pid is not None and procs.port_open(host, port):
            ensure_database(settings, say)  # cheap, and a changed postgres_db still gets its database
            line = f"postgres: already running (pid {pid}, {host}:{port})"
            say(line)
            return line
        if pid is None and procs.port_open(host, port):
            raise procs.foreign_port_error("PostgreSQL", host, port, Path(settings.state_dir).resolve())
        if pid is not None and _running_port(settings) not in (None, port):
            raise StackError(
                f"postgres: our server (pid {pid}) runs on port {_running_port(settings)}, the settings say "
                f"{port}; run `down` first"
            )
        if pid is None and pid_path(settings).exists():
            say("postgres: removing a stale postmaster.pid (its process is gone)")
            pid_path(settings).unlink(missing_ok=True)
        started = time.monotonic()
        bin_dir = find_bin(say)
        ensure_initdb(settings, bin_dir, say)
        _check_data_version(settings, bin_dir)
        if pid is None:
            pid = launch(settings, bin_dir, say)
        elif not procs.wait_until(lambda: procs.port_open(host, port), START_TIMEOUT_S, 0.1):
            raise StackError(f"postgres: pid {pid} is ours but {host}:{port} does not answer")
        ensure_database(settings, say)
        line = f"postgres: running (pid {pid}, {host}:{port}, ready in {time.monotonic() - started:.1f} s)"
        say(line)
        return line


def stop_postgres(settings: Settings, say: Say = print) -> str:
    with procs.file_lock(_lock_path(settings)):
        pid = _running_pid(settings)
        if pid is None:
            line = "postgres: not running"
            say(line)
            return line
        started = time.monotonic()
        bin_dir = _bin_of(pid) or find_bin(say)
        cmd = [str(bin_dir / "pg_ctl"), "-D", str(data_dir(settings)), "-m", "fast", "-w", "-t", "30", "stop"]
        try:
            procs.run(_as_server_user(cmd), "pg_ctl stop", 40)
        except StackError:
            if procs.pid_alive(pid):
                procs.terminate(pid, 10)  # SIGTERM is PostgreSQL's "smart", then SIGKILL
        line = f"postgres: stopped pid {pid} in {time.monotonic() - started:.1f} s"
        say(line)
        return line


def _bin_of(pid: int) -> Path | None:
    # stop with the pg_ctl of the server that runs, not of whatever version is newest now
    match = re.match(r"(\S+)/postgres(\s|$)", procs.cmdline(pid))
    return Path(match.group(1)) if match and Path(match.group(1), "pg_ctl").exists() else None


def postgres_status(settings: Settings) -> dict[str, Any]:
    host, port = settings.postgres_host, settings.postgres_port
    pid = _running_pid(settings)
    port_open = procs.port_open(host, port)
    return {
        "service": "postgres",
        "running": pid is not None and port_open,
        "pid": pid,
        "host": host,
        "port": port,
        "port_open": port_open,
        "foreign": port_open and pid is None,
        "database": settings.postgres_db,
        "dsn": settings.postgres_dsn,
        "initialised": (data_dir(settings) / "PG_VERSION").exists(),
        "state_dir": str(pg_dir(settings)),
        "log": str(log_path(settings)),
    }
