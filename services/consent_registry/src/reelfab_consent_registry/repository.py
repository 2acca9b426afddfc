"""The registry's storage: what the use cases read and write, as one ``Store`` per connection, and
its PostgreSQL implementation (all of the registry's SQL on its tables; the audit chain's own append
and the signing keys' statements live in ``audit`` and ``keys``, which this calls).

A ``Repository`` hands out stores three ways: ``transaction()`` (a use case's one transaction: its
table changes, audit entries and outbox rows commit together), ``connection()`` (reads, no
transaction) and ``bound(conn)`` (the connection a unit of work gave an event handler: whatever the
handler writes commits with the event's processed mark, or not at all). ``memory.InMemoryRepository``
is the same contract without a database, for broker-free unit tests."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from reelfab.bus.outbox import Outbox
from reelfab.bus.unit_of_work import Value
from reelfab.consent.lease import LeaseTerms, SignedLease
from reelfab.db import check_schema_name

from . import audit, keys
from .crypto import KeyWrapper
from .domain import AuditEntry, Post


@dataclass(frozen=True)
class SubjectKey:
    """A subject's wrapped data key (None once erased) and when it was erased."""

    wrapped_key: bytes | None
    erased_at: datetime | None


@dataclass(frozen=True)
class EnrolledImage:
    """An enrolled image as stored: hashes, the sealed embedding and where the sealed image is."""

    sha256: str
    phash: str
    embedder: str  # "<model>:<metric>"
    embedding_enc: bytes
    image_uri: str


class Store(Protocol):
    """The registry's tables, through one connection."""

    # subjects
    async def subject_exists(self, subject_id: str) -> bool: ...
    async def insert_subject(self, subject_id: str, display_name: str, wrapped_key: bytes, key_wrapper: str) -> bool:
        """False when the subject exists already."""
    async def subject_key(self, subject_id: str, *, for_update: bool = False) -> SubjectKey | None: ...
    async def display_name(self, subject_id: str) -> str: ...
    async def set_display_name(self, subject_id: str, display_name: str) -> None: ...
    async def destroy_subject_key(self, subject_id: str) -> None:
        """Erasure: the wrapped key and the name go, the moment is kept."""
    async def other_subject_keys(self, subject_id: str, key_wrapper: str) -> list[tuple[str, bytes]]:
        """(subject id, wrapped key) of every other live subject whose key ``key_wrapper`` wrapped."""

    # enrolled images
    async def image_enrolled(self, subject_id: str, sha256: str) -> bool: ...
    async def enrolled_images(self, subject_id: str) -> list[EnrolledImage]: ...
    async def insert_image(self, subject_id: str, image: EnrolledImage, qc: Mapping[str, Any]) -> None: ...
    async def image_uri(self, subject_id: str, sha256: str) -> str | None: ...

    # consent versions
    async def latest_terms(self, subject_id: str) -> LeaseTerms | None: ...
    async def latest_lease(self, subject_id: str) -> SignedLease | None: ...
    async def insert_consent_record(self, lease: SignedLease, terms: LeaseTerms, *, actor: str, reason: str | None,
                                    document_uri: str | None) -> None: ...

    # posts (takedown lists)
    async def insert_post(self, post: Post) -> None:
        """Once per (platform, post id): a second insert changes nothing."""
    async def posts(self, subject_id: str) -> list[dict[str, Any]]: ...

    # usage (daily caps)
    async def lock_usage(self, subject_id: str) -> None:
        """One consuming check per subject at a time, until the transaction ends."""
    async def job_counted(self, subject_id: str, job_id: str) -> bool: ...
    async def uses_on(self, subject_id: str, day: date) -> int: ...
    async def count_use(self, subject_id: str, job_id: str | None, day: date) -> None: ...

    # the audit chain and its checkpoints
    async def append_audit(self, entry: AuditEntry) -> int: ...
    async def lock_audit(self) -> None:
        """Hold the chain still (no append) until the transaction ends."""
    async def audit_head(self) -> tuple[int, int, str]: ...
    async def audit_rows(self) -> list[Any]: ...
    async def recorded_checkpoints(self, log_id: str) -> list[Mapping[str, Any]]: ...
    async def record_checkpoint(self, cp: audit.Checkpoint) -> None: ...

    # signing keys
    async def signing_key(self, wrapper: KeyWrapper) -> Ed25519PrivateKey: ...
    async def public_keys(self) -> dict[str, Ed25519PublicKey]: ...

    # the outbox
    async def publish(self, topic: str, value: Value) -> None:
        """Announce ``value`` on ``topic`` when (and only when) the transaction commits."""

    # reports
    async def list_subjects(self) -> list[dict[str, Any]]: ...
    async def subject_detail(self, subject_id: str) -> dict[str, Any] | None: ...


class Repository(Protocol):
    @property
    def log_id(self) -> str:
        """The key of this registry's audit log (its PostgreSQL schema)."""

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Store]: ...

    def connection(self) -> contextlib.AbstractAsyncContextManager[Store]: ...

    def bound(self, conn: Any) -> Store: ...


class PostgresRepository:
    def __init__(self, pool: asyncpg.Pool, schema: str, outbox: Outbox) -> None:
        self.pool = pool
        self.schema = check_schema_name(schema)
        self.outbox = outbox

    @property
    def log_id(self) -> str:
        return self.schema

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Store]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield PostgresStore(conn, self.schema, self.outbox)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Store]:
        async with self.pool.acquire() as conn:
            yield PostgresStore(conn, self.schema, self.outbox)

    def bound(self, conn: Any) -> Store:
        if conn is None:
            raise TypeError("the registry's handlers write on the unit of work's connection: it gave none")
        return PostgresStore(conn, self.schema, self.outbox)


class PostgresStore:
    def __init__(self, conn: asyncpg.Connection, schema: str, outbox: Outbox) -> None:
        self.conn = conn
        self.schema = schema
        self.outbox = outbox

    def _t(self, table: str) -> str:
        return f'"{self.schema}".{table}'

    # -- subjects ----------------------------------------------------------------------------------

    async def subject_exists(self, subject_id: str) -> bool:
        return bool(await self.conn.fetchval(f"SELECT 1 FROM {self._t('subjects')} WHERE subject_id = $1", subject_id))

    async def insert_subject(self, subject_id: str, display_name: str, wrapped_key: bytes, key_wrapper: str) -> bool:
        inserted = await self.conn.fetchval(
            f"INSERT INTO {self._t('subjects')} (subject_id, display_name, wrapped_key, key_wrapper) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (subject_id) DO NOTHING RETURNING 1",
            subject_id, display_name, wrapped_key, key_wrapper,
        )
        return inserted is not None

    async def subject_key(self, subject_id: str, *, for_update: bool = False) -> SubjectKey | None:
        row = await self.conn.fetchrow(
            f"SELECT wrapped_key, erased_at FROM {self._t('subjects')} WHERE subject_id = $1"
            + (" FOR UPDATE" if for_update else ""),
            subject_id)
        if row is None:
            return None
        wrapped = row["wrapped_key"]
        return SubjectKey(None if wrapped is None else bytes(wrapped), row["erased_at"])

    async def display_name(self, subject_id: str) -> str:
        return str(await self.conn.fetchval(
            f"SELECT display_name FROM {self._t('subjects')} WHERE subject_id = $1", subject_id))

    async def set_display_name(self, subject_id: str, display_name: str) -> None:
        await self.conn.execute(
            f"UPDATE {self._t('subjects')} SET display_name = $2 WHERE subject_id = $1", subject_id, display_name)

    async def destroy_subject_key(self, subject_id: str) -> None:
        await self.conn.execute(
            f"UPDATE {self._t('subjects')} SET wrapped_key = NULL, display_name = '', erased_at = now() "
            "WHERE subject_id = $1",
            subject_id)

    async def other_subject_keys(self, subject_id: str, key_wrapper: str) -> list[tuple[str, bytes]]:
        rows = await self.conn.fetch(
            f"SELECT subject_id, wrapped_key FROM {self._t('subjects')} "
            "WHERE subject_id <> $1 AND wrapped_key IS NOT NULL AND key_wrapper = $2", subject_id, key_wrapper)
        return [(r["subject_id"], bytes(r["wrapped_key"])) for r in rows]

    # -- enrolled images ---------------------------------------------------------------------------

    async def image_enrolled(self, subject_id: str, sha256: str) -> bool:
        return bool(await self.conn.fetchval(
            f"SELECT 1 FROM {self._t('enrolled_images')} WHERE subject_id = $1 AND sha256 = $2", subject_id, sha256))

    async def enrolled_images(self, subject_id: str) -> list[EnrolledImage]:
        rows = await self.conn.fetch(
            f"SELECT sha256, phash, embedder, embedding_enc, image_uri FROM {self._t('enrolled_images')} "
            "WHERE subject_id = $1 ORDER BY image_id", subject_id)
        return [EnrolledImage(r["sha256"], r["phash"], r["embedder"], bytes(r["embedding_enc"]), r["image_uri"])
                for r in rows]

    async def insert_image(self, subject_id: str, image: EnrolledImage, qc: Mapping[str, Any]) -> None:
        await self.conn.execute(
            f"INSERT INTO {self._t('enrolled_images')} (subject_id, sha256, phash, embedder, embedding_enc, image_uri, qc) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7)",
            subject_id, image.sha256, image.phash, image.embedder, image.embedding_enc, image.image_uri, json.dumps(qc),
        )

    async def image_uri(self, subject_id: str, sha256: str) -> str | None:
        uri = await self.conn.fetchval(
            f"SELECT image_uri FROM {self._t('enrolled_images')} WHERE subject_id = $1 AND sha256 = $2",
            subject_id, sha256)
        return None if uri is None else str(uri)

    # -- consent versions --------------------------------------------------------------------------

    async def latest_terms(self, subject_id: str) -> LeaseTerms | None:
        row = await self.conn.fetchrow(
            f"SELECT lease_payload FROM {self._t('consent_records')} WHERE subject_id = $1 ORDER BY version DESC LIMIT 1",
            subject_id)
        return LeaseTerms.from_bytes(bytes(row[0])) if row else None

    async def latest_lease(self, subject_id: str) -> SignedLease | None:
        row = await self.conn.fetchrow(
            f"SELECT lease_payload, lease_signature, lease_key_id FROM {self._t('consent_records')} "
            "WHERE subject_id = $1 ORDER BY version DESC LIMIT 1", subject_id)
        return SignedLease(bytes(row[0]), bytes(row[1]), row[2]) if row else None

    async def insert_consent_record(self, lease: SignedLease, terms: LeaseTerms, *, actor: str, reason: str | None,
                                    document_uri: str | None) -> None:
        await self.conn.execute(
            f"INSERT INTO {self._t('consent_records')} (subject_id, version, status, document_sha256, document_uri, "
            "scope, valid_from, valid_until, daily_cap, reason, actor, lease_payload, lease_signature, lease_key_id) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            terms.subject, terms.consent_version, terms.status, terms.document_sha256, document_uri,
            json.dumps(terms.scope.canonical()), terms.valid_from, terms.valid_until, terms.daily_cap, reason, actor,
            lease.payload, lease.signature, lease.key_id,
        )

    # -- posts -------------------------------------------------------------------------------------

    async def insert_post(self, post: Post) -> None:
        await self.conn.execute(
            f"INSERT INTO {self._t('posts')} (post_id, platform, subject_id, job_id, consent_version, published_at) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            post.post_id, post.platform, post.subject_id, post.job_id, post.consent_version, post.published_at)

    async def posts(self, subject_id: str) -> list[dict[str, Any]]:
        rows = await self.conn.fetch(
            f"SELECT platform, post_id, job_id, published_at FROM {self._t('posts')} WHERE subject_id = $1 "
            "ORDER BY published_at", subject_id)
        return [dict(r) for r in rows]

    # -- usage -------------------------------------------------------------------------------------

    async def lock_usage(self, subject_id: str) -> None:
        await self.conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"{self.schema}.usage.{subject_id}")

    async def job_counted(self, subject_id: str, job_id: str) -> bool:
        return bool(await self.conn.fetchval(
            f"SELECT 1 FROM {self._t('usage_jobs')} WHERE subject_id = $1 AND job_id = $2", subject_id, job_id))

    async def uses_on(self, subject_id: str, day: date) -> int:
        return int(await self.conn.fetchval(
            f"SELECT uses FROM {self._t('usage')} WHERE subject_id = $1 AND day = $2", subject_id, day) or 0)

    async def count_use(self, subject_id: str, job_id: str | None, day: date) -> None:
        if job_id is not None:
            await self.conn.execute(
                f"INSERT INTO {self._t('usage_jobs')} (subject_id, job_id, day) VALUES ($1, $2, $3)",
                subject_id, job_id, day)
        await self.conn.execute(
            f"INSERT INTO {self._t('usage')} (subject_id, day, uses) VALUES ($1, $2, 1) "
            "ON CONFLICT (subject_id, day) DO UPDATE SET uses = usage.uses + 1",
            subject_id, day)

    # -- audit -------------------------------------------------------------------------------------

    async def append_audit(self, entry: AuditEntry) -> int:
        return await audit.append(self.conn, self.schema, actor=entry.actor, action=entry.action,
                                  subject_id=entry.subject_id, details=dict(entry.details))

    async def lock_audit(self) -> None:
        await audit.lock(self.conn)

    async def audit_head(self) -> tuple[int, int, str]:
        return await audit.head(self.conn, self.schema)

    async def audit_rows(self) -> list[Any]:
        return await audit.chain_rows(self.conn, self.schema)

    async def recorded_checkpoints(self, log_id: str) -> list[Mapping[str, Any]]:
        rows = await self.conn.fetch(
            f"SELECT log_id, entry_count, head_seq, head_hash, issued_at, key_id, reason, payload, signature "
            f"FROM {self._t('audit_checkpoints')} WHERE log_id = $1 ORDER BY entry_count, issued_at", log_id)
        return [dict(r) for r in rows]

    async def record_checkpoint(self, cp: audit.Checkpoint) -> None:
        await self.conn.execute(
            f"INSERT INTO {self._t('audit_checkpoints')} (log_id, entry_count, head_seq, head_hash, issued_at, "
            "key_id, reason, payload, signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
            cp.log_id, cp.entry_count, cp.head_seq, cp.head_hash, cp.issued_at, cp.key_id, cp.reason,
            cp.payload, cp.signature)

    # -- keys and the outbox -----------------------------------------------------------------------

    async def signing_key(self, wrapper: KeyWrapper) -> Ed25519PrivateKey:
        return await keys.signing_key(self.conn, self.schema, wrapper)

    async def public_keys(self) -> dict[str, Ed25519PublicKey]:
        return await keys.public_keys(self.conn, self.schema)

    async def publish(self, topic: str, value: Value) -> None:
        await self.outbox.add(self.conn, topic, value)

    # -- reports -----------------------------------------------------------------------------------

    async def list_subjects(self) -> list[dict[str, Any]]:
        rows = await self.conn.fetch(
            f"SELECT s.subject_id, s.display_name, s.erased_at, c.version, c.status, c.valid_until, "
            f"(SELECT count(*) FROM {self._t('enrolled_images')} i WHERE i.subject_id = s.subject_id) AS images "
            f"FROM {self._t('subjects')} s LEFT JOIN LATERAL (SELECT version, status, valid_until "
            f"FROM {self._t('consent_records')} r "
            "WHERE r.subject_id = s.subject_id ORDER BY version DESC LIMIT 1) c ON true ORDER BY s.subject_id")
        return [dict(r) for r in rows]

    async def subject_detail(self, subject_id: str) -> dict[str, Any] | None:
        subject = await self.conn.fetchrow(
            f"SELECT subject_id, display_name, created_at, erased_at FROM {self._t('subjects')} WHERE subject_id = $1",
            subject_id)
        if subject is None:
            return None
        versions = await self.conn.fetch(
            f"SELECT version, status, scope, valid_from, valid_until, daily_cap, reason, actor, created_at, lease_key_id "
            f"FROM {self._t('consent_records')} WHERE subject_id = $1 ORDER BY version", subject_id)
        images = await self.conn.fetch(
            f"SELECT sha256, phash, embedder, created_at FROM {self._t('enrolled_images')} WHERE subject_id = $1 "
            "ORDER BY image_id", subject_id)
        return {
            **dict(subject),
            "versions": [{**dict(v), "scope": json.loads(v["scope"])} for v in versions],
            "images": [dict(i) for i in images],
            "posts": await self.posts(subject_id),
        }
