"""A stage's consent view may lag the registry by a moment (a job planned right after a grant): a local
denial that the registry contradicts with a newer consent version waits for the view instead of failing
the job; a denial the registry confirms, or one the view already holds the newest version for, stands."""

from __future__ import annotations

import asyncio

import pytest

from reelfab.consent.decision import Decision
from reelfab.consent.gate import ConsentGate
from reelfab.errors import TransientError
from tests.conftest import unique
from tests.integration.media_handlers_support import Registry, lease, view

ASK = {"purpose": "swap", "platform": "tiktok", "tags": ("dance",), "commercial": False}


async def test_a_job_right_after_a_grant_waits_for_the_view_and_goes_ahead() -> None:
    v = view("swapper-gpu")
    subject = unique("vera")
    registry = Registry(Decision(True, "ok", "granted", 1))
    gate = ConsentGate(v, registry, catch_up_s=5)  # type: ignore[arg-type]

    async def lease_arrives() -> None:
        await asyncio.sleep(0.3)
        v.apply(lease(subject))

    arrival = asyncio.create_task(lease_arrives())
    decision = await gate.check(subject=subject, **ASK)  # type: ignore[arg-type]
    await arrival
    assert decision.allowed and registry.calls[0]["consume"] is False and not registry.calls[0]["image"]


async def test_a_view_that_never_catches_up_is_a_transient_failure_naming_it() -> None:
    subject = unique("vera")
    gate = ConsentGate(view("swapper-gpu"), Registry(Decision(True, "ok", "granted", 3)), catch_up_s=0.3)  # type: ignore[arg-type]
    with pytest.raises(TransientError, match="behind the consent topic"):
        await gate.check(subject=subject, **ASK)  # type: ignore[arg-type]


@pytest.mark.parametrize("registry_says", [Decision(False, "revoked", "revoked", 2), Decision(True, "ok", "stale", 2)],
                         ids=["registry-agrees", "view-already-newest"])
async def test_a_denial_stands_when_the_registry_agrees_or_the_view_is_not_behind(registry_says: Decision) -> None:
    v = view("swapper-gpu")
    subject = unique("vera")
    v.apply(lease(subject, 2, "REVOKED"))
    gate = ConsentGate(v, Registry(registry_says), catch_up_s=5)  # type: ignore[arg-type]
    decision = await asyncio.wait_for(gate.check(subject=subject, **ASK), 2)  # type: ignore[arg-type]
    assert (decision.allowed, decision.reason) == (False, "revoked")


def test_the_view_says_why_consent_is_withdrawn_and_holds_an_unverifiable_update_as_withdrawn() -> None:
    v = view("swapper-gpu")
    subject = unique("vera")
    assert v.withdrawn(subject) == ("no_consent", f"consent of {subject} is no_consent")
    v.apply(lease(subject))
    assert v.withdrawn(subject) is None
    v.apply({**lease(subject, 2, "REVOKED"), "lease": {**lease(subject, 2, "REVOKED")["lease"], "signature": b"x" * 64}})
    assert v.withdrawn(subject) is not None and v.withdrawn(subject)[0] == "invalid_lease"  # type: ignore[index]
    v.apply(lease(subject, 2, "REVOKED"))
    assert v.withdrawn(subject) == ("revoked", f"consent of {subject} is revoked")
    v.apply(lease(subject, 3, "ERASED"))
    assert v.withdrawn(subject)[0] == "erased"  # type: ignore[index]
