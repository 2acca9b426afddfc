"""The registry's use cases. Each is one PostgreSQL transaction: the table change, the audit entry
and the outgoing event (outbox) commit together or not at all."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import cv2
import imagehash
import numpy as np
from PIL import Image

from reelfab import metrics
from reelfab.bus import new_event_id
from reelfab.bus.outbox import Outbox
from reelfab.consent.decision import ConsentRequest, Decision, decide
from reelfab.consent.lease import EnrolledImageRef, LeaseTerms, Scope, SignedLease, sign
from reelfab.faces.errors import FaceError
from reelfab.faces.qc import check_source
from reelfab.faces.types import Embedding, FaceEngine
from reelfab.storage import FileStore

from . import audit, keys
from .crypto import ErasedError, KeyWrapper, new_data_key, seal, unseal
from .domain import KnownIdentity, check_enrolment, embedding_digest, next_terms
from .errors import Conflict, NotFound, Refused, TooLarge

SERVICE = "consent-registry"
SUBJECT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_PIXELS = 50_000_000
TOPIC = "reelfab.consent.changed.v1"


@dataclass
class RegistryConfig:
    asset_kind: str = "photo"
    phash_threshold: int = 8
    max_upload_bytes: int = 10 * 1024 * 1024


@dataclass
class Registry:
    pool: asyncpg.Pool
    schema: str
    outbox: Outbox
    objects: FileStore
    wrapper: KeyWrapper
    engine_factory: Callable[[], FaceEngine]
    config: RegistryConfig = field(default_factory=RegistryConfig)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    _engine: FaceEngine | None = None

    @property
    def engine(self) -> FaceEngine:
        if self._engine is None:
            self._engine = self.engine_factory()
        return self._engine

    def _t(self, table: str) -> str:
        return f'"{self.schema}".{table}'

    # -- subjects and enrolment -----------------------------------------------------------------------

    async def create_subject(self, subject_id: str, display_name: str, actor: str) -> dict[str, Any]:
        if not SUBJECT_ID.fullmatch(subject_id):
            raise Refused(f"subject id {subject_id!r} must be 1-64 ASCII letters, digits, '-' or '_'")
        if not display_name.strip():
            raise Refused("display name must not be empty")
        async with self.pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                f"INSERT INTO {self._t('subjects')} (subject_id, display_name, wrapped_key, key_wrapper) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (subject_id) DO NOTHING RETURNING 1",
                subject_id, display_name.strip(), self.wrapper.wrap(new_data_key(), subject_id.encode()), self.wrapper.name,
            )
            if inserted is None:
                raise Conflict(f"subject {subject_id} already exists")
            await audit.append(conn, self.schema, actor=actor, action="subject.created", subject_id=subject_id, details={})
        return {"subject_id": subject_id, "display_name": display_name.strip()}

    async def enrol(self, subject_id: str, image_bytes: bytes, actor: str) -> dict[str, Any]:
        if len(image_bytes) > self.config.max_upload_bytes:
            raise TooLarge(f"image of {len(image_bytes)} bytes is over the {self.config.max_upload_bytes}-byte limit")
        async with self.pool.acquire() as conn:
            await self._subject_key(conn, subject_id)  # unknown or erased: say so before any face work
        # decoding, QC and the embedding are CPU work: off the event loop, outside any transaction
        qc, embedding, phash = await asyncio.to_thread(self._examine, image_bytes)
        sha = hashlib.sha256(image_bytes).hexdigest()
        async with self.pool.acquire() as conn, conn.transaction():
            key = await self._subject_key(conn, subject_id, for_update=True)
            if await conn.fetchval(f"SELECT 1 FROM {self._t('enrolled_images')} WHERE subject_id = $1 AND sha256 = $2", subject_id, sha):
                raise Conflict(f"this image is already enrolled for {subject_id}")
            own = await self._embeddings(conn, subject_id, key)
            others = await self._other_identities(conn, subject_id, embedding.model)
            check_enrolment(subject_id, embedding.vector, [e.vector for e in own], others,
                            self.engine.identity_threshold(self.config.asset_kind),
                            lambda a, b: Embedding(a, embedding.model, embedding.metric).distance(Embedding(b, embedding.model, embedding.metric)))
            stored = self.objects.put_bytes(f"consent/{subject_id}/{sha}.sealed", seal(key, image_bytes, subject_id.encode()))
            await conn.execute(
                f"INSERT INTO {self._t('enrolled_images')} (subject_id, sha256, phash, embedder, embedding_enc, image_uri, qc) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7)",
                subject_id, sha, phash, f"{embedding.model}:{embedding.metric}",
                seal(key, embedding.vector.astype(np.float32).tobytes(), subject_id.encode()), stored.uri,
                json.dumps({"passed": True, "metrics": qc.metrics}),
            )
            await audit.append(conn, self.schema, actor=actor, action="image.enrolled", subject_id=subject_id,
                               details={"sha256": sha, "phash": phash, "embedder": embedding.model})
            latest = await self._latest(conn, subject_id)
            if latest is not None and latest.status in ("GRANTED", "AMENDED"):
                await self._issue(conn, subject_id, "AMENDED", actor, reason="image enrolled")
        return {"subject_id": subject_id, "sha256": sha, "phash": phash, "embedder": embedding.model, "qc": qc.metrics}

    def _examine(self, image_bytes: bytes) -> tuple[Any, Embedding, str]:
        image = _decode_image(image_bytes)
        qc = check_source(image, self.engine)
        if not qc.passed:
            raise Refused(f"the image fails the source-face check: {qc.summary()}")
        try:
            source = self.engine.prepare_source(image)
        except FaceError as exc:
            raise Refused(str(exc)) from None
        return qc, source.embedding, perceptual_hash(image)

    # -- consent versions ------------------------------------------------------------------------------

    async def grant(self, subject_id: str, *, document: bytes, scope: Scope, valid_from: datetime | None,
                    valid_until: datetime | None, daily_cap: int | None, actor: str,
                    document_uri: str | None = None) -> LeaseTerms:
        if not document:
            raise Refused("the signed consent document is empty")
        async with self.pool.acquire() as conn, conn.transaction():
            await self._subject_key(conn, subject_id, for_update=True)
            latest = await self._latest(conn, subject_id)
            if latest is not None and latest.status in ("GRANTED", "AMENDED"):
                raise Conflict(f"{subject_id} already has consent v{latest.consent_version}; amend it instead")
            return await self._issue(conn, subject_id, "GRANTED", actor, scope=scope, valid_from=valid_from,
                                     valid_until=valid_until, daily_cap=daily_cap,
                                     document_sha256=hashlib.sha256(document).hexdigest(), document_uri=document_uri)

    async def amend(self, subject_id: str, *, actor: str, scope: Scope | None = None, valid_until: datetime | None = None,
                    daily_cap: int | None = None, reason: str | None = None,
                    scope_changes: dict[str, Any] | None = None) -> LeaseTerms:
        """``scope_changes`` (platforms, allowed_tags, territories, commercial_use) are merged with the
        current scope inside the locked transaction, so two concurrent amends cannot lose one."""
        async with self.pool.acquire() as conn, conn.transaction():
            await self._subject_key(conn, subject_id, for_update=True)
            if scope_changes:
                current = await self._latest(conn, subject_id)
                scope = replace(scope or (current.scope if current else Scope()), **scope_changes)
            return await self._issue(conn, subject_id, "AMENDED", actor, scope=scope, valid_until=valid_until,
                                     daily_cap=daily_cap, reason=reason)

    async def revoke(self, subject_id: str, *, actor: str, reason: str) -> tuple[LeaseTerms, list[dict[str, Any]]]:
        async with self.pool.acquire() as conn, conn.transaction():
            await self._subject_key(conn, subject_id, for_update=True, allow_erased=True)
            posts = [dict(r) for r in await conn.fetch(
                f"SELECT platform, post_id, job_id, published_at FROM {self._t('posts')} WHERE subject_id = $1 ORDER BY published_at",
                subject_id)]
            terms = await self._issue(conn, subject_id, "REVOKED", actor, reason=reason,
                                      takedown=[p["post_id"] for p in posts])
        return terms, posts

    async def erase(self, subject_id: str, *, actor: str) -> dict[str, Any]:
        async with self.pool.acquire() as conn, conn.transaction():
            await self._subject_key(conn, subject_id, for_update=True)
            images = await conn.fetch(f"SELECT sha256, image_uri FROM {self._t('enrolled_images')} WHERE subject_id = $1", subject_id)
            await conn.execute(f"UPDATE {self._t('subjects')} SET display_name = '' WHERE subject_id = $1", subject_id)
            await self._issue(conn, subject_id, "ERASED", actor, reason="erasure request")
            await conn.execute(  # the key goes, and with it the name: personal data too
                f"UPDATE {self._t('subjects')} SET wrapped_key = NULL, display_name = '', erased_at = now() WHERE subject_id = $1",
                subject_id,
            )
            await audit.append(conn, self.schema, actor=actor, action="subject.erased", subject_id=subject_id,
                               details={"images": [r["sha256"] for r in images]})
        return {"subject_id": subject_id, "unreadable_images": [r["image_uri"] for r in images],
                "unreadable_embeddings": len(images)}

    async def _issue(self, conn: asyncpg.Connection, subject_id: str, status: str, actor: str, *,
                     reason: str | None = None, takedown: list[str] | None = None, document_uri: str | None = None,
                     **changes: Any) -> LeaseTerms:
        previous = await self._latest(conn, subject_id)
        if previous is not None and previous.status == "ERASED":
            raise Conflict(f"{subject_id} was erased: their consent can no longer change")
        rows = await conn.fetch(
            f"SELECT sha256, phash, embedder, embedding_enc FROM {self._t('enrolled_images')} WHERE subject_id = $1 ORDER BY image_id",
            subject_id)
        if status == "ERASED":
            digest = previous.embedding_digest if previous else ""
        else:
            key = await self._subject_key(conn, subject_id)
            digest = embedding_digest([np.frombuffer(unseal(key, bytes(r["embedding_enc"]), subject_id.encode()), np.float32) for r in rows])
        images = [EnrolledImageRef(r["sha256"], r["phash"], r["embedder"].split(":")[0]) for r in rows]
        terms = next_terms(previous, subject_id=subject_id, status=status, now=self.clock(), images=images,
                           embeddings_digest=digest, **changes)
        lease = sign(terms, await keys.signing_key(conn, self.schema, self.wrapper))
        terms = lease.terms()
        await conn.execute(
            f"INSERT INTO {self._t('consent_records')} (subject_id, version, status, document_sha256, document_uri, scope, "
            "valid_from, valid_until, daily_cap, reason, actor, lease_payload, lease_signature, lease_key_id) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            subject_id, terms.consent_version, status, terms.document_sha256, document_uri,
            json.dumps(terms.scope.canonical()), terms.valid_from, terms.valid_until, terms.daily_cap, reason, actor,
            lease.payload, lease.signature, lease.key_id,
        )
        await audit.append(conn, self.schema, actor=actor, action=f"consent.{status.lower()}", subject_id=subject_id,
                           details={"version": terms.consent_version, "lease_sha256": hashlib.sha256(lease.payload).hexdigest(),
                                    "reason": reason, "takedown": takedown or []})
        display = await conn.fetchval(f"SELECT display_name FROM {self._t('subjects')} WHERE subject_id = $1", subject_id)
        await self.outbox.add(conn, TOPIC, consent_event(terms, lease, display, reason=reason, takedown=takedown or [],
                                                         document_uri=document_uri))
        return terms

    # -- checks ----------------------------------------------------------------------------------------

    async def check(self, request: ConsentRequest, *, image_bytes: bytes | None = None,
                    embedding: Embedding | None = None, consume: bool = False, actor: str = SERVICE) -> Decision:
        """The full check: what a lease says, plus what only the registry knows (uses today,
        enrolled embeddings). ``consume`` counts an allowed use toward the daily cap."""
        image_fields: dict[str, Any] = {}
        if image_bytes is not None:
            image_fields, found = await asyncio.to_thread(self._image_facts, image_bytes, embedding is None)
            embedding = embedding or found
        async with self.pool.acquire() as conn, conn.transaction():
            # one consuming check per subject at a time, so two cannot both take the last use of the day
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"{self.schema}.usage.{request.subject}")
            terms = await self._latest(conn, request.subject)
            used = await conn.fetchval(f"SELECT uses FROM {self._t('usage')} WHERE subject_id = $1 AND day = $2",
                                       request.subject, request.at.astimezone(UTC).date()) or 0
            request = ConsentRequest(**{**request.__dict__, **image_fields, "used_today": used})
            decision = decide(terms, request, phash_threshold=self.config.phash_threshold)
            if decision.allowed and embedding is not None:
                decision = await self._identity_decision(conn, request.subject, embedding, decision)
            if decision.allowed and consume:
                await conn.execute(
                    f"INSERT INTO {self._t('usage')} (subject_id, day, uses) VALUES ($1, $2, 1) "
                    "ON CONFLICT (subject_id, day) DO UPDATE SET uses = usage.uses + 1",
                    request.subject, request.at.astimezone(UTC).date())
            if not decision.allowed:
                metrics.CONSENT_DENIALS.labels(SERVICE, decision.reason).inc()
                await audit.append(conn, self.schema, actor=actor, action="consent.denied", subject_id=request.subject,
                                   details={"reason": decision.reason, "purpose": request.purpose, "platform": request.platform,
                                            **{k: v for k, v in image_fields.items()}})
        return decision

    def _image_facts(self, image_bytes: bytes, want_embedding: bool) -> tuple[dict[str, Any], Embedding | None]:
        image = _decode_image(image_bytes)
        facts = {"image_sha256": hashlib.sha256(image_bytes).hexdigest(), "image_phash": perceptual_hash(image)}
        if not want_embedding:
            return facts, None
        try:
            return facts, self.engine.prepare_source(image).embedding
        except FaceError:
            return facts, None  # no usable face: the image hashes decide

    async def _identity_decision(self, conn: asyncpg.Connection, subject_id: str, embedding: Embedding,
                                 decision: Decision) -> Decision:
        key = await self._subject_key(conn, subject_id, allow_erased=True)
        if key is None:
            return Decision.deny("erased", f"{subject_id}'s biometric data was erased", decision.consent_version)
        enrolled = [e for e in await self._embeddings(conn, subject_id, key) if e.model == embedding.model]
        if not enrolled:
            return decision  # enrolled with another embedder: the image hashes decided
        nearest = min(embedding.distance(e) for e in enrolled)
        threshold = self.engine.identity_threshold(self.config.asset_kind)
        if nearest >= threshold:
            return Decision.deny("identity_mismatch", f"face is not {subject_id} (identity distance {nearest:.3f}, same person below {threshold:.3f})",
                                 decision.consent_version)
        return decision

    async def report_denial(self, *, subject_id: str | None, reason: str, stage: str, job_id: str, actor: str) -> None:
        """A denial another service decided (job.failed with a consent reason) joins the audit chain."""
        metrics.CONSENT_DENIALS.labels(stage, reason).inc()
        async with self.pool.acquire() as conn, conn.transaction():
            await audit.append(conn, self.schema, actor=actor, action="consent.denied.reported", subject_id=subject_id,
                               details={"reason": reason, "stage": stage, "job_id": job_id})

    async def record_post(self, *, post_id: str, platform: str, subject_id: str, job_id: str,
                          consent_version: int | None, published_at: datetime) -> None:
        await self.pool.execute(
            f"INSERT INTO {self._t('posts')} (post_id, platform, subject_id, job_id, consent_version, published_at) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            post_id, platform, subject_id, job_id, consent_version, published_at)

    # -- reading ---------------------------------------------------------------------------------------

    async def list_subjects(self) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            f"SELECT s.subject_id, s.display_name, s.erased_at, c.version, c.status, c.valid_until, "
            f"(SELECT count(*) FROM {self._t('enrolled_images')} i WHERE i.subject_id = s.subject_id) AS images "
            f"FROM {self._t('subjects')} s LEFT JOIN LATERAL (SELECT version, status, valid_until FROM {self._t('consent_records')} r "
            "WHERE r.subject_id = s.subject_id ORDER BY version DESC LIMIT 1) c ON true ORDER BY s.subject_id")
        return [_jsonable(dict(r)) for r in rows]

    async def get_subject(self, subject_id: str) -> dict[str, Any]:
        subject = await self.pool.fetchrow(
            f"SELECT subject_id, display_name, created_at, erased_at FROM {self._t('subjects')} WHERE subject_id = $1", subject_id)
        if subject is None:
            raise NotFound(f"no subject {subject_id}")
        versions = await self.pool.fetch(
            f"SELECT version, status, scope, valid_from, valid_until, daily_cap, reason, actor, created_at, lease_key_id "
            f"FROM {self._t('consent_records')} WHERE subject_id = $1 ORDER BY version", subject_id)
        images = await self.pool.fetch(
            f"SELECT sha256, phash, embedder, created_at FROM {self._t('enrolled_images')} WHERE subject_id = $1 ORDER BY image_id", subject_id)
        posts = await self.pool.fetch(
            f"SELECT platform, post_id, job_id, published_at FROM {self._t('posts')} WHERE subject_id = $1 ORDER BY published_at", subject_id)
        return _jsonable({
            **dict(subject),
            "versions": [{**dict(v), "scope": json.loads(v["scope"])} for v in versions],
            "images": [dict(i) for i in images],
            "posts": [dict(p) for p in posts],
        })

    async def latest_lease(self, subject_id: str) -> SignedLease | None:
        row = await self.pool.fetchrow(
            f"SELECT lease_payload, lease_signature, lease_key_id FROM {self._t('consent_records')} "
            "WHERE subject_id = $1 ORDER BY version DESC LIMIT 1", subject_id)
        return SignedLease(bytes(row[0]), bytes(row[1]), row[2]) if row else None

    async def read_image(self, subject_id: str, sha256: str) -> bytes:
        """The enrolled image's bytes (for the swapper's fetch); ErasedError once the key is gone."""
        async with self.pool.acquire() as conn:
            key = await self._subject_key(conn, subject_id, allow_erased=True)
            uri = await conn.fetchval(
                f"SELECT image_uri FROM {self._t('enrolled_images')} WHERE subject_id = $1 AND sha256 = $2", subject_id, sha256)
        if uri is None:
            raise NotFound(f"{subject_id} has no enrolled image {sha256}")
        if key is None:
            raise ErasedError(f"{subject_id} was erased: the image at {uri} can no longer be decrypted")
        return unseal(key, self.objects.get_bytes(uri), subject_id.encode())

    # -- internals -------------------------------------------------------------------------------------

    async def _latest(self, conn: asyncpg.Connection, subject_id: str) -> LeaseTerms | None:
        row = await conn.fetchrow(
            f"SELECT lease_payload FROM {self._t('consent_records')} WHERE subject_id = $1 ORDER BY version DESC LIMIT 1",
            subject_id)
        return LeaseTerms.from_bytes(bytes(row[0])) if row else None

    async def _subject_key(self, conn: asyncpg.Connection, subject_id: str, *, for_update: bool = False,
                           allow_erased: bool = False) -> Any:
        row = await conn.fetchrow(
            f"SELECT wrapped_key, erased_at FROM {self._t('subjects')} WHERE subject_id = $1" + (" FOR UPDATE" if for_update else ""),
            subject_id)
        if row is None:
            raise NotFound(f"no subject {subject_id}")
        if row["wrapped_key"] is None:
            if allow_erased:
                return None
            raise ErasedError(f"{subject_id} was erased on {row['erased_at']:%Y-%m-%d}; their images and embeddings are unreadable")
        return self.wrapper.unwrap(bytes(row["wrapped_key"]), subject_id.encode())

    async def _embeddings(self, conn: asyncpg.Connection, subject_id: str, key: bytes) -> list[Embedding]:
        rows = await conn.fetch(
            f"SELECT embedder, embedding_enc FROM {self._t('enrolled_images')} WHERE subject_id = $1 ORDER BY image_id", subject_id)
        out = []
        for r in rows:
            model, _, metric = r["embedder"].partition(":")
            vector = np.frombuffer(unseal(key, bytes(r["embedding_enc"]), subject_id.encode()), np.float32)
            out.append(Embedding(vector, model, metric or "euclidean"))
        return out

    async def _other_identities(self, conn: asyncpg.Connection, subject_id: str, model: str) -> list[KnownIdentity]:
        # subjects whose keys another master key wrapped (before a rotation) cannot be read here
        others = await conn.fetch(
            f"SELECT subject_id, wrapped_key FROM {self._t('subjects')} "
            "WHERE subject_id <> $1 AND wrapped_key IS NOT NULL AND key_wrapper = $2", subject_id, self.wrapper.name)
        found = []
        for o in others:
            key = self.wrapper.unwrap(bytes(o["wrapped_key"]), o["subject_id"].encode())
            found.append(KnownIdentity(o["subject_id"], [e.vector for e in await self._embeddings(conn, o["subject_id"], key) if e.model == model]))
        return found


def consent_event(terms: LeaseTerms, lease: SignedLease, display_name: str, *, reason: str | None,
                  takedown: list[str], document_uri: str | None) -> dict[str, Any]:
    return {
        "event_id": new_event_id(),
        "occurred_at": terms.issued_at,
        "producer": SERVICE,
        "face_id": terms.subject,
        "change": terms.status,
        "consent_version": terms.consent_version,
        "display_name": display_name,
        "document_sha256": terms.document_sha256,
        "document_uri": document_uri,
        "scope": {"platforms": list(terms.scope.platforms), "allowed_tags": list(terms.scope.allowed_tags),
                  "territories": list(terms.scope.territories), "commercial_use": terms.scope.commercial_use},
        "valid_from": terms.valid_from,
        "valid_until": terms.valid_until,
        "daily_cap": terms.daily_cap,
        "enrolled_images": [{"sha256": i.sha256, "phash": i.phash, "embedder": i.embedder} for i in terms.images],
        "embedding_digest": terms.embedding_digest,
        "lease": {"payload": lease.payload, "signature": lease.signature, "key_id": lease.key_id},
        "reason": reason,
        "takedown_post_ids": takedown,
    }


def perceptual_hash(image: np.ndarray) -> str:
    """64-bit DCT perceptual hash (imagehash.phash) of the image, as 16 hex digits."""
    return str(imagehash.phash(Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))))


def _decode_image(data: bytes) -> np.ndarray:
    if not data:
        raise Refused("the upload is empty")
    size = _declared_pixels(data)
    if size is not None and size > MAX_PIXELS:
        raise Refused(f"the image declares {size} pixels; at most {MAX_PIXELS} are accepted")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        head = data[:8].hex()
        raise Refused(f"the upload is not an image (first bytes {head}); send PNG or JPEG")
    return image


def _declared_pixels(data: bytes) -> int | None:
    """Width x height from the header, read before decoding (a small file can claim a huge canvas)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return int(img.width) * int(img.height)
    except Exception:
        return None  # not an image PIL knows: cv2's decode says so next


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value

