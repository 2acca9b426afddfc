"""The registry's use cases: enrol, grant, amend, revoke, erase, check, and what other services'
events add (posts, reported denials, flags). Each is one transaction of the repository: the table
change, the audit entry and the outgoing event (outbox) commit together or not at all. Decisions
are the domain's; image work happens before any transaction opens; so does the one object-store
write (an enrolled image, see ``enrol``).

The audit checkpoints are ``audit_trail.AuditTrail`` (``Registry.trail``)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any, Protocol, cast

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from reelfab import metrics
from reelfab.bus.base import new_event_id
from reelfab.consent.decision import ConsentRequest, Decision, decide
from reelfab.consent.lease import EnrolledImageRef, LeaseTerms, Scope, SignedLease, sign
from reelfab.contracts.topics import CONSENT_CHANGED
from reelfab.faces.types import Embedding
from reelfab.identifiers import check_identifier
from reelfab.logging import get_logger
from reelfab.storage import StoredObject

from . import domain
from .audit_trail import AuditTrail, utc_now
from .config import RegistryConfig
from .crypto import ErasedError, KeyWrapper, new_data_key, seal, unseal
from .domain import ACTIVE, SERVICE, AuditEntry, KnownIdentity, Post, ReportedDenial
from .errors import Conflict, NotFound, Refused, TooLarge
from .images import FaceWork
from .repository import EnrolledImage, Repository, Store, SubjectKey

log = get_logger("reelfab.consent_registry")


class Objects(Protocol):
    """Where sealed enrolled images are kept (``reelfab.storage.FileStore``; in memory for tests)."""

    def put_bytes(self, key: str, data: bytes) -> StoredObject: ...

    def get_bytes(self, uri: str, *, expect_sha256: str | None = None) -> bytes: ...

    def delete(self, uri: str) -> None: ...


@dataclass
class Registry:
    repository: Repository
    objects: Objects
    wrapper: KeyWrapper
    faces: FaceWork
    trail: AuditTrail
    config: RegistryConfig = field(default_factory=RegistryConfig)
    clock: Callable[[], datetime] = utc_now

    @property
    def log_id(self) -> str:
        return self.repository.log_id

    # -- subjects and enrolment -----------------------------------------------------------------------

    async def create_subject(self, subject_id: str, display_name: str, actor: str) -> dict[str, Any]:
        domain.check_new_subject(subject_id, display_name)
        wrapped = self.wrapper.wrap(new_data_key(), subject_id.encode())
        async with self.repository.transaction() as store:
            await self._insert_subject(store, subject_id, display_name, actor, wrapped)
        return {"subject_id": subject_id, "display_name": display_name.strip()}

    async def _insert_subject(self, store: Store, subject_id: str, display_name: str, actor: str, wrapped: bytes) -> None:
        """The subject row (with its wrapped data key) and its audit entry, in the caller's transaction."""
        if not await store.insert_subject(subject_id, display_name.strip(), wrapped, self.wrapper.name):
            raise Conflict(f"subject {subject_id} already exists")
        await store.append_audit(AuditEntry(actor, "subject.created", subject_id))

    async def enrol(self, subject_id: str, image_bytes: bytes, actor: str, *, create_name: str | None = None) -> dict[str, Any]:
        """Enrol an image for ``subject_id``. With ``create_name`` the subject is new: it is created in
        the enrolment's own transaction, so a refused enrolment (failed QC, another subject's face)
        leaves nothing behind, not even an empty subject.

        The sealed image is written to the object store first, under a key of its own (named by the
        sealed bytes, see ``domain.sealed_image_key``), and only then does the transaction that
        records it open. A transaction that rolls back (a refusal, a conflict, an error) deletes that
        object again; one whose commit fails with its outcome unknown leaves it (an orphan object at
        worst, sealed and unreadable without its row). So no row ever points at a missing object, and
        no object-store call ever runs inside a transaction."""
        if len(image_bytes) > self.config.max_upload_bytes:
            raise TooLarge(f"image of {len(image_bytes)} bytes is over the {self.config.max_upload_bytes}-byte limit")
        if create_name is not None:
            domain.check_new_subject(subject_id, create_name)
        sha = hashlib.sha256(image_bytes).hexdigest()
        wrapped: bytes | None = None
        async with self.repository.connection() as store:  # say so before any face work
            if create_name is not None:
                if await store.subject_exists(subject_id):
                    raise Conflict(f"subject {subject_id} already exists")
                key = new_data_key()
                wrapped = self.wrapper.wrap(key, subject_id.encode())
            else:
                key = await self._key(store, subject_id)  # unknown or erased
                if await store.image_enrolled(subject_id, sha):
                    raise Conflict(f"this image is already enrolled for {subject_id}")
        # decoding, QC and the embedding are CPU work: off the event loop, outside any transaction
        examined = await self.faces.examine(image_bytes)
        sealed = seal(key, image_bytes, subject_id.encode())
        stored = await asyncio.to_thread(self.objects.put_bytes, domain.sealed_image_key(subject_id, sha, sealed), sealed)
        recorded = False
        try:
            async with self.repository.transaction() as store:
                if wrapped is not None and create_name is not None:
                    await self._insert_subject(store, subject_id, create_name, actor, wrapped)  # rolled back if refused below
                if await self._key(store, subject_id, for_update=True) != key:
                    raise Conflict(f"{subject_id}'s data key changed while the image was examined; enrol it again")
                await self._record_image(store, subject_id, examined.sha256, examined.phash, examined.embedding,
                                         examined.qc_metrics, stored.uri, key, actor)
                recorded = True
        except BaseException:
            await self._forget_object(stored.uri, rolled_back=not recorded)
            raise
        return {"subject_id": subject_id, "sha256": sha, "phash": examined.phash, "embedder": examined.embedding.model,
                "qc": examined.qc_metrics}

    async def _record_image(self, store: Store, subject_id: str, sha: str, phash: str, embedding: Embedding,
                            qc: dict[str, Any], uri: str, key: bytes, actor: str) -> None:
        if await store.image_enrolled(subject_id, sha):
            raise Conflict(f"this image is already enrolled for {subject_id}")
        own = await self._embeddings(store, subject_id, key)
        others = await self._other_identities(store, subject_id, embedding.model)
        model, metric = embedding.model, embedding.metric
        domain.check_enrolment(subject_id, embedding.vector, [e.vector for e in own], others,
                               self.faces.identity_threshold(self.config.asset_kind),
                               lambda a, b: Embedding(a, model, metric).distance(Embedding(b, model, metric)))
        sealed_embedding = seal(key, embedding.vector.astype(np.float32).tobytes(), subject_id.encode())
        await store.insert_image(subject_id, EnrolledImage(sha, phash, f"{model}:{metric}", sealed_embedding, uri),
                                 {"passed": True, "metrics": qc})
        await store.append_audit(AuditEntry(actor, "image.enrolled", subject_id,
                                            {"sha256": sha, "phash": phash, "embedder": model}))
        latest = await store.latest_terms(subject_id)
        if latest is not None and latest.status in ACTIVE:
            await self._issue(store, subject_id, "AMENDED", actor, reason="image enrolled")

    async def _forget_object(self, uri: str, *, rolled_back: bool) -> None:
        if not rolled_back:  # the commit failed, outcome unknown: the row may exist, so the object stays
            log.warning("enrolment commit failed with its outcome unknown; the sealed image stays", uri=uri)
            return
        try:
            await asyncio.to_thread(self.objects.delete, uri)
        except Exception as exc:  # noqa: BLE001 - the enrolment's own error is what the caller needs
            log.warning("a refused enrolment's sealed image could not be deleted (an orphan)", uri=uri, error=str(exc))

    # -- consent versions ------------------------------------------------------------------------------

    async def grant(self, subject_id: str, *, document: bytes, scope: Scope, valid_from: datetime | None,
                    valid_until: datetime | None, daily_cap: int | None, actor: str,
                    document_uri: str | None = None) -> LeaseTerms:
        if not document:
            raise Refused("the signed consent document is empty")
        async with self.repository.transaction() as store:
            await self._key(store, subject_id, for_update=True)
            latest = await store.latest_terms(subject_id)
            if latest is not None and latest.status in ACTIVE:
                raise Conflict(f"{subject_id} already has consent v{latest.consent_version}; amend it instead (`reelfab consent amend {subject_id} …`)")
            return await self._issue(store, subject_id, "GRANTED", actor, scope=scope, valid_from=valid_from,
                                     valid_until=valid_until, daily_cap=daily_cap,
                                     document_sha256=hashlib.sha256(document).hexdigest(), document_uri=document_uri)

    async def amend(self, subject_id: str, *, actor: str, scope: Scope | None = None, valid_until: datetime | None = None,
                    daily_cap: int | None = None, reason: str | None = None,
                    scope_changes: dict[str, Any] | None = None) -> LeaseTerms:
        """``scope_changes`` (platforms, allowed_tags, territories, commercial_use) are merged with the
        current scope inside the locked transaction, so two concurrent amends cannot lose one."""
        async with self.repository.transaction() as store:
            await self._key(store, subject_id, for_update=True)
            if scope_changes:
                current = await store.latest_terms(subject_id)
                scope = replace(scope or (current.scope if current else Scope()), **scope_changes)
            return await self._issue(store, subject_id, "AMENDED", actor, scope=scope, valid_until=valid_until,
                                     daily_cap=daily_cap, reason=reason)

    async def revoke(self, subject_id: str, *, actor: str, reason: str) -> tuple[LeaseTerms, list[dict[str, Any]]]:
        async with self.repository.transaction() as store:
            await self._key_or_none(store, subject_id, for_update=True)
            posts = await store.posts(subject_id)
            terms = await self._issue(store, subject_id, "REVOKED", actor, reason=reason,
                                      takedown=[p["post_id"] for p in posts])
        return terms, posts

    async def erase(self, subject_id: str, *, actor: str) -> dict[str, Any]:
        async with self.repository.transaction() as store:
            await self._key(store, subject_id, for_update=True)
            images = await store.enrolled_images(subject_id)
            await store.set_display_name(subject_id, "")
            await self._issue(store, subject_id, "ERASED", actor, reason="erasure request")
            await store.destroy_subject_key(subject_id)  # the key goes, and with it the name: personal data too
            await store.append_audit(AuditEntry(actor, "subject.erased", subject_id, {"images": [i.sha256 for i in images]}))
        return {"subject_id": subject_id, "unreadable_images": [i.image_uri for i in images],
                "unreadable_embeddings": len(images)}

    async def _issue(self, store: Store, subject_id: str, status: str, actor: str, *, reason: str | None = None,
                     takedown: Sequence[str] = (), document_uri: str | None = None, **changes: Any) -> LeaseTerms:
        """A new consent version: signed, recorded, audited and announced, in the caller's transaction."""
        previous = await store.latest_terms(subject_id)
        if previous is not None and previous.status == "ERASED":
            raise Conflict(f"{subject_id} was erased: their consent can no longer change")
        images = await store.enrolled_images(subject_id)
        if status == "ERASED":
            digest = previous.embedding_digest if previous else ""
        else:
            key = await self._key(store, subject_id)
            digest = domain.embedding_digest(
                [np.frombuffer(unseal(key, i.embedding_enc, subject_id.encode()), np.float32) for i in images])
        refs = [EnrolledImageRef(i.sha256, i.phash, i.embedder.split(":")[0]) for i in images]
        terms = domain.next_terms(previous, subject_id=subject_id, status=status, now=self.clock(), images=refs,
                                  embeddings_digest=digest, **changes)
        lease = sign(terms, await store.signing_key(self.wrapper))
        terms = lease.terms()
        await store.insert_consent_record(lease, terms, actor=actor, reason=reason, document_uri=document_uri)
        await store.append_audit(domain.consent_changed_entry(terms, lease, actor, reason=reason, takedown=takedown))
        display = await store.display_name(subject_id)
        await store.publish(CONSENT_CHANGED, domain.consent_event(terms, lease, display, event_id=new_event_id(), reason=reason,
                                                        takedown=takedown, document_uri=document_uri))
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
            image_fields, found = await self.faces.facts(image_bytes, embedding is None)
            embedding = embedding or found
        day = request.at.astimezone(UTC).date()
        async with self.repository.transaction() as store:
            # one consuming check per subject at a time, so two cannot both take the last use of the day
            await store.lock_usage(request.subject)
            terms = await store.latest_terms(request.subject)
            counted = job_id is not None and await store.job_counted(request.subject, job_id)
            used = await store.uses_on(request.subject, day)
            # a job whose use is counted already holds its place under the cap: only the rest is checked
            request = replace(request, **image_fields, used_today=None if counted else used)
            decision = decide(terms, request, phash_threshold=self.config.phash_threshold)
            if decision.allowed and embedding is not None:
                decision = await self._identity_decision(store, request.subject, embedding, decision)
            if decision.allowed and consume and not counted:
                await store.count_use(request.subject, job_id, day)
            if not decision.allowed:
                metrics.CONSENT_DENIALS.labels(SERVICE, decision.reason).inc()
                await store.append_audit(domain.check_denied_entry(
                    decision, subject_id=request.subject, actor=actor, purpose=request.purpose,
                    platform=request.platform, image_facts=image_fields, job_id=job_id))
        return decision

    async def _identity_decision(self, store: Store, subject_id: str, embedding: Embedding, decision: Decision) -> Decision:
        key = await self._key_or_none(store, subject_id)
        if key is None:
            return Decision.deny("erased", f"{subject_id}'s biometric data was erased", decision.consent_version)
        enrolled = [e for e in await self._embeddings(store, subject_id, key) if e.model == embedding.model]
        nearest = min(embedding.distance(e) for e in enrolled) if enrolled else None
        return domain.identity_decision(decision, subject_id, nearest, self.faces.identity_threshold(self.config.asset_kind))

    # -- what other services' events add (on the connection the handler's unit of work gives) -----------

    async def record_post(self, store: Store, post: Post) -> None:
        """A post that used the subject's face (for takedown lists)."""
        await store.insert_post(post)

    async def report_denial(self, store: Store, denial: ReportedDenial) -> None:
        """A denial another service decided joins the audit chain: it commits with the event's processed
        mark or not at all, so a redelivery never appends it twice."""
        await store.append_audit(denial.entry())
        metrics.CONSENT_DENIALS.labels(denial.stage, denial.reason).inc()

    async def record_flag(self, store: Store, entry: AuditEntry) -> None:
        """A subject flagged by analytics joins the audit chain."""
        await store.append_audit(entry)

    # -- reading ---------------------------------------------------------------------------------------

    async def list_subjects(self) -> list[dict[str, Any]]:
        async with self.repository.connection() as store:
            return [cast(dict[str, Any], jsonable(s)) for s in await store.list_subjects()]

    async def get_subject(self, subject_id: str) -> dict[str, Any]:
        async with self.repository.connection() as store:
            detail = await store.subject_detail(subject_id)
        if detail is None:
            raise NotFound(f"no subject {subject_id}")
        return cast(dict[str, Any], jsonable(detail))

    async def latest_lease(self, subject_id: str) -> SignedLease | None:
        async with self.repository.connection() as store:
            return await store.latest_lease(subject_id)

    async def read_image(self, subject_id: str, sha256: str) -> bytes:
        """The enrolled image's bytes (for the swapper's fetch); ErasedError once the key is gone."""
        async with self.repository.connection() as store:
            key = await self._key_or_none(store, subject_id)
            uri = await store.image_uri(subject_id, sha256)
        if uri is None:
            raise NotFound(f"{subject_id} has no enrolled image {sha256}")
        if key is None:
            raise ErasedError(f"{subject_id} was erased: the image at {uri} can no longer be decrypted")
        return unseal(key, self.objects.get_bytes(uri), subject_id.encode())

    async def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """Every public key the registry signed with, retired ones too (old leases still verify)."""
        async with self.repository.connection() as store:
            return await store.public_keys()

    # -- internals -------------------------------------------------------------------------------------

    async def _subject(self, store: Store, subject_id: str, *, for_update: bool) -> SubjectKey:
        row = await store.subject_key(subject_id, for_update=for_update)
        if row is None:
            raise NotFound(f"no subject {subject_id}")
        return row

    async def _key_or_none(self, store: Store, subject_id: str, *, for_update: bool = False) -> bytes | None:
        """The subject's data key; None once erased; NotFound for an unknown subject."""
        row = await self._subject(store, subject_id, for_update=for_update)
        return None if row.wrapped_key is None else self.wrapper.unwrap(row.wrapped_key, subject_id.encode())

    async def _key(self, store: Store, subject_id: str, *, for_update: bool = False) -> bytes:
        """The subject's data key; NotFound for an unknown subject, ErasedError once erased."""
        row = await self._subject(store, subject_id, for_update=for_update)
        if row.wrapped_key is None:
            when = f"{row.erased_at:%Y-%m-%d}" if row.erased_at is not None else "an earlier day"
            raise ErasedError(f"{subject_id} was erased on {when}; their images and embeddings are unreadable")
        return self.wrapper.unwrap(row.wrapped_key, subject_id.encode())

    async def _embeddings(self, store: Store, subject_id: str, key: bytes) -> list[Embedding]:
        out = []
        for image in await store.enrolled_images(subject_id):
            model, _, metric = image.embedder.partition(":")
            vector = np.frombuffer(unseal(key, image.embedding_enc, subject_id.encode()), np.float32)
            out.append(Embedding(vector, model, metric or "euclidean"))
        return out

    async def _other_identities(self, store: Store, subject_id: str, model: str) -> list[KnownIdentity]:
        # subjects whose keys another master key wrapped (before a rotation) cannot be read here
        found = []
        for other, wrapped in await store.other_subject_keys(subject_id, self.wrapper.name):
            key = self.wrapper.unwrap(wrapped, other.encode())
            found.append(KnownIdentity(other, [e.vector for e in await self._embeddings(store, other, key) if e.model == model]))
        return found


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value
