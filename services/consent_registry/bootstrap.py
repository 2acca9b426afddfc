"""Builds the registry from settings: the one place that knows which adapters are live (a pool, the
master key, the object store, the face engine), for the service, its API and its CLI alike."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from reelfab.bus import Bus
from reelfab.bus.outbox import Outbox
from reelfab.faces.backends import get_engine
from reelfab.settings import Settings
from reelfab.storage import open_store

from .crypto import LocalMasterKey
from .registry import Registry, RegistryConfig

SCHEMA = "consent_registry"


def master_key(settings: Settings) -> LocalMasterKey:
    if settings.consent_master_key:
        return LocalMasterKey.from_text(settings.consent_master_key)
    # development: a key file beside the local stack's data, created once, readable by root only
    return LocalMasterKey.from_file(Path(settings.state_dir) / "consent-master.key", create=True)


def build_registry(settings: Settings, pool: asyncpg.Pool, bus: Bus, *, schema: str = SCHEMA) -> Registry:
    return Registry(
        pool=pool,
        schema=schema,
        outbox=Outbox(schema, bus),
        objects=open_store(settings.storage_root),
        wrapper=master_key(settings),
        engine_factory=lambda: get_engine(settings.face_backend, settings),
        config=RegistryConfig(
            asset_kind=settings.consent_asset_kind,
            phash_threshold=settings.consent_phash_threshold,
            max_upload_bytes=settings.consent_max_upload_bytes,
        ),
    )
