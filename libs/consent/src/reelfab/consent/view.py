"""A service's local, up-to-date view of the compacted consent topic: the latest verified lease per
subject. Leases that do not verify are refused (the previous state stays); older versions arriving
late never overwrite newer ones; a revocation applies as soon as its event is consumed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from reelfab import metrics
from reelfab.bus import Bus, Event
from reelfab.consent.decision import ConsentRequest, Decision, decide
from reelfab.consent.lease import LeaseInvalid, LeaseTerms, SignedLease, verify
from reelfab.contracts.topics import CONSENT_CHANGED
from reelfab.logging import get_logger

CONSENT_TOPIC = CONSENT_CHANGED
RELOAD_EVERY_S = 5.0
log = get_logger("reelfab.consent.view")


@dataclass(frozen=True)
class Applied:
    subject: str
    outcome: str  # applied | stale | invalid
    detail: str = ""


class ConsentView:
    def __init__(
        self,
        public_keys: dict[str, Ed25519PublicKey] | Callable[[], dict[str, Ed25519PublicKey]],
        *,
        service: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        # a loader (the registry's /keys, or settings) is asked again when a lease names a key we
        # have not seen: the registry rotated its signing key
        self._load_keys = public_keys if callable(public_keys) else None
        self.public_keys: dict[str, Ed25519PublicKey] = {} if callable(public_keys) else dict(public_keys)
        self.service = service
        self.clock = clock
        self._reloaded_at: datetime | None = None
        self.suspect: dict[str, str] = {}  # subjects whose latest event did not verify
        self.latest: dict[str, LeaseTerms] = {}
        # told of every lease a consumer applies (live or while catching up): a stage that keeps media
        # made from a face removes it when the consent behind it is withdrawn
        self.listeners: list[Callable[[LeaseTerms], Awaitable[None]]] = []
        self.applied_at: dict[str, datetime] = {}

    def apply(self, record: Any) -> Applied:
        value = record.to_avro() if hasattr(record, "to_avro") else dict(record)
        subject = value["subject_id"]
        lease = value.get("lease")
        if not lease:
            return self._invalid(subject, "consent event carries no signed lease")
        signed = SignedLease(bytes(lease["payload"]), bytes(lease["signature"]), lease["key_id"])
        try:
            terms = verify(signed, self.public_keys)
        except LeaseInvalid as exc:
            return self._invalid(subject, str(exc))
        if terms.subject != subject:
            return self._invalid(subject, f"lease is for {terms.subject}, the event for {subject}")
        current = self.latest.get(subject)
        if current is not None and terms.consent_version < current.consent_version:
            return Applied(subject, "stale", f"v{terms.consent_version} is older than v{current.consent_version}")
        self.latest[subject] = terms
        self.suspect.pop(subject, None)
        self.applied_at[subject] = self.clock()
        return Applied(subject, "applied", f"{terms.status} v{terms.consent_version}")

    def _may_reload(self) -> bool:
        """At most one key reload per RELOAD_EVERY_S: a topic full of leases from a retired
        registry must not turn into a request per event."""
        now = self.clock()
        if self._reloaded_at is not None and (now - self._reloaded_at).total_seconds() < RELOAD_EVERY_S and self.public_keys:
            return False
        self._reloaded_at = now
        return True

    async def apply_async(self, record: Any) -> Applied:
        """``apply`` for consumers: a lease naming a key we have not seen (the registry rotated its
        key) makes us ask the loader again, off the event loop. If that fails, the subject is held
        as suspect (denied) until a lease verifies: an update we could not read may be a revocation."""
        value = record.to_avro() if hasattr(record, "to_avro") else dict(record)
        lease = value.get("lease") or {}
        key_id = lease.get("key_id")
        if key_id and key_id not in self.public_keys and self._load_keys is not None and self._may_reload():
            try:
                self.public_keys = dict(await asyncio.to_thread(self._load_keys))
            except Exception as exc:
                self.suspect[value["subject_id"]] = f"a consent update could not be verified yet: {exc}"
                raise
        applied = self.apply(value)
        if applied.outcome == "applied":
            for listener in self.listeners:
                await listener(self.latest[applied.subject])
        return applied

    def _invalid(self, subject: str, detail: str) -> Applied:
        self.suspect[subject] = detail  # fail closed: whatever this event said, we cannot trust it
        log.warning("consent event refused", subject=subject, detail=detail, service=self.service)
        metrics.CONSENT_DENIALS.labels(self.service, "invalid_lease").inc()
        return Applied(subject, "invalid", detail)

    def withdrawn(self, subject: str) -> tuple[str, str] | None:
        """(reason, detail) when this view no longer holds an active consent for ``subject`` (revoked,
        expired, erased, none, or its latest event did not verify); None while it does. Asked while a
        swap or render runs, so a revocation consumed mid-job stops it."""
        if subject in self.suspect:
            return "invalid_lease", f"consent of {subject} could not be verified"
        terms = self.latest.get(subject)
        if terms is not None and terms.status in ("GRANTED", "AMENDED"):
            return None
        status = terms.status.lower() if terms else "no_consent"
        reason = status if status in ("expired", "erased", "no_consent") else "revoked"
        return reason, f"consent of {subject} is {status}"

    def terms(self, subject: str) -> LeaseTerms | None:
        return self.latest.get(subject)

    def check(self, request: ConsentRequest) -> Decision:
        if request.subject in self.suspect:
            decision = Decision.deny("invalid_lease", self.suspect[request.subject])
            metrics.CONSENT_DENIALS.labels(self.service, decision.reason).inc()
            return decision
        decision = decide(self.latest.get(request.subject), request)
        if not decision.allowed:
            metrics.CONSENT_DENIALS.labels(self.service, decision.reason).inc()
        return decision

    async def catch_up(self, bus: Bus) -> int:
        """Read the whole compacted topic before the service takes work, so a restarted stage does
        not judge a job on an empty view. An event that cannot be verified leaves its subject suspect."""
        applied = 0
        for msg in await bus.scan(CONSENT_TOPIC, datetime(1970, 1, 1, tzinfo=UTC)):
            try:
                value = bus.codec.decode(msg.value, expected="reelfab.events.ConsentChanged").value
                await self.apply_async(value)
                applied += 1
            except Exception as exc:  # noqa: BLE001 - one bad event must not keep the service down
                log.warning("consent event skipped while catching up", offset=msg.offset, error=str(exc))
        return applied

    def subscribe(self, bus: Bus, *, group: str | None = None) -> None:
        """Follow the topic from the beginning in a group of its own: every instance needs every
        subject's latest lease, not a share of the partitions."""

        async def on_change(event: Event[Any]) -> None:
            await self.apply_async(event.record)

        bus.subscribe(CONSENT_TOPIC, on_change, group=group or f"{self.service}.consent-view.{uuid.uuid4().hex[:8]}")
