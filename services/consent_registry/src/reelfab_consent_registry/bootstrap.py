"""Builds the registry from settings: the one place that knows which adapters are live (a pool, the
master key, the object store, the face engine), for the service, its API and its CLI alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from reelfab.bus import Bus
from reelfab.bus.outbox import Outbox
from reelfab.faces.backends import get_engine
from reelfab.settings import Settings
from reelfab.storage import open_store

from .crypto import LocalMasterKey
from .registry import Registry, RegistryConfig

SCHEMA = "consent_registry"
T = TypeVar("T")


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


def trusted_keys(settings: Settings) -> dict[str, Any] | None:
    """REELFAB_CONSENT_PUBLIC_KEYS when set: what checkpoints are verified with."""
    if not settings.consent_public_keys.strip():
        return None
    from reelfab.consent.gate import load_public_keys

    return load_public_keys(settings)


def build_registry(settings: Settings, pool: asyncpg.Pool, bus: Bus, *, schema: str = SCHEMA) -> Registry:
    return Registry(
        pool=pool,
        schema=schema,
        outbox=Outbox(schema, bus),
        objects=open_store(settings.storage_root),
        wrapper=master_key(settings),
        engine_factory=lambda: get_engine(settings.face_backend, settings),
        config=registry_config(settings),
        trusted_keys=trusted_keys(settings),
    )
