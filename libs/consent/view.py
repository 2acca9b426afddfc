"""A service's local, up-to-date view of the compacted consent topic: the latest verified lease per
subject. Leases that do not verify are refused (the previous state stays); older versions arriving
late never overwrite newer ones; a revocation applies as soon as its event is consumed."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from reelfab import metrics
from reelfab.bus import Bus, Event
from reelfab.consent.decision import ConsentRequest, Decision, decide
from reelfab.consent.lease import LeaseInvalid, LeaseTerms, SignedLease, verify
from reelfab.logging import get_logger

CONSENT_TOPIC = "reelfab.consent.changed.v1"
log = get_logger("reelfab.consent.view")


@dataclass(frozen=True)
class Applied:
    subject: str
    outcome: str  # applied | stale | invalid
    detail: str = ""


class ConsentView:
    def __init__(
        self,
        public_keys: dict[str, Ed25519PublicKey],
        *,
        service: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.public_keys = dict(public_keys)
        self.service = service
        self.clock = clock
        self.latest: dict[str, LeaseTerms] = {}
        self.applied_at: dict[str, datetime] = {}

    def apply(self, record: Any) -> Applied:
        value = record.to_avro() if hasattr(record, "to_avro") else dict(record)
        subject = value["face_id"]
        lease = value.get("lease")
        if not lease:
            return self._invalid(subject, "consent event carries no signed lease")
        try:
            terms = verify(SignedLease(bytes(lease["payload"]), bytes(lease["signature"]), lease["key_id"]), self.public_keys)
        except LeaseInvalid as exc:
            return self._invalid(subject, str(exc))
        if terms.subject != subject:
            return self._invalid(subject, f"lease is for {terms.subject}, the event for {subject}")
        current = self.latest.get(subject)
        if current is not None and terms.consent_version < current.consent_version:
            return Applied(subject, "stale", f"v{terms.consent_version} is older than v{current.consent_version}")
        self.latest[subject] = terms
        self.applied_at[subject] = self.clock()
        return Applied(subject, "applied", f"{terms.status} v{terms.consent_version}")

    def _invalid(self, subject: str, detail: str) -> Applied:
        log.warning("consent event refused", subject=subject, detail=detail, service=self.service)
        metrics.CONSENT_DENIALS.labels(self.service, "invalid_lease").inc()
        return Applied(subject, "invalid", detail)

    def terms(self, subject: str) -> LeaseTerms | None:
        return self.latest.get(subject)

    def check(self, request: ConsentRequest) -> Decision:
        decision = decide(self.latest.get(request.subject), request)
        if not decision.allowed:
            metrics.CONSENT_DENIALS.labels(self.service, decision.reason).inc()
        return decision

    def subscribe(self, bus: Bus, *, group: str | None = None) -> None:
        """Follow the topic from the beginning in a group of its own: every instance needs every
        subject's latest lease, not a share of the partitions."""

        async def on_change(event: Event[Any]) -> None:
            self.apply(event.record)

        bus.subscribe(CONSENT_TOPIC, on_change, group=group or f"{self.service}.consent-view.{uuid.uuid4().hex[:8]}")
