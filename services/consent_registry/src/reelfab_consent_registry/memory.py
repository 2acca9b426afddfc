"""The registry's adapters without a database or a disk: ``InMemoryRepository`` (the ``Repository``
contract on plain Python values) and ``InMemoryObjects`` (an object store in a dict), wired by
``in_memory`` (with an in-memory unit of work), for broker-free unit tests of the handlers and use
cases, in milliseconds.

A transaction is one at a time (the database's row and advisory locks, coarsely); it works on a copy
of the state that replaces the state only when the body returns, so a refused use case leaves
nothing behind, and its outbox rows reach ``published`` (and the bus, when given) only then. A store
``bound`` to a unit of work's connection (None in memory) writes straight through: the in-memory unit
of work cannot roll it back."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from reelfab.bus.base import Bus
from reelfab.bus.unit_of_work import InMemoryUnitOfWork, Value
from reelfab.consent.lease import LeaseTerms, SignedLease, key_id_of
from reelfab.errors import ObjectMissing
from reelfab.faces.types import FaceEngine
from reelfab.storage import StoredObject

from . import audit
from .audit_trail import utc_now
from .bootstrap import PRODUCES, Wired, bootstrap
from .config import RegistryConfig
from .crypto import KeyWrapper, LocalMasterKey
from .domain import AuditEntry, Post
from .keys import NoSigningKey
from .repository import EnrolledImage, Store, SubjectKey

_KEY_CONTEXT = b"reelfab.consent.signing-key"


@dataclass
class _Subject:
    subject_id: str
    display_name: str
    wrapped_key: bytes | None
    key_wrapper: str
    created_at: datetime
    erased_at: datetime | None = None


@dataclass
class _Record:
    lease: SignedLease
    terms: LeaseTerms
    actor: str
    reason: str | None
    document_uri: str | None
    created_at: datetime


@dataclass
class _SigningKey:
    key_id: str
    public: bytes
    private_enc: bytes
    retired: bool = False


@dataclass
class State:
    subjects: dict[str, _Subject] = field(default_factory=dict)
    images: dict[str, list[tuple[EnrolledImage, dict[str, Any], datetime]]] = field(default_factory=dict)
    records: dict[str, list[_Record]] = field(default_factory=dict)
    posts: dict[tuple[str, str], Post] = field(default_factory=dict)  # (platform, post id)
    usage: dict[tuple[str, date], int] = field(default_factory=dict)
    usage_jobs: dict[tuple[str, str], date] = field(default_factory=dict)
    audit_log: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[audit.Checkpoint] = field(default_factory=list)
    signing_keys: list[_SigningKey] = field(default_factory=list)


class InMemoryRepository:
    def __init__(self, *, log_id: str = "consent_registry", bus: Bus | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._log_id = log_id
        self.bus = bus
        self.clock = clock
        self.state = State()
        self.published: list[tuple[str, Value]] = []  # committed outbox rows, in order
        self.open_transactions = 0
        self.commits = 0
        self.rollbacks = 0
        self._lock = asyncio.Lock()

    @property
    def log_id(self) -> str:
        return self._log_id

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Store]:
        async with self._lock:
            store = InMemoryStore(self, copy.deepcopy(self.state), pending=[])
            self.open_transactions += 1
            try:
                yield store
            except BaseException:
                self.rollbacks += 1
                raise
            finally:
                self.open_transactions -= 1
            self.state = store.state
            self.commits += 1
            await self._announce(store.pending or [])

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Store]:
        yield InMemoryStore(self, None, pending=None)

    def bound(self, conn: Any) -> Store:
        return InMemoryStore(self, None, pending=None)

    async def _announce(self, rows: list[tuple[str, Value]]) -> None:
        for topic, value in rows:
            self.published.append((topic, value))
            if self.bus is not None:
                await self.bus.publish(topic, value)

    def generate_signing_key(self, wrapper: KeyWrapper) -> str:
        """A new signing key (the previous one retires), as ``keys.generate`` does in the database."""
        private = Ed25519PrivateKey.generate()
        raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        for k in self.state.signing_keys:
            k.retired = True
        key_id = key_id_of(private.public_key())
        self.state.signing_keys.append(_SigningKey(key_id, private.public_key().public_bytes_raw(),
                                                   wrapper.wrap(raw, _KEY_CONTEXT)))
        return key_id

    def on(self, topic: str) -> list[Value]:
        """What committed transactions announced on ``topic``, in order."""
        return [value for t, value in self.published if t == topic]


class InMemoryStore:
    def __init__(self, repo: InMemoryRepository, state: State | None, *,
                 pending: list[tuple[str, Value]] | None) -> None:
        self.repo = repo
        self._state = state  # a transaction's own copy; None: the repository's current state
        self.pending = pending  # None: not in a transaction, announced at once

    @property
    def state(self) -> State:
        return self.repo.state if self._state is None else self._state

    def _now(self) -> datetime:
        return self.repo.clock()

    # -- subjects ----------------------------------------------------------------------------------

    async def subject_exists(self, subject_id: str) -> bool:
        return subject_id in self.state.subjects

    async def insert_subject(self, subject_id: str, display_name: str, wrapped_key: bytes, key_wrapper: str) -> bool:
        if subject_id in self.state.subjects:
            return False
        self.state.subjects[subject_id] = _Subject(subject_id, display_name, wrapped_key, key_wrapper, self._now())
        return True

    async def subject_key(self, subject_id: str, *, for_update: bool = False) -> SubjectKey | None:
        s = self.state.subjects.get(subject_id)
        return None if s is None else SubjectKey(s.wrapped_key, s.erased_at)

    async def display_name(self, subject_id: str) -> str:
        return self.state.subjects[subject_id].display_name

    async def set_display_name(self, subject_id: str, display_name: str) -> None:
        self.state.subjects[subject_id].display_name = display_name

    async def destroy_subject_key(self, subject_id: str) -> None:
        s = self.state.subjects[subject_id]
        s.wrapped_key, s.display_name, s.erased_at = None, "", self._now()

    async def other_subject_keys(self, subject_id: str, key_wrapper: str) -> list[tuple[str, bytes]]:
        return [(s.subject_id, s.wrapped_key) for s in self.state.subjects.values()
                if s.subject_id != subject_id and s.wrapped_key is not None and s.key_wrapper == key_wrapper]

    # -- enrolled images ---------------------------------------------------------------------------

    async def image_enrolled(self, subject_id: str, sha256: str) -> bool:
        return any(i.sha256 == sha256 for i, _, _ in self.state.images.get(subject_id, []))

    async def enrolled_images(self, subject_id: str) -> list[EnrolledImage]:
        return [i for i, _, _ in self.state.images.get(subject_id, [])]

    async def insert_image(self, subject_id: str, image: EnrolledImage, qc: Mapping[str, Any]) -> None:
        if subject_id not in self.state.subjects:
            raise KeyError(f"no subject {subject_id}")  # the database's foreign key
        if await self.image_enrolled(subject_id, image.sha256):
            raise KeyError(f"{image.sha256} is enrolled for {subject_id} already")  # its unique key
        self.state.images.setdefault(subject_id, []).append((image, json.loads(json.dumps(qc)), self._now()))

    async def image_uri(self, subject_id: str, sha256: str) -> str | None:
        return next((i.image_uri for i, _, _ in self.state.images.get(subject_id, []) if i.sha256 == sha256), None)

    # -- consent versions --------------------------------------------------------------------------

    async def latest_terms(self, subject_id: str) -> LeaseTerms | None:
        records = self.state.records.get(subject_id)
        return records[-1].lease.terms() if records else None

    async def latest_lease(self, subject_id: str) -> SignedLease | None:
        records = self.state.records.get(subject_id)
        return records[-1].lease if records else None

    async def insert_consent_record(self, lease: SignedLease, terms: LeaseTerms, *, actor: str, reason: str | None,
                                    document_uri: str | None) -> None:
        records = self.state.records.setdefault(terms.subject, [])
        if any(r.terms.consent_version == terms.consent_version for r in records):
            raise KeyError(f"{terms.subject} v{terms.consent_version} exists already")  # the primary key
        records.append(_Record(lease, terms, actor, reason, document_uri, self._now()))

    # -- posts -------------------------------------------------------------------------------------

    async def insert_post(self, post: Post) -> None:
        self.state.posts.setdefault((post.platform, post.post_id), post)

    async def posts(self, subject_id: str) -> list[dict[str, Any]]:
        found = sorted((p for p in self.state.posts.values() if p.subject_id == subject_id),
                       key=lambda p: p.published_at)
        return [{"platform": p.platform, "post_id": p.post_id, "job_id": p.job_id, "published_at": p.published_at}
                for p in found]

    # -- usage -------------------------------------------------------------------------------------

    async def lock_usage(self, subject_id: str) -> None:
        return None  # transactions run one at a time

    async def job_counted(self, subject_id: str, job_id: str) -> bool:
        return (subject_id, job_id) in self.state.usage_jobs

    async def uses_on(self, subject_id: str, day: date) -> int:
        return self.state.usage.get((subject_id, day), 0)

    async def count_use(self, subject_id: str, job_id: str | None, day: date) -> None:
        if job_id is not None:
            if (subject_id, job_id) in self.state.usage_jobs:
                raise KeyError(f"job {job_id}'s use of {subject_id} is counted already")
            self.state.usage_jobs[(subject_id, job_id)] = day
        self.state.usage[(subject_id, day)] = self.state.usage.get((subject_id, day), 0) + 1

    # -- audit -------------------------------------------------------------------------------------

    async def append_audit(self, entry: AuditEntry) -> int:
        chain = self.state.audit_log
        prev = chain[-1]["entry_hash"] if chain else audit.GENESIS
        seq = len(chain) + 1
        at = datetime.now(UTC)
        details = json.loads(json.dumps(dict(entry.details), default=str))
        chain.append({"seq": seq, "at": at, "actor": entry.actor, "action": entry.action,
                      "subject_id": entry.subject_id, "details": details, "prev_hash": prev,
                      "entry_hash": audit.entry_hash(prev, seq, at, entry.actor, entry.action, entry.subject_id,
                                                     details)})
        return seq

    async def lock_audit(self) -> None:
        return None  # transactions run one at a time

    async def audit_head(self) -> tuple[int, int, str]:
        chain = self.state.audit_log
        if not chain:
            return 0, 0, audit.GENESIS
        return len(chain), int(chain[-1]["seq"]), str(chain[-1]["entry_hash"])

    async def audit_rows(self) -> list[Any]:
        return list(self.state.audit_log)

    async def recorded_checkpoints(self, log_id: str) -> list[Mapping[str, Any]]:
        found = sorted((cp for cp in self.state.checkpoints if cp.log_id == log_id),
                       key=lambda cp: (cp.entry_count, cp.issued_at))
        return [{**cp.summary(), "payload": cp.payload, "signature": cp.signature} for cp in found]

    async def record_checkpoint(self, cp: audit.Checkpoint) -> None:
        if not any((c.log_id, c.entry_count, c.issued_at) == (cp.log_id, cp.entry_count, cp.issued_at)
                   for c in self.state.checkpoints):
            self.state.checkpoints.append(cp)

    # -- keys and the outbox -----------------------------------------------------------------------

    async def signing_key(self, wrapper: KeyWrapper) -> Ed25519PrivateKey:
        live = [k for k in self.state.signing_keys if not k.retired]
        if not live:
            raise NoSigningKey("the registry has no signing key yet: run `reelfab consent keys rotate`")
        return Ed25519PrivateKey.from_private_bytes(wrapper.unwrap(live[-1].private_enc, _KEY_CONTEXT))

    async def public_keys(self) -> dict[str, Ed25519PublicKey]:
        return {k.key_id: Ed25519PublicKey.from_public_bytes(k.public) for k in self.state.signing_keys}

    async def publish(self, topic: str, value: Value) -> None:
        if self.repo.bus is not None:
            self.repo.bus.encode(topic, value)  # a record that does not fit its schema fails here, as in the outbox
        if self.pending is None:
            await self.repo._announce([(topic, value)])  # noqa: SLF001 - the repository's own announcement
        else:
            self.pending.append((topic, value))

    # -- reports -----------------------------------------------------------------------------------

    async def list_subjects(self) -> list[dict[str, Any]]:
        out = []
        for sid in sorted(self.state.subjects):
            s = self.state.subjects[sid]
            latest = self.state.records.get(sid, [])[-1:]
            terms = latest[0].terms if latest else None
            out.append({"subject_id": sid, "display_name": s.display_name, "erased_at": s.erased_at,
                        "version": terms.consent_version if terms else None, "status": terms.status if terms else None,
                        "valid_until": terms.valid_until if terms else None,
                        "images": len(self.state.images.get(sid, []))})
        return out

    async def subject_detail(self, subject_id: str) -> dict[str, Any] | None:
        s = self.state.subjects.get(subject_id)
        if s is None:
            return None
        versions = [{"version": r.terms.consent_version, "status": r.terms.status, "scope": r.terms.scope.canonical(),
                     "valid_from": r.terms.valid_from, "valid_until": r.terms.valid_until,
                     "daily_cap": r.terms.daily_cap, "reason": r.reason, "actor": r.actor, "created_at": r.created_at,
                     "lease_key_id": r.lease.key_id} for r in self.state.records.get(subject_id, [])]
        images = [{"sha256": i.sha256, "phash": i.phash, "embedder": i.embedder, "created_at": at}
                  for i, _, at in self.state.images.get(subject_id, [])]
        return {"subject_id": s.subject_id, "display_name": s.display_name, "created_at": s.created_at,
                "erased_at": s.erased_at, "versions": versions, "images": images,
                "posts": await self.posts(subject_id)}


class InMemoryObjects:
    """An object store in a dict (``mem://`` URIs). ``on_put`` is told of every write (a test can
    check that no transaction is open then)."""

    def __init__(self, on_put: Callable[[str], None] | None = None) -> None:
        self.objects: dict[str, bytes] = {}
        self.on_put = on_put
        self.deleted: list[str] = []

    def put_bytes(self, key: str, data: bytes) -> StoredObject:
        uri = f"mem://{key}"
        if self.on_put is not None:
            self.on_put(uri)
        self.objects[uri] = bytes(data)
        return StoredObject(uri, hashlib.sha256(data).hexdigest(), len(data))

    def get_bytes(self, uri: str, *, expect_sha256: str | None = None) -> bytes:
        try:
            return self.objects[uri]
        except KeyError:
            raise ObjectMissing(f"no object at {uri}") from None

    def delete(self, uri: str) -> None:
        self.objects.pop(uri, None)
        self.deleted.append(uri)


def forget_checkpoints(repo: InMemoryRepository) -> None:
    """The registry's record of issued checkpoints gone (as a database restored from an old backup)."""
    repo.state = replace(repo.state, checkpoints=[])


@dataclass(frozen=True)
class InMemoryRegistry:
    """The registry wired on in-memory adapters, and those adapters, for a test to look into."""

    wired: Wired
    repository: InMemoryRepository
    objects: InMemoryObjects
    uow: InMemoryUnitOfWork


def in_memory(bus: Bus, *, engine_factory: Callable[[], FaceEngine], wrapper: KeyWrapper | None = None,
              config: RegistryConfig | None = None, clock: Callable[[], datetime] = utc_now,
              log_id: str = "consent_registry") -> InMemoryRegistry:
    """``bootstrap`` with an in-memory repository (holding a first signing key), object store and unit
    of work; events reach ``bus`` (an InMemoryBus) when their transaction commits."""
    repository = InMemoryRepository(log_id=log_id, bus=bus, clock=clock)
    wrapper = wrapper or LocalMasterKey(os.urandom(32))
    repository.generate_signing_key(wrapper)
    objects = InMemoryObjects()
    uow = InMemoryUnitOfWork(bus, PRODUCES)
    wired = bootstrap(repository=repository, bus=bus, objects=objects, wrapper=wrapper, engine_factory=engine_factory,
                      uow=uow, config=config, clock=clock)
    return InMemoryRegistry(wired, repository, objects, uow)
