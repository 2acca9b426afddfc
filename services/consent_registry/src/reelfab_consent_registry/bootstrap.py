"""Builds the registry: the one place that knows which adapters are live. ``bootstrap`` wires the
use cases and the handlers from whatever adapters it is given (a repository, a bus for the
checkpoint topic, an object store, a master key, a face engine, a unit of work, a clock), real or
fake; ``bootstrap_postgres`` gives it the real ones from settings, for the service, its API and its
CLI alike. Broker-free unit tests pass the in-memory ones (``memory``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from reelfab.bus import Bus
from reelfab.bus.outbox import Outbox
from reelfab.bus.unit_of_work import InMemoryUnitOfWork, PostgresUnitOfWork, UnitOfWork
from reelfab.contracts.topics import AUDIT_CHECKPOINT, CONSENT_CHANGED, JOB_FAILED
from reelfab.faces.types import FaceEngine
from reelfab.settings import Settings

from .audit_trail import AuditTrail, utc_now
from .config import RegistryConfig
from .crypto import KeyWrapper, LocalMasterKey
from .handlers import Handler, make_handlers
from .images import FaceWork
from .repository import PostgresRepository, Repository
from .use_cases import Objects, Registry

SCHEMA = "consent_registry"
# job.failed: the bus announces a dead-lettered job-keyed message (publish.completed, job.failed) there
PRODUCES = (CONSENT_CHANGED, AUDIT_CHECKPOINT, JOB_FAILED)
T = TypeVar("T")


@dataclass(frozen=True)
class Wired:
    """The registry's use cases (for the API and the CLI) and its event handlers (one per consumed
    topic, on the unit of work)."""

    registry: Registry
    handlers: dict[str, Handler]


def bootstrap(
    *,
    repository: Repository,
    bus: Bus,
    objects: Objects,
    wrapper: KeyWrapper,
    engine_factory: Callable[[], FaceEngine],
    uow: UnitOfWork | None = None,
    config: RegistryConfig | None = None,
    clock: Callable[[], datetime] = utc_now,
    trusted_keys: dict[str, Ed25519PublicKey] | None = None,
) -> Wired:
    """Wire the registry from its adapters. Without ``uow`` the handlers get an in-memory unit of
    work publishing to ``bus`` (tests)."""
    config = config or RegistryConfig()
    faces = FaceWork(engine_factory, concurrency=config.face_concurrency, max_pixels=config.max_face_pixels,
                     work_pixels=config.face_work_pixels)
    trail = AuditTrail(repository, bus, wrapper, config, clock, trusted_keys)
    registry = Registry(repository, objects, wrapper, faces, trail, config, clock)
    return Wired(registry, make_handlers(registry, uow or InMemoryUnitOfWork(bus, PRODUCES)))


def bootstrap_postgres(settings: Settings, pool: asyncpg.Pool, bus: Bus, *, schema: str = SCHEMA,
                       uow: UnitOfWork | None = None) -> Wired:
    """The registry on its PostgreSQL schema, with the object store, master key and face engine the
    settings name. ``uow``: the service context's (default: one on the same pool and schema)."""
    from reelfab.faces.backends import get_engine
    from reelfab.storage import open_store

    outbox = Outbox(schema, bus)
    return bootstrap(
        repository=PostgresRepository(pool, schema, outbox),
        bus=bus,
        objects=open_store(settings.storage_root),
        wrapper=master_key(settings),
        engine_factory=lambda: get_engine(settings.face_backend, settings),
        uow=uow or PostgresUnitOfWork(pool, schema, outbox, frozenset(PRODUCES)),
        config=registry_config(settings),
        trusted_keys=trusted_keys(settings),
    )


def setting(value: T | None, default: T) -> T:
    """A registry setting from Settings (REELFAB_CONSENT_*), or the registry's own default when unset."""
    return default if value is None else value


def master_key(settings: Settings) -> LocalMasterKey:
    if settings.consent_master_key:
        return LocalMasterKey.from_text(settings.consent_master_key)
    # development: a key file beside the local stack's data, created once, readable by root only
    return LocalMasterKey.from_file(Path(settings.state_dir) / "consent-master.key", create=True)


def registry_config(settings: Settings) -> RegistryConfig:
    d = RegistryConfig()
    return RegistryConfig(
        asset_kind=settings.consent_asset_kind,
        phash_threshold=settings.consent_phash_threshold,
        max_upload_bytes=settings.consent_max_upload_bytes,
        max_face_pixels=setting(settings.consent_max_face_pixels, d.max_face_pixels),
        face_work_pixels=setting(settings.consent_face_work_pixels, d.face_work_pixels),
        face_concurrency=setting(settings.consent_face_concurrency, d.face_concurrency),
        checkpoint_interval_s=setting(settings.consent_checkpoint_interval_s, d.checkpoint_interval_s),
        checkpoint_every=setting(settings.consent_checkpoint_every, d.checkpoint_every),
    )


def trusted_keys(settings: Settings) -> dict[str, Ed25519PublicKey] | None:
    """REELFAB_CONSENT_PUBLIC_KEYS when set: what checkpoints are verified with."""
    if not settings.consent_public_keys.strip():
        return None
    from reelfab.consent.gate import load_public_keys

    return load_public_keys(settings)
