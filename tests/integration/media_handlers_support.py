"""What the swapper's and post-producer's handler tests share: a service context on a real
PostgreSQL schema (delivery tables, outbox) with the in-memory bus, signed consent leases for the
local view, a stand-in registry client, and typed events for the handlers."""

from __future__ import annotations

import dataclasses
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from reelfab.bus.memory import InMemoryBus
from reelfab.bus.message import Event
from reelfab.bus.outbox import Outbox
from reelfab.bus.unit_of_work import InMemoryUnitOfWork, PostgresUnitOfWork, UnitOfWork
from reelfab.consent.decision import ConsentRequest, Decision
from reelfab.consent.lease import EnrolledImageRef, LeaseTerms, Scope, key_id_of, sign
from reelfab.consent.view import ConsentView
from reelfab.contracts.codec import default_codec
from reelfab.contracts.records import model_for
from reelfab.contracts.topics import BY_NAME
from reelfab.media.tools import tool
from reelfab.service import ServiceContext
from reelfab.settings import Settings

KEY = Ed25519PrivateKey.generate()
KEY_ID = key_id_of(KEY.public_key())


def view(service: str) -> ConsentView:
    return ConsentView({KEY_ID: KEY.public_key()}, service=service)


def lease(subject: str, version: int = 1, status: str = "GRANTED", *, commercial: bool = False,
          image_sha256: str = "ab" * 32) -> dict[str, Any]:
    """A consent.changed value as the view applies it."""
    now = datetime.now(UTC)
    terms = LeaseTerms(subject=subject, consent_version=version, status=status,
                       scope=Scope(("tiktok",), ("dance",), (), commercial), valid_from=now - timedelta(days=1),
                       valid_until=now + timedelta(days=30), daily_cap=10,
                       images=(EnrolledImageRef(image_sha256, "f0f0f0f0f0f0f0f0", "dlib_resnet_v1"),),
                       embedding_digest="d" * 64, document_sha256="e" * 64, issued_at=now)
    signed = sign(terms, KEY)
    return {"subject_id": subject, "lease": {"payload": signed.payload, "signature": signed.signature, "key_id": signed.key_id}}


class Registry:
    """Stands in for RegistryClient: answers from ``answers`` (the last one repeats), records calls."""

    def __init__(self, *answers: Decision) -> None:
        self.answers = list(answers) or [Decision(True, "ok", "allowed by the registry", 1)]
        self.calls: list[dict[str, Any]] = []

    def check(self, request: ConsentRequest, *, image_bytes: bytes | None = None, consume: bool = False,
              job_id: str | None = None) -> Decision:
        self.calls.append({"request": request, "image": image_bytes is not None, "consume": consume, "job_id": job_id})
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def context(module: ModuleType, pool: Any, schema: str, settings: Settings) -> ServiceContext:
    """The service's context on ``schema``: its outbox and, on a pool, its PostgreSQL unit of work."""
    spec = dataclasses.replace(module.SPEC, db_schema=schema)
    bus = InMemoryBus(settings, spec.name, default_codec())
    outbox = Outbox(schema, bus)
    produces = frozenset(spec.produces)
    uow: UnitOfWork = PostgresUnitOfWork(pool, schema, outbox, produces) if pool is not None \
        else InMemoryUnitOfWork(bus, produces)
    return ServiceContext(spec, settings, bus, pool, outbox, uow)


def event(record: str, topic: str, values: dict[str, Any]) -> Event[Any]:
    model = model_for(f"reelfab.events.{record}")
    key = values[BY_NAME[topic].key_field]
    return Event(model(**values), topic, key, 0, 0, 1)


async def announced(ctx: ServiceContext) -> list[tuple[str, dict[str, Any]]]:
    """(topic, value) of every outbox row the handler wrote, in order."""
    assert ctx.pool is not None
    return await outbox_rows(ctx.pool, ctx.spec.db_schema)


async def outbox_rows(pool: Any, schema: str) -> list[tuple[str, dict[str, Any]]]:
    """(topic, value) of every row in ``schema``'s outbox, in order."""
    rows = await pool.fetch(f'SELECT topic, value FROM "{schema}".outbox ORDER BY id')
    codec = default_codec()
    return [(row["topic"], codec.decode(bytes(row["value"])).value) for row in rows]


def clip(path: Path, *, seconds: float, size: str = "180x320", source: str = "testsrc2", audio: bool = False,
         codec: str = "ffv1") -> Path:
    """A generated clip (lavfi): ``testsrc2`` has no face; FFV1 in Matroska like a mezzanine."""
    cmd = [tool("ffmpeg"), "-v", "error", "-y", "-f", "lavfi", "-i", f"{source}=size={size}:rate=25:duration={seconds}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "aac" if codec != "ffv1" else "flac"]
    cmd += ["-c:v", codec, "-pix_fmt", "yuv420p" if codec != "ffv1" else "yuv444p", str(path)]
    subprocess.run(cmd, check=True)
    return path


def job_id() -> str:
    return f"job-{uuid.uuid4().hex[:10]}"
