"""A real single-node Apache Kafka (KRaft, combined broker + controller) under settings.state_dir.

Jars come from Maven Central through stack/kafka/pom.xml and are cached in kafka/lib-<version>/;
the broker runs as `java -cp lib/* kafka.Kafka kafka/server.properties`, detached, its pid in
kafka/kafka.pid, its log4j2 log in kafka/kafka.log and its stdout/stderr in kafka/kafka.out.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, TypeVar

from reelfab.bus.admin import run_sync
from reelfab.errors import StackError
from reelfab.settings import Settings

from . import procs
from .procs import Say

# the Maven project that resolves the broker's jars and the broker's log configuration ship beside this module
STACK_DIR = Path(__file__).resolve().parent / "kafka"
POM = STACK_DIR / "pom.xml"
LOG4J_CONFIG = STACK_DIR / "log4j2.properties"

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
# room above settings.max_message_bytes for the record batch framing, the key and the headers the
# bus adds (a DLQ copy carries the original message plus reason/stage/attempt headers)
DEFAULT_PARTITIONS = 3

T = TypeVar("T")

# (topic name, partitions, topic configs)


# --- paths --------------------------------------------------------------------------------------------


def kafka_dir(settings: Settings) -> Path:
    return Path(settings.state_dir).resolve() / "kafka"


def lib_dir(settings: Settings) -> Path:
    return kafka_dir(settings) / f"lib-{settings.kafka_version}"


def data_dir(settings: Settings) -> Path:
    return kafka_dir(settings) / "data"


def config_path(settings: Settings) -> Path:
    return kafka_dir(settings) / "server.properties"


def pid_path(settings: Settings) -> Path:
    return kafka_dir(settings) / "kafka.pid"


def log_path(settings: Settings) -> Path:
    return kafka_dir(settings) / "kafka.log"


def out_path(settings: Settings) -> Path:
    return kafka_dir(settings) / "kafka.out"


def _lock_path(settings: Settings) -> Path:
    return Path(settings.state_dir).resolve() / ".kafka.lock"


def broker_max_message_bytes(settings: Settings) -> int:
    """The broker's message.max.bytes: the project's maximum plus room for framing and DLQ headers."""
    return settings.broker_max_message_bytes


# --- tools: java, mvn, jars ---------------------------------------------------------------------------


def find_java(say: Say) -> str:
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home) / "bin" / "java", os.X_OK):
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found:
        return found
    procs.apt_install(["openjdk-17-jre-headless"], "no java found (JAVA_HOME/bin/java or java on PATH)", say)
    found = shutil.which("java")
    if not found:
        raise StackError("java is still missing after installing openjdk-17-jre-headless")
    return found


def find_mvn(say: Say) -> str:
    found = shutil.which("mvn")
    if found:
        return found
    procs.apt_install(["maven"], "no mvn found on PATH (needed once, to fetch the Kafka jars)", say)
    found = shutil.which("mvn")
    if not found:
        raise StackError("mvn is still missing after installing maven")
    return found


def ensure_jars(settings: Settings, say: Say) -> Path:
    """The broker's class path folder, resolved once per version; a marker file proves it complete."""
    target = lib_dir(settings)
    marker = target / ".complete"
    if marker.exists():
        return target
    if not POM.exists():
        raise StackError(
            f"{POM} is missing: the Kafka jars are resolved with it (reinstall reelfab-devtools)"
        )
    find_java(say)  # mvn needs a JDK/JRE too
    mvn = find_mvn(say)
    version = settings.kafka_version
    say(f"kafka: downloading the Kafka {version} jars from Maven Central (first run only)...")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)  # no marker: an interrupted download, redo it
    started = time.monotonic()
    procs.run(
        [
            mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(POM),
            f"-Dkafka.version={version}", "dependency:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={staging}",
        ],
        f"resolving Kafka {version} with Maven",
        timeout_s=900,
    )  # fmt: skip
    if not list(staging.glob(f"kafka_2.13-{version}.jar")):
        raise StackError(f"Maven finished but {staging} has no kafka_2.13-{version}.jar")
    (staging / ".complete").write_text(f"kafka {version}\n")
    staging.rename(target)
    say(f"kafka: jars ready in {target} ({time.monotonic() - started:.1f} s)")
    return target


# --- config and storage ------------------------------------------------------------------------------


def server_properties(settings: Settings) -> str:
    host, port = procs.split_hostport(settings.kafka_bootstrap)
    ctrl = settings.kafka_controller_port
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # a static one-voter quorum: formatting needs no --standalone and the controller port may change
        "controller.quorum.voters": f"1@{host}:{ctrl}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{ctrl}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir(settings)),
        "num.partitions": str(DEFAULT_PARTITIONS),
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        # 50 by default: creating them on the first group join costs seconds on two cores
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # tests run consumers with ~2 s session timeouts; the broker's default floor is 6 s
        "group.min.session.timeout.ms": "500",
        "auto.create.topics.enable": "false",
        "message.max.bytes": str(broker_max_message_bytes(settings)),
        "replica.fetch.max.bytes": str(broker_max_message_bytes(settings)),
        # the cleaner's 128 MB default dedupe buffer is a quarter of a 512 MB heap
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        "num.network.threads": "2",
        "num.io.threads": "4",
        "log.retention.hours": "168",
    }
    header = "# generated by reelfab.devtools.localstack on every start; edit the settings, not this file\n"
    return header + "".join(f"{key}={value}\n" for key, value in props.items())


def write_config(settings: Settings) -> Path:
    path = config_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = server_properties(settings)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def _java_cmd(settings: Settings, java: str, libs: Path, heap: str) -> list[str]:
    return [
        java,
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        f"-Dkafka.logs.dir={kafka_dir(settings)}",
        "-cp",
        f"{libs}/*",
    ]


def _new_cluster_id() -> str:
    """Kafka's Uuid text form: 16 random bytes, URL-safe base64 without padding (22 characters).

    Like Kafka's own Uuid.randomUuid, never one that starts with "-": the storage tool's argument
    parser reads such an id as an option (one run in 64 failed that way).
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def ensure_formatted(settings: Settings, java: str, libs: Path, say: Say) -> None:
    if (data_dir(settings) / "meta.properties").exists():
        return
    say("kafka: formatting the KRaft storage (first run only)")
    data_dir(settings).mkdir(parents=True, exist_ok=True)
    procs.run(
        [
            *_java_cmd(settings, java, libs, "256m"), "kafka.tools.StorageTool", "format",
            "--config", str(config_path(settings)), f"--cluster-id={_new_cluster_id()}", "--ignore-formatted",
        ],
        "formatting the Kafka storage",
        timeout_s=120,
    )  # fmt: skip


# --- running ---------------------------------------------------------------------------------------------


def _running_pid(settings: Settings) -> int | None:
    """Our broker's pid when its process is alive; a stale pid file is removed."""
    path = pid_path(settings)
    pid = procs.read_pid(path)
    if pid is None:
        return None
    if procs.is_ours(pid, str(config_path(settings))):
        return pid
    path.unlink(missing_ok=True)
    return None


def _adopt_listener(settings: Settings, port: int) -> int | None:
    """A broker of ours that lost its pid file still names our config on its command line."""
    owner = procs.port_owner(port)
    if owner is not None and procs.is_ours(owner, str(config_path(settings))):
        procs.write_pid(pid_path(settings), owner)
        return owner
    return None


def _check_ports_free(settings: Settings) -> None:
    host, port = procs.split_hostport(settings.kafka_bootstrap)
    for p in (port, settings.kafka_controller_port):
        if procs.port_open(host, p) and _adopt_listener(settings, p) is None:
            raise procs.foreign_port_error("Kafka", host, p, Path(settings.state_dir).resolve())


def launch(settings: Settings, say: Say) -> int:
    """Start the broker process (detached) and return its pid; does not wait for it to answer."""
    java = find_java(say)
    libs = ensure_jars(settings, say)
    write_config(settings)
    ensure_formatted(settings, java, libs, say)
    cmd = [
        *_java_cmd(settings, java, libs, settings.kafka_heap),
        "kafka.Kafka",
        str(config_path(settings)),
    ]
    out = out_path(settings)
    with out.open("ab") as sink:
        sink.write(f"\n--- start {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
    pid = procs.spawn_detached(cmd, out)
    procs.write_pid(pid_path(settings), pid)
    return pid


def _failure(settings: Settings, why: str, since: tuple[int, int] = (0, 0)) -> StackError:
    log, out = log_path(settings), out_path(settings)
    return StackError(
        f"Kafka {why}.\n--- tail of {log}:\n{procs.tail(log, 30, since[0])}"
        f"\n--- tail of {out}:\n{procs.tail(out, 15, since[1])}"
    )


def _log_sizes(settings: Settings) -> tuple[int, int]:
    return procs.size(log_path(settings)), procs.size(out_path(settings))


async def _probe(bootstrap: str, timeout_ms: int = 2000) -> bool:
    """True when the broker answers a metadata request and lists itself (registered, unfenced)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return bool(cluster.get("brokers"))
    except Exception:  # any failure just means "not yet"
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def answers(settings: Settings) -> bool:
    host, port = procs.split_hostport(settings.kafka_bootstrap)
    if not procs.port_open(host, port):
        return False
    return run_sync(lambda: _probe(settings.kafka_bootstrap))


def wait_ready(
    settings: Settings, pid: int, timeout_s: float = START_TIMEOUT_S, since: tuple[int, int] = (0, 0)
) -> None:
    host, port = procs.split_hostport(settings.kafka_bootstrap)
    deadline = time.monotonic() + timeout_s
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # connection-refused noise while the broker boots
    try:
        while time.monotonic() < deadline:
            if not procs.pid_alive(pid):
                pid_path(settings).unlink(missing_ok=True)
                raise _failure(settings, f"exited while starting (pid {pid})", since)
            if procs.port_open(host, port) and run_sync(lambda: _probe(settings.kafka_bootstrap)):
                return
            time.sleep(0.2)
    finally:
        quiet.setLevel(level)
    raise _failure(
        settings, f"did not answer on {settings.kafka_bootstrap} within {timeout_s:.0f} s (pid {pid})"
    )


def _config_differs(settings: Settings) -> bool:
    path = config_path(settings)
    return path.exists() and path.read_text() != server_properties(settings)


def start_kafka(settings: Settings, say: Say = print) -> str:
    with procs.file_lock(_lock_path(settings)):
        pid = _running_pid(settings)
        if pid is None:
            _check_ports_free(settings)  # raises for a stranger, adopts our broker if it lost its pid file
            pid = _running_pid(settings)
        if pid is not None and _config_differs(settings):
            raise StackError(
                f"kafka: our broker (pid {pid}) runs with another configuration than the settings give "
                f"(ports, message size...); run `down` first. Its config: {config_path(settings)}"
            )
        if pid is not None and answers(settings):
            line = f"kafka: already running (pid {pid}, {settings.kafka_bootstrap})"
            say(line)
            return line
        started = time.monotonic()
        since = (0, 0)
        if pid is None:
            find_java(say)
            ensure_jars(settings, say)
            since = _log_sizes(settings)  # after the jars, before formatting: errors of this start only
            pid = launch(settings, say)
            say(f"kafka: started pid {pid}, waiting for {settings.kafka_bootstrap}...")
        else:
            say(f"kafka: pid {pid} is ours but not answering yet, waiting...")
        wait_ready(settings, pid, since=since)
        line = f"kafka: running (pid {pid}, {settings.kafka_bootstrap}, ready in {time.monotonic() - started:.1f} s)"
        say(line)
        return line


def stop_kafka(settings: Settings, say: Say = print) -> str:
    with procs.file_lock(_lock_path(settings)):
        pid = _running_pid(settings)
        if pid is None:
            line = "kafka: not running"
            say(line)
            return line
        started = time.monotonic()
        clean = procs.terminate(pid, STOP_TIMEOUT_S)
        pid_path(settings).unlink(missing_ok=True)
        how = "stopped" if clean else f"killed (no exit {STOP_TIMEOUT_S:.0f} s after SIGTERM)"
        line = f"kafka: {how} pid {pid} in {time.monotonic() - started:.1f} s"
        say(line)
        return line


def kafka_status(settings: Settings) -> dict[str, Any]:
    host, port = procs.split_hostport(settings.kafka_bootstrap)
    pid = procs.read_pid(pid_path(settings))
    ours = procs.is_ours(pid, str(config_path(settings)))
    port_open = procs.port_open(host, port)
    return {
        "service": "kafka",
        "running": ours and port_open,
        "pid": pid if ours else None,
        "bootstrap": settings.kafka_bootstrap,
        "controller_port": settings.kafka_controller_port,
        "port_open": port_open,
        "foreign": port_open and not ours,
        "version": settings.kafka_version,
        "jars_ready": (lib_dir(settings) / ".complete").exists(),
        "formatted": (data_dir(settings) / "meta.properties").exists(),
        "state_dir": str(kafka_dir(settings)),
        "log": str(log_path(settings)),
    }
