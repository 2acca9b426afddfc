"""What the consent API tests share: a registry in a fresh PostgreSQL schema with a signing key, a
stand-in face engine (a fixed frontal face, an embedding derived from the pixels, so each test
image is its own person) and portraits that pass the source-face quality gate."""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import asyncpg
import cv2
import numpy as np

from reelfab.bus import Bus
from reelfab.bus.memory import InMemoryBus
from reelfab.bus.outbox import Outbox
from reelfab.bus.unit_of_work import PostgresUnitOfWork
from reelfab.contracts.codec import default_codec
from reelfab.db import delivery_migrations, migrate, package_migrations
from reelfab.faces.types import Embedding, Face, SourceFace
from reelfab.settings import Settings
from reelfab.storage import open_store
from reelfab_consent_registry import keys
from reelfab_consent_registry.bootstrap import PRODUCES, Wired, bootstrap
from reelfab_consent_registry.config import RegistryConfig
from reelfab_consent_registry.crypto import LocalMasterKey
from reelfab_consent_registry.domain import SERVICE
from reelfab_consent_registry.repository import PostgresRepository
from reelfab_consent_registry.use_cases import Registry

MASTER_KEY = os.urandom(32)  # one per test process: its schemas are dropped at the end
WRAPPER = LocalMasterKey(MASTER_KEY)


def frontal_face(cx: float = 500, cy: float = 500, side: float = 600) -> Face:
    """An upright, frontal face with open eyes: 5 points and the 68 landmarks QC reads."""
    half, eye_dx = side / 2, side * 0.2
    kps = np.array(
        [
            [cx - eye_dx, cy - side * 0.1],
            [cx + eye_dx, cy - side * 0.1],
            [cx, cy + side * 0.05],
            [cx - eye_dx * 0.8, cy + side * 0.2],
            [cx + eye_dx * 0.8, cy + side * 0.2],
        ],
        np.float32,
    )
    landmarks = np.zeros((68, 2), np.float32)
    w, h = side * 0.08, side * 0.08 * 0.3
    for start, centre in ((36, kps[0]), (42, kps[1])):
        landmarks[start : start + 6] = centre + np.array(
            [[-w, 0], [-w / 3, -h], [w / 3, -h], [w, 0], [w / 3, h], [-w / 3, h]]
        )
    return Face((cx - half, cy - half, cx + half, cy + half), 2.0, kps, landmarks)


class StandInEngine:
    """Finds one big frontal face in any frame; the embedding is a function of the pixels, so the
    same image matches itself and different images are far apart (different people)."""

    name = "stand-in"
    embedder = "stand-in-v1"

    def detect(self, frame: np.ndarray) -> list[Face]:
        return [frontal_face()]

    def prepare_source(self, image: np.ndarray) -> SourceFace:
        seed = int.from_bytes(hashlib.sha256(np.ascontiguousarray(image).tobytes()).digest()[:8], "big")
        vector = np.random.default_rng(seed).normal(size=128).astype(np.float32)
        return SourceFace(image, frontal_face(), Embedding(vector, self.embedder, "euclidean"))

    def identity_threshold(self, asset_kind: str = "photo") -> float:
        return 0.6


def portrait_png(seed: int) -> bytes:
    """A 1000x1000 textured picture (sharp, evenly lit, mid-grey): passes QC with the stand-in face."""
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(140, 40, (1000, 1000, 3)), 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


def text_bytes(n: int) -> bytes:
    line = b"not an image, just words. "
    return (line * math.ceil(n / len(line)))[:n]


async def make_schema(pool: asyncpg.Pool, schema: str, *, with_key: bool = True) -> None:
    await migrate(
        pool, schema, delivery_migrations() + package_migrations("reelfab_consent_registry")
    )
    if with_key:
        async with pool.acquire() as conn:
            await keys.generate(conn, schema, WRAPPER)


def make_wired(
    pool: asyncpg.Pool,
    schema: str,
    settings: Settings,
    objects_root: Path,
    *,
    max_upload_bytes: int | None = None,
    config: RegistryConfig | None = None,
    engine: object | None = None,
    bus: Bus | None = None,
) -> Wired:
    """The registry on ``schema`` (its handlers on a PostgreSQL unit of work there), with the stand-in
    face engine unless ``engine`` is given; events go to ``bus`` (default: an in-memory one)."""
    if config is None:
        config = (
            RegistryConfig() if max_upload_bytes is None else RegistryConfig(max_upload_bytes=max_upload_bytes)
        )
    bus = bus or InMemoryBus(settings, SERVICE, default_codec())
    outbox = Outbox(schema, bus)
    return bootstrap(
        repository=PostgresRepository(pool, schema, outbox),
        bus=bus,
        objects=open_store(objects_root.as_uri()),
        wrapper=WRAPPER,
        engine_factory=StandInEngine if engine is None else (lambda: engine),  # type: ignore[arg-type,return-value]
        uow=PostgresUnitOfWork(pool, schema, outbox, frozenset(PRODUCES)),
        config=config,
    )


def make_registry(
    pool: asyncpg.Pool,
    schema: str,
    settings: Settings,
    objects_root: Path,
    *,
    max_upload_bytes: int | None = None,
    config: RegistryConfig | None = None,
    engine: object | None = None,
    bus: Bus | None = None,
) -> Registry:
    return make_wired(pool, schema, settings, objects_root, max_upload_bytes=max_upload_bytes, config=config,
                      engine=engine, bus=bus).registry


def pg(registry: Registry) -> PostgresRepository:
    """The registry's PostgreSQL repository (its pool, schema and outbox)."""
    assert isinstance(registry.repository, PostgresRepository)
    return registry.repository


async def drop_schema(pool: asyncpg.Pool, schema: str) -> None:
    await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
