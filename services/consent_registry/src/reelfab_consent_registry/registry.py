"""The registry's use cases. Each is one PostgreSQL transaction: the table change, the audit entry
and the outgoing event (outbox) commit together or not at all."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import hashlib
import io
import json
import re
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import cv2
import imagehash
import numpy as np
from PIL import Image, JpegImagePlugin, PngImagePlugin

from reelfab import metrics
from reelfab.bus import new_event_id
from reelfab.bus.outbox import Outbox
from reelfab.consent.decision import ConsentRequest, Decision, decide
from reelfab.consent.lease import EnrolledImageRef, LeaseTerms, Scope, SignedLease, sign
from reelfab.faces.errors import FaceError
from reelfab.faces.qc import check_source
from reelfab.faces.types import Embedding, FaceEngine
from reelfab.identifiers import check_identifier
from reelfab.logging import get_logger
from reelfab.storage import FileStore

from . import audit, keys
from .crypto import ErasedError, KeyWrapper, new_data_key, seal, unseal
from .domain import KnownIdentity, check_enrolment, embedding_digest, next_terms
from .errors import Conflict, NotFound, Refused, TooLarge, Unavailable

SERVICE = "consent-registry"
SUBJECT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_FACE_PIXELS = 16_000_000  # what face work needs: a larger canvas is refused before decoding
FACE_WORK_PIXELS = 4_194_304  # images above this decode reduced (1/2, 1/4, 1/8) where the codec can
TOPIC = "reelfab.consent.changed.v1"
log = get_logger("reelfab.consent_registry")


@dataclass
class RegistryConfig:
    asset_kind: str = "photo"
    phash_threshold: int = 8
    max_upload_bytes: int = 10 * 1024 * 1024
    max_face_pixels: int = MAX_FACE_PIXELS
    face_work_pixels: int = FACE_WORK_PIXELS
    face_concurrency: int = 2  # decodes + face work at once; the rest wait their turn
    checkpoint_interval_s: float = 300.0  # a signed audit checkpoint at least this often (if the chain grew)
    checkpoint_every: int = 100  # ... and once this many entries were appended since the last one


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
    # the keys a checkpoint's signature is checked with (REELFAB_CONSENT_PUBLIC_KEYS, what the other
    # services trust); None: the registry's own public keys from its database
    trusted_keys: dict[str, Any] | None = None
    _engine: FaceEngine | None = None
    _face_slots: asyncio.Semaphore | None = None
    _face_busy: int = 0
    _last_checkpoint: audit.Checkpoint | None = None
    _checkpoint_lock: asyncio.Lock | None = None

    async def _face_work(self, fn: Callable[..., Any], *args: Any) -> Any:
        """CPU- and memory-heavy image work, off the event loop, at most ``face_concurrency`` at once;
        the memory it took goes back to the system when the last one ends."""
        if self._face_slots is None:
            self._face_slots = asyncio.Semaphore(max(1, self.config.face_concurrency))
        async with self._face_slots:
            self._face_busy += 1
            try:
                return await asyncio.to_thread(fn, *args)
            finally:
                self._face_busy -= 1
                if self._face_busy == 0:
                    await asyncio.to_thread(release_memory)

    @property
    def engine(self) -> FaceEngine:
        if self._engine is None:
            self._engine = self.engine_factory()
        return self._engine

    def _t(self, table: str) -> str:
        return f'"{self.schema}".{table}'

    # -- subjects and enrolment -----------------------------------------------------------------------

    async def create_subject(self, subject_id: str, display_name: str, actor: str) -> dict[str, Any]:
        _check_new_subject(subject_id, display_name)
        async with self.pool.acquire() as conn, conn.transaction():
            await self._insert_subject(conn, subject_id, display_name, actor)
        return {"subject_id": subject_id, "display_name": display_name.strip()}

    async def _insert_subject(self, conn: asyncpg.Connection, subject_id: str, display_name: str, actor: str) -> None:
        """The subject row (with its new data key) and its audit entry, in the caller's transaction."""
        inserted = await conn.fetchval(
            f"INSERT INTO {self._t('subjects')} (subject_id, display_name, wrapped_key, key_wrapper) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (subject_id) DO NOTHING RETURNING 1",
            subject_id, display_name.strip(), self.wrapper.wrap(new_data_key(), subject_id.encode()), self.wrapper.name,
        )
        if inserted is None:
            raise Conflict(f"subject {subject_id} already exists")
        await audit.append(conn, self.schema, actor=actor, action="subject.created", subject_id=subject_id, details={})

    async def enrol(self, subject_id: str, image_bytes: bytes, actor: str, *, create_name: str | None = None) -> dict[str, Any]:
        """Enrol an image for ``subject_id``. With ``create_name`` the subject is new: it is created in
        the enrolment's own transaction, so a refused enrolment (failed QC, another subject's face)
        leaves nothing behind, not even an empty subject."""
        if len(image_bytes) > self.config.max_upload_bytes:
            raise TooLarge(f"image of {len(image_bytes)} bytes is over the {self.config.max_upload_bytes}-byte limit")
        if create_name is not None:
            _check_new_subject(subject_id, create_name)
            if await self.pool.fetchval(f"SELECT 1 FROM {self._t('subjects')} WHERE subject_id = $1", subject_id):
                raise Conflict(f"subject {subject_id} already exists")  # say so before any face work
        else:
            async with self.pool.acquire() as conn:
                await self._subject_key(conn, subject_id)  # unknown or erased: say so before any face work
        # decoding, QC and the embedding are CPU work: off the event loop, outside any transaction
        qc, embedding, phash = await self._face_work(self._examine, image_bytes)
        sha = hashlib.sha256(image_bytes).hexdigest()
        async with self.pool.acquire() as conn, conn.transaction():
            if create_name is not None:
                await self._insert_subject(conn, subject_id, create_name, actor)  # rolled back if refused below
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
        image = self._decode(image_bytes)
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
                    embedding: Embedding | None = None, consume: bool = False, actor: str = SERVICE,
                    job_id: str | None = None) -> Decision:
        """The full check: what a lease says, plus what only the registry knows (uses today,
        enrolled embeddings). ``consume`` counts an allowed use toward the daily cap, once per
        ``job_id`` (required with ``consume``): a redelivered job asking again is not counted again.
        Any check naming a job whose use is counted (consuming or not: the post-producer's re-check
        of the swapper's job) is not turned away by the cap, its use being inside it already; a
        check without a job asks whether one more use fits."""
        if consume and job_id is None:
            raise Refused("a consuming check must name its job_id: without it every redelivery would count another use")
        if job_id is not None:
            check_identifier(job_id, "job_id")
        image_fields: dict[str, Any] = {}
        if image_bytes is not None:
            image_fields, found = await self._face_work(self._image_facts, image_bytes, embedding is None)
            embedding = embedding or found
        day = request.at.astimezone(UTC).date()
        async with self.pool.acquire() as conn, conn.transaction():
            # one consuming check per subject at a time, so two cannot both take the last use of the day
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"{self.schema}.usage.{request.subject}")
            terms = await self._latest(conn, request.subject)
            counted = job_id is not None and bool(await conn.fetchval(
                f"SELECT 1 FROM {self._t('usage_jobs')} WHERE subject_id = $1 AND job_id = $2", request.subject, job_id))
            used = await conn.fetchval(f"SELECT uses FROM {self._t('usage')} WHERE subject_id = $1 AND day = $2",
                                       request.subject, day) or 0
            # a job whose use is counted already holds its place under the cap: only the rest is checked
            request = ConsentRequest(**{**request.__dict__, **image_fields, "used_today": None if counted else used})
            decision = decide(terms, request, phash_threshold=self.config.phash_threshold)
            if decision.allowed and embedding is not None:
                decision = await self._identity_decision(conn, request.subject, embedding, decision)
            if decision.allowed and consume and not counted:
                if job_id is not None:
                    await conn.execute(
                        f"INSERT INTO {self._t('usage_jobs')} (subject_id, job_id, day) VALUES ($1, $2, $3)",
                        request.subject, job_id, day)
                await conn.execute(
                    f"INSERT INTO {self._t('usage')} (subject_id, day, uses) VALUES ($1, $2, 1) "
                    "ON CONFLICT (subject_id, day) DO UPDATE SET uses = usage.uses + 1",
                    request.subject, day)
            if not decision.allowed:
                metrics.CONSENT_DENIALS.labels(SERVICE, decision.reason).inc()
                details = {"reason": decision.reason, "purpose": request.purpose, "platform": request.platform,
                           **{k: v for k, v in image_fields.items()}}
                if job_id is not None:
                    details["job_id"] = job_id
                await audit.append(conn, self.schema, actor=actor, action="consent.denied", subject_id=request.subject,
                                   details=details)
        return decision

    def _decode(self, image_bytes: bytes) -> np.ndarray:
        return decode_image(image_bytes, max_pixels=self.config.max_face_pixels, work_pixels=self.config.face_work_pixels)

    def _image_facts(self, image_bytes: bytes, want_embedding: bool) -> tuple[dict[str, Any], Embedding | None]:
        image = self._decode(image_bytes)
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

    async def report_denial(self, conn: asyncpg.Connection, *, subject_id: str | None, reason: str, stage: str,
                            job_id: str, actor: str) -> None:
        """A denial another service decided (job.failed with a consent reason) joins the audit chain, on
        the caller's connection: it commits with the event's processed mark or not at all, so a
        redelivery never appends it twice."""
        await audit.append(conn, self.schema, actor=actor, action="consent.denied.reported", subject_id=subject_id,
                           details={"reason": reason, "stage": stage, "job_id": job_id})
        metrics.CONSENT_DENIALS.labels(stage, reason).inc()

    async def record_post(self, conn: asyncpg.Connection, *, post_id: str, platform: str, subject_id: str, job_id: str,
                          consent_version: int | None, published_at: datetime) -> None:
        """A post that used the subject's face (for takedown lists), on the caller's connection."""
        await conn.execute(
            f"INSERT INTO {self._t('posts')} (post_id, platform, subject_id, job_id, consent_version, published_at) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            post_id, platform, subject_id, job_id, consent_version, published_at)

    # -- audit checkpoints -----------------------------------------------------------------------------

    @property
    def log_id(self) -> str:
        """The key of this registry's checkpoints: its schema (one audit log per schema)."""
        return self.schema

    async def topic_checkpoints(self) -> list[audit.Seen]:
        """Every message of this log on the checkpoint topic, in the topic's order (keyed by event id:
        compaction keeps every checkpoint, so a replayed older one cannot erase a newer one).
        Signatures are not checked here."""
        found: list[audit.Seen] = []
        bus = self.outbox.bus
        try:
            messages = await bus.scan(audit.CHECKPOINT_TOPIC, datetime(1970, 1, 1, tzinfo=UTC))
        except Exception as exc:  # noqa: BLE001 - whatever the client raises: Kafka is not answering
            raise Unavailable(f"the audit checkpoint topic {audit.CHECKPOINT_TOPIC} cannot be read: {exc!r}") from None
        for msg in messages:
            value = bus.codec.decode(msg.value, expected=audit.CHECKPOINT_RECORD).value
            if value["log_id"] != self.log_id:
                continue
            try:
                cp = audit.checkpoint_from_record(value)
            except audit.CheckpointInvalid:
                # an altered record is still a word on the topic: keep it, verification refuses it
                cp = audit.Checkpoint(value["log_id"], int(value["entry_count"]), int(value["head_seq"]),
                                      value["head_hash"], value["issued_at"], value["key_id"], b"", b"",
                                      value.get("reason") or "")
            found.append(audit.Seen(cp, audit.TOPIC, (msg.partition, msg.offset)))
        found.sort(key=lambda s: s.position or (0, 0))
        return found

    async def latest_checkpoint(self) -> audit.Checkpoint | None:
        """The newest checkpoint of this log as published on the topic (never the database's word).
        Its signature is not checked here, and it need not be the strongest: see ``verify_audit``."""
        found = await self.topic_checkpoints()
        return found[-1].cp if found else None

    async def recorded_checkpoints(self, conn: asyncpg.Connection | asyncpg.Pool | None = None) -> list[audit.Seen]:
        """The checkpoints this registry issued, from its own record (table audit_checkpoints)."""
        rows = await (conn or self.pool).fetch(
            f"SELECT log_id, entry_count, head_seq, head_hash, issued_at, key_id, reason, payload, signature "
            f"FROM {self._t('audit_checkpoints')} WHERE log_id = $1 ORDER BY entry_count, issued_at", self.log_id)
        found = []
        for r in rows:
            try:
                cp = audit.checkpoint_from_record(dict(r))
            except audit.CheckpointInvalid:  # altered in the database: verification refuses it
                cp = audit.Checkpoint(r["log_id"], int(r["entry_count"]), int(r["head_seq"]), r["head_hash"],
                                      r["issued_at"], r["key_id"], b"", b"", r["reason"])
            found.append(audit.Seen(cp, audit.RECORD))
        return found

    async def verify_audit(self, public_keys: dict[str, Any] | None = None) -> audit.AuditVerification:
        """The chain, checked against the strongest evidence found: every checkpoint on the topic, the
        registry's own record of those it issued and the one it issued last (signatures checked with
        ``public_keys``: default the configured ones, else the registry's own). The newest message on
        the topic may be an older checkpoint replayed; that is named, and does not lower the bar."""
        seen = await self.topic_checkpoints()
        seen += await self.recorded_checkpoints()
        if self._last_checkpoint is not None and self._last_checkpoint.log_id == self.log_id:
            seen.append(audit.Seen(self._last_checkpoint, audit.MEMORY))
        if public_keys is None:
            public_keys = self.trusted_keys or await keys.public_keys(self.pool, self.schema)
        return await audit.verify_against_seen(self.pool, self.schema, seen, public_keys)

    async def issue_checkpoint(self, reason: str = "demand", *, only_if_grown: bool = False) -> audit.Checkpoint | None:
        """Sign (entry count, head hash, time), record it and publish it through the outbox. Refuses
        (Conflict) when the chain no longer extends the strongest checkpoint signed before (its own
        memory and record, else the topic's genuine ones): a registry must never sign a cut or
        rewritten log. None when there is nothing (new) to sign."""
        if self._checkpoint_lock is None:
            self._checkpoint_lock = asyncio.Lock()
        async with self._checkpoint_lock:
            known: list[audit.Checkpoint] = []
            if self._last_checkpoint is None:
                known += [s.cp for s in await self.topic_checkpoints()]
            async with self.pool.acquire() as conn, conn.transaction():
                await audit.lock(conn)  # no append between reading the head and signing it
                count, seq, head_hash = await audit.head(conn, self.schema)
                if count == 0:
                    return None
                known += [s.cp for s in await self.recorded_checkpoints(conn)]
                public = self.trusted_keys or await keys.public_keys(conn, self.schema)
                genuine = [cp for cp in known if cp.log_id == self.log_id and _genuine(cp, public)]
                if self._last_checkpoint is not None and self._last_checkpoint.log_id == self.log_id:
                    genuine.append(self._last_checkpoint)  # signed here: nothing to check
                previous = max(genuine, key=audit.strength) if genuine else None
                if previous is not None:
                    if only_if_grown and (previous.entry_count, previous.head_hash) == (count, head_hash):
                        return None
                    found = await audit.consistent_with(conn, self.schema, previous)
                    if not found.ok:
                        raise Conflict(f"the audit chain no longer extends the last signed checkpoint, so none is signed: {found.problem}")
                private = await keys.signing_key(conn, self.schema, self.wrapper)
                cp = audit.sign_checkpoint(private, log_id=self.log_id, entry_count=count, head_seq=seq,
                                           head_hash=head_hash, issued_at=self.clock(), reason=reason)
                if previous is not None and cp.issued_at <= previous.issued_at:
                    # the signed time only moves forward (a clock stepped back would look like a rollback)
                    cp = audit.sign_checkpoint(private, log_id=self.log_id, entry_count=count, head_seq=seq,
                                               head_hash=head_hash, issued_at=previous.issued_at + timedelta(milliseconds=1),
                                               reason=reason)
                await conn.execute(
                    f"INSERT INTO {self._t('audit_checkpoints')} (log_id, entry_count, head_seq, head_hash, issued_at, "
                    "key_id, reason, payload, signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                    cp.log_id, cp.entry_count, cp.head_seq, cp.head_hash, cp.issued_at, cp.key_id, cp.reason,
                    cp.payload, cp.signature)
                await self.outbox.add(conn, audit.CHECKPOINT_TOPIC, cp.record(new_event_id(), SERVICE))
            self._last_checkpoint = cp
            return cp

    async def run_checkpoints(self, stop: asyncio.Event | None = None, *, poll_s: float = 2.0) -> None:
        """Issue checkpoints while the service runs: after ``checkpoint_every`` new entries, and at
        least every ``checkpoint_interval_s`` if the chain grew."""
        stop = stop or asyncio.Event()
        last_at = asyncio.get_running_loop().time()
        poll = max(0.05, min(poll_s, self.config.checkpoint_interval_s))
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll)
            if stop.is_set():
                break
            try:
                count, _, _ = await audit.head(self.pool, self.schema)
                signed = self._last_checkpoint.entry_count if self._last_checkpoint else 0
                due_entries = count - signed >= max(1, self.config.checkpoint_every)
                due_time = asyncio.get_running_loop().time() - last_at >= self.config.checkpoint_interval_s
                if due_entries or due_time:
                    cp = await self.issue_checkpoint("entries" if due_entries else "interval", only_if_grown=True)
                    last_at = asyncio.get_running_loop().time()
                    if cp is not None:
                        log.info("audit checkpoint", entry_count=cp.entry_count, head_seq=cp.head_seq, reason=cp.reason)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a failed round is logged and tried again
                log.error("audit checkpoint failed", error=str(exc))
                last_at = asyncio.get_running_loop().time()

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


def _genuine(cp: audit.Checkpoint, public_keys: dict[str, Any]) -> bool:
    try:
        audit.verify_checkpoint(cp, public_keys)
    except audit.CheckpointInvalid:
        return False
    return True


def _check_new_subject(subject_id: str, display_name: str) -> None:
    if not SUBJECT_ID.fullmatch(subject_id):
        raise Refused(f"subject id {subject_id!r} must be 1-64 ASCII letters, digits, '-' or '_'")
    if not display_name.strip():
        raise Refused("display name must not be empty")


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


_REDUCED = ((1, cv2.IMREAD_COLOR), (2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4),
            (8, cv2.IMREAD_REDUCED_COLOR_8))


def too_many_pixels(what: str, width: int, height: int, limit: int) -> TooLarge:
    return TooLarge(f"{what} is {width}x{height} pixels ({width * height:,}), over the {limit:,}-pixel limit "
                    "for face images: send a smaller picture of the face")


def decode_image(data: bytes, *, max_pixels: int = MAX_FACE_PIXELS, work_pixels: int = FACE_WORK_PIXELS,
                 what: str = "the image") -> np.ndarray:
    """The image for face work: refused from its header when its canvas is over ``max_pixels``;
    decoded reduced (1/2, 1/4 or 1/8 a side, JPEG's DCT scaling where it applies) down to about
    ``work_pixels``, which is plenty for detection, QC, embedding and the perceptual hash."""
    if not data:
        raise Refused("the upload is empty")
    declared = declared_size(data)
    factor, flag = 1, cv2.IMREAD_COLOR
    if declared is not None:
        width, height = declared
        if width * height > max_pixels:
            raise too_many_pixels(what, width, height, max_pixels)
        for factor, flag in _REDUCED:  # noqa: B007 - the last one that fits is kept
            if width * height <= work_pixels * factor * factor:
                break
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is None:
        head = data[:8].hex()
        raise Refused(f"the upload is not an image (first bytes {head}); send PNG or JPEG")
    return image


def declared_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the header, read before decoding (a small file can claim a huge canvas)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:  # reads the header only
                return int(img.width), int(img.height)
    except Image.DecompressionBombError:
        # PIL refuses to even open a canvas this big; its own plugins still read the header
        for plugin in (PngImagePlugin.PngImageFile, JpegImagePlugin.JpegImageFile):
            with contextlib.suppress(Exception), plugin(io.BytesIO(data)) as img:
                return int(img.width), int(img.height)
        return (2**31, 1)  # pragma: no cover - a format PIL opened but neither plugin reads
    except Exception:
        return None  # not an image PIL knows: cv2's decode says so next


_LIBC: Any = None
_TRIM = threading.Lock()


def release_memory() -> None:
    """Hand freed heap back to the system (glibc keeps it in its arenas otherwise: a few large
    decodes would leave the process hundreds of MiB bigger for good). A no-op elsewhere."""
    global _LIBC
    with _TRIM:
        if _LIBC is None:
            try:
                _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
            except (OSError, AttributeError):
                _LIBC = False
        if _LIBC:
            with contextlib.suppress(Exception):
                _LIBC.malloc_trim(0)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value

