"""The chaos suite's own stack: a Kafka and a PostgreSQL of its own (free ports, a state dir in a temp
folder, started and stopped with the project's reelfab.devtools.localstack functions), and the consent registry,
swapper-gpu and post-producer as real `reelfab serve` processes, so a kill -9 is a real one.

Nothing here may touch the shared stack (127.0.0.1:9092 / :5433, ./.reelfab): every Settings object is
built from explicit values, every child process gets an environment with the caller's REELFAB_*
variables removed, and `down` refuses a settings object whose state dir is not this suite's."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from reelfab.settings import Settings

REPO = Path(__file__).resolve().parents[2]
REELFAB = REPO / ".venv" / "bin" / "reelfab"
SHARED_PORTS = {9092, 9093, 5433}  # the stack other engineers use: never ours
SERVICES = ("consent-registry", "swapper-gpu", "post-producer")


def free_port(taken: set[int]) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in taken and port not in SHARED_PORTS:
            taken.add(port)
            return port


# --- processes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    session: int
    comm: str
    cmdline: str


def processes() -> list[Proc]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] == "Z":
            continue
        found.append(Proc(int(entry.name), int(fields[1]), int(fields[3]), comm, cmd))
    return found


def session_members(session: int, exclude: int | None = None) -> list[Proc]:
    """Live processes of a session: a service we start leads its own, its ffmpeg children inherit it."""
    return [p for p in processes() if p.session == session and p.pid != exclude]


def ffmpeg_children(session: int, exclude: int | None = None) -> list[Proc]:
    return [p for p in session_members(session, exclude) if p.comm in ("ffmpeg", "ffprobe")]


# --- the stack ---------------------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    port: int
    env: dict[str, str]
    log: Path
    cwd: Path
    proc: subprocess.Popen[bytes] | None = None
    generations: list[int] = field(default_factory=list)  # every pid it ran as (each leads a session)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} runs already"
        with self.log.open("ab") as sink:
            sink.write(f"\n--- start {time.strftime('%H:%M:%S')}\n".encode())
            self.proc = subprocess.Popen([str(REELFAB), "serve", self.name], env=self.env, cwd=self.cwd,
                                         stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.generations.append(self.proc.pid)

    async def ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if self.proc is None or self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited ({self.proc and self.proc.returncode}):\n{self.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/readyz")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} not ready within {timeout:.0f} s:\n{self.tail()}")
                await asyncio.sleep(0.2)

    def kill9(self) -> int:
        assert self.proc is not None
        pid = self.proc.pid
        os.kill(pid, signal.SIGKILL)
        self.proc.wait()
        return pid

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (the service's clean stop), SIGKILL if it hangs; then whatever it left in its session."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reap_leftovers()

    def reap_leftovers(self) -> list[Proc]:
        """Kill (by pid) anything still alive in the sessions of this service's past processes."""
        alive = self.proc.pid if self.proc is not None and self.proc.poll() is None else None
        left = [p for pid in self.generations if pid != alive for p in session_members(pid)]
        for p in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
        return left

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


class ChaosStack:
    """Temp root layout: state/ (REELFAB_STATE_DIR: kafka/, postgres/, swapper-work/, post-work/),
    objects/ (the store), assets/, logs/, run/ (the services' cwd) and canaries the hostile-id scenario
    watches."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="reelfab-chaos-")).resolve()
        self.root.chmod(0o755)  # as root, PostgreSQL runs as `postgres` and must reach state/postgres
        for sub in ("state", "objects", "assets", "logs", "run"):
            (self.root / sub).mkdir()
        ports: set[int] = set()
        self.kafka_port, self.controller_port, self.pg_port = free_port(ports), free_port(ports), free_port(ports)
        self.ports = {name: free_port(ports) for name in SERVICES}
        self.master_key = base64.b64encode(os.urandom(32)).decode()
        self.settings = Settings(
            state_dir=self.root / "state",
            kafka_bootstrap=f"127.0.0.1:{self.kafka_port}",
            kafka_controller_port=self.controller_port,
            postgres_host="127.0.0.1",
            postgres_port=self.pg_port,
            postgres_db="reelfab",
            postgres_user="postgres",
            postgres_password="",
            storage_root=(self.root / "objects").as_uri(),
            schema_registry_url=None,
            consumer_session_timeout_ms=6000,
            consumer_heartbeat_interval_ms=300,
            consumer_fetch_max_wait_ms=20,
            consent_asset_kind="synthetic",
            consent_master_key=self.master_key,
            face_backend="classical",
            log_format="json",
        )
        self._check_isolated()
        self.services: dict[str, Service] = {}
        self.admin_token = ""
        self.reader_token = ""

    # -- safety -------------------------------------------------------------------------------------

    def _check_isolated(self) -> None:
        s = self.settings
        assert Path(s.state_dir).resolve().is_relative_to(self.root), s.state_dir
        assert self.kafka_port not in SHARED_PORTS and self.pg_port not in SHARED_PORTS
        assert s.kafka_controller_port not in SHARED_PORTS

    # -- Kafka + PostgreSQL ---------------------------------------------------------------------------

    def _seed_kafka_jars(self) -> None:
        """Reuse the broker jars a `make up` already resolved (hard links), instead of Maven again."""
        from reelfab.devtools.localstack.kafka import lib_dir

        ours = lib_dir(self.settings)
        shared = REPO / ".reelfab" / "kafka" / ours.name
        if (ours / ".complete").exists() or not (shared / ".complete").exists():
            return  # otherwise localstack resolves them with Maven, as `make up` does
        ours.parent.mkdir(parents=True, exist_ok=True)

        def link(src: str, dst: str) -> None:
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)

        shutil.copytree(shared, ours, copy_function=link)

    def up(self) -> None:
        from reelfab.devtools.localstack import up

        self._check_isolated()
        self._seed_kafka_jars()
        up(self.settings, say=lambda _line: None)

    def down(self) -> None:
        from reelfab.devtools.localstack import down

        self._check_isolated()
        down(self.settings, say=lambda _line: None)

    def stop_kafka(self) -> None:
        from reelfab.devtools.localstack import stop_kafka

        self._check_isolated()
        stop_kafka(self.settings, say=lambda _line: None)

    def start_kafka(self) -> None:
        from reelfab.devtools.localstack import start_kafka

        self._check_isolated()
        start_kafka(self.settings, say=lambda _line: None)

    def stop_postgres(self) -> None:
        from reelfab.devtools.localstack import stop_postgres

        self._check_isolated()
        stop_postgres(self.settings, say=lambda _line: None)

    def start_postgres(self) -> None:
        from reelfab.devtools.localstack import start_postgres

        self._check_isolated()
        start_postgres(self.settings, say=lambda _line: None)

    # -- services -----------------------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        """A child's environment: the caller's minus every REELFAB_* variable, plus this stack's."""
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("REELFAB_")}
        env.update({
            "REELFAB_STATE_DIR": str(s.state_dir),
            "REELFAB_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "REELFAB_KAFKA_CONTROLLER_PORT": str(s.kafka_controller_port),
            "REELFAB_POSTGRES_HOST": s.postgres_host,
            "REELFAB_POSTGRES_PORT": str(s.postgres_port),
            "REELFAB_STORAGE_ROOT": s.storage_root,
            "REELFAB_CONSUMER_SESSION_TIMEOUT_MS": str(s.consumer_session_timeout_ms),
            "REELFAB_CONSUMER_HEARTBEAT_INTERVAL_MS": str(s.consumer_heartbeat_interval_ms),
            "REELFAB_CONSUMER_FETCH_MAX_WAIT_MS": str(s.consumer_fetch_max_wait_ms),
            "REELFAB_CONSENT_ASSET_KIND": "synthetic",
            "REELFAB_CONSENT_MASTER_KEY": self.master_key,
            "REELFAB_CONSENT_REGISTRY_URL": f"http://127.0.0.1:{self.ports['consent-registry']}",
            "REELFAB_FACE_BACKEND": "classical",
            "REELFAB_LOG_FORMAT": "json",
            "REELFAB_LOG_LEVEL": "INFO",
            # an outage's end is noticed within 2 s (default cap 10 s): same behaviour, shorter scenarios
            "REELFAB_OUTAGE_BACKOFF_MAX_S": "2",
            "PYTHONUNBUFFERED": "1",
        })
        env.update(extra)
        return env

    def service(self, name: str) -> Service:
        if name not in self.services:
            extra = {"REELFAB_HTTP_PORT": str(self.ports[name])}
            if name != "consent-registry":
                extra["REELFAB_CONSENT_TOKEN"] = self.reader_token
            self.services[name] = Service(name, self.ports[name], self.env(**extra), self.root / "logs" / f"{name}.log",
                                          self.root / "run")
        return self.services[name]

    async def start_services(self) -> None:
        import asyncpg

        from reelfab_consent_registry import tokens
        from reelfab_consent_registry.bootstrap import SCHEMA

        registry = self.service("consent-registry")
        registry.start()
        await registry.ready()
        pool = await asyncpg.create_pool(self.settings.postgres_dsn, min_size=1, max_size=2)
        try:
            self.admin_token = await tokens.create_token(pool, SCHEMA, "chaos-admin", "admin")
            self.reader_token = await tokens.create_token(pool, SCHEMA, "chaos-workers", "reader")
        finally:
            await pool.close()
        workers = [self.service("swapper-gpu"), self.service("post-producer")]
        for w in workers:
            w.start()
        await asyncio.gather(*(w.ready() for w in workers))

    async def restart(self, name: str) -> None:
        svc = self.service(name)
        svc.start()
        await svc.ready()

    def stop_services(self) -> None:
        for name in reversed(SERVICES):
            if name in self.services:
                self.services[name].stop()

    def logs(self, name: str, lines: int = 40) -> str:
        return self.service(name).tail(lines)

    # -- teardown -----------------------------------------------------------------------------------

    def close(self, keep: bool) -> None:
        try:
            self.stop_services()
        finally:
            try:
                self.down()
            finally:
                from reelfab.devtools.localstack.postgres import pg_dir

                folder = pg_dir(self.settings)
                if not keep:
                    if not folder.is_relative_to(self.root):  # the /var/lib/reelfab fallback: ours alone
                        shutil.rmtree(folder, ignore_errors=True)
                    shutil.rmtree(self.root, ignore_errors=True)


def tree_snapshot(root: Path, skip: tuple[Path, ...]) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` outside ``skip``: (size, mtime_ns); a created or deleted entry shows."""
    out: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not any((here / d).resolve() == s for s in skip)]
        for name in dirnames + filenames:
            p = here / name
            with contextlib.suppress(FileNotFoundError):
                st = p.lstat()
                out[str(p)] = (st.st_size if p.is_file() else 0, st.st_mtime_ns if p.is_file() else 0)
    return out


def mtime(path: Path) -> Any:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    return (st.st_mode, st.st_size, st.st_mtime_ns)
