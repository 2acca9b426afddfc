"""The audit chain's signed checkpoints, as use cases: issue one (on demand, or while the service
runs), read them back from the topic and the registry's own record, and verify the chain against the
strongest one found (see ``audit`` for the evidence rules)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from reelfab.bus.base import Bus, new_event_id
from reelfab.logging import get_logger

from . import audit
from .config import RegistryConfig
from .crypto import KeyWrapper
from .domain import SERVICE
from .errors import Conflict, Unavailable
from .repository import Repository, Store

log = get_logger("reelfab.consent_registry")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class AuditTrail:
    repository: Repository
    bus: Bus  # the checkpoint topic is read through it
    wrapper: KeyWrapper
    config: RegistryConfig = field(default_factory=RegistryConfig)
    clock: Callable[[], datetime] = utc_now
    # the keys a checkpoint's signature is checked with (REELFAB_CONSENT_PUBLIC_KEYS, what the other
    # services trust); None: the registry's own public keys from its database
    trusted_keys: dict[str, Ed25519PublicKey] | None = None
    last: audit.Checkpoint | None = None  # the newest checkpoint this registry signed or saw verified
    _lock: asyncio.Lock | None = field(default=None, init=False, repr=False)

    @property
    def log_id(self) -> str:
        """The key of this registry's checkpoints: its schema (one audit log per schema)."""
        return self.repository.log_id

    async def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """What a checkpoint is verified with: the configured keys, else the registry's own."""
        if self.trusted_keys:
            return self.trusted_keys
        async with self.repository.connection() as store:
            return await store.public_keys()

    async def topic_checkpoints(self) -> list[audit.Seen]:
        """Every message of this log on the checkpoint topic, in the topic's order (keyed by event id:
        compaction keeps every checkpoint, so a replayed older one cannot erase a newer one).
        Signatures are not checked here."""
        found: list[audit.Seen] = []
        try:
            messages = await self.bus.scan(audit.CHECKPOINT_TOPIC, datetime(1970, 1, 1, tzinfo=UTC))
        except Exception as exc:  # noqa: BLE001 - whatever the client raises: Kafka is not answering
            raise Unavailable(f"the audit checkpoint topic {audit.CHECKPOINT_TOPIC} cannot be read: {exc!r}") from None
        for msg in messages:
            value = self.bus.codec.decode(msg.value, expected=audit.CHECKPOINT_RECORD).value
            if value["log_id"] != self.log_id:
                continue
            found.append(audit.Seen(_checkpoint(value), audit.TOPIC, (msg.partition, msg.offset)))
        found.sort(key=lambda s: s.position or (0, 0))
        return found

    async def latest_checkpoint(self) -> audit.Checkpoint | None:
        """The newest checkpoint of this log as published on the topic (never the database's word).
        Its signature is not checked here, and it need not be the strongest: see ``verify_audit``."""
        found = await self.topic_checkpoints()
        return found[-1].cp if found else None

    async def recorded_checkpoints(self, store: Store | None = None) -> list[audit.Seen]:
        """The checkpoints this registry issued, from its own record (table audit_checkpoints)."""
        if store is None:
            async with self.repository.connection() as own:
                return await self.recorded_checkpoints(own)
        return [audit.Seen(_checkpoint(r), audit.RECORD) for r in await store.recorded_checkpoints(self.log_id)]

    def _remembered(self) -> audit.Checkpoint | None:
        return self.last if self.last is not None and self.last.log_id == self.log_id else None

    async def verify_audit(self, public_keys: dict[str, Ed25519PublicKey] | None = None) -> audit.AuditVerification:
        """The chain, checked against the strongest evidence found: every checkpoint on the topic, the
        registry's own record of those it issued and the one it issued last (signatures checked with
        ``public_keys``: default the configured ones, else the registry's own). The newest message on
        the topic may be an older checkpoint replayed; that is named, and does not lower the bar."""
        seen = await self.topic_checkpoints()
        async with self.repository.connection() as store:
            seen += await self.recorded_checkpoints(store)
            if (remembered := self._remembered()) is not None:
                seen.append(audit.Seen(remembered, audit.MEMORY))
            if public_keys is None:
                public_keys = self.trusted_keys or await store.public_keys()
            return audit.verify_rows(await store.audit_rows(), seen, public_keys)

    async def issue_checkpoint(self, reason: str = "demand", *, only_if_grown: bool = False) -> audit.Checkpoint | None:
        """Sign (entry count, head hash, time), record it and publish it through the outbox. Refuses
        (Conflict) when the chain no longer extends the strongest checkpoint signed before (its own
        memory and record, else the topic's genuine ones): a registry must never sign a cut or
        rewritten log. None when there is nothing (new) to sign."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            known: list[audit.Checkpoint] = []
            if self.last is None:
                known += [s.cp for s in await self.topic_checkpoints()]
            async with self.repository.transaction() as store:
                await store.lock_audit()  # no append between reading the head and signing it
                count, seq, head_hash = await store.audit_head()
                if count == 0:
                    return None
                known += [s.cp for s in await self.recorded_checkpoints(store)]
                public = self.trusted_keys or await store.public_keys()
                genuine = [cp for cp in known if cp.log_id == self.log_id and _genuine(cp, public)]
                if (remembered := self._remembered()) is not None:
                    genuine.append(remembered)  # signed here: nothing to check
                previous = max(genuine, key=audit.strength) if genuine else None
                if previous is not None:
                    if only_if_grown and (previous.entry_count, previous.head_hash) == (count, head_hash):
                        return None
                    found = audit.extends(await store.audit_rows(), previous)
                    if not found.ok:
                        raise Conflict(f"the audit chain no longer extends the last signed checkpoint, so none is signed: {found.problem}")
                cp = audit.sign_checkpoint(await store.signing_key(self.wrapper), log_id=self.log_id, entry_count=count,
                                           head_seq=seq, head_hash=head_hash, reason=reason,
                                           issued_at=audit.signing_time(self.clock(), previous))
                await store.record_checkpoint(cp)
                await store.publish(audit.CHECKPOINT_TOPIC, cp.record(new_event_id(), SERVICE))
            self.last = cp
            return cp

    async def run_checkpoints(self, stop: asyncio.Event | None = None, *, poll_s: float = 2.0) -> None:
        """Issue checkpoints while the service runs: after ``checkpoint_every`` new entries, and at
        least every ``checkpoint_interval_s`` if the chain grew."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        last_at = loop.time()
        poll = max(0.05, min(poll_s, self.config.checkpoint_interval_s))
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll)
            if stop.is_set():
                break
            try:
                async with self.repository.connection() as store:
                    count, _, _ = await store.audit_head()
                signed = self.last.entry_count if self.last else 0
                due_entries = count - signed >= max(1, self.config.checkpoint_every)
                due_time = loop.time() - last_at >= self.config.checkpoint_interval_s
                if due_entries or due_time:
                    cp = await self.issue_checkpoint("entries" if due_entries else "interval", only_if_grown=True)
                    last_at = loop.time()
                    if cp is not None:
                        log.info("audit checkpoint", entry_count=cp.entry_count, head_seq=cp.head_seq, reason=cp.reason)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a failed round is logged and tried again
                log.error("audit checkpoint failed", error=str(exc))
                last_at = loop.time()


def _checkpoint(value: Mapping[str, Any]) -> audit.Checkpoint:
    """A checkpoint as found; an altered one is still a word on the topic or in the record: kept, and
    verification refuses it."""
    try:
        return audit.checkpoint_from_record(value)
    except audit.CheckpointInvalid:
        return audit.Checkpoint(value["log_id"], int(value["entry_count"]), int(value["head_seq"]), value["head_hash"],
                                value["issued_at"], value["key_id"], b"", b"", value.get("reason") or "")


def _genuine(cp: audit.Checkpoint, public_keys: dict[str, Ed25519PublicKey]) -> bool:
    try:
        audit.verify_checkpoint(cp, public_keys)
    except audit.CheckpointInvalid:
        return False
    return True
