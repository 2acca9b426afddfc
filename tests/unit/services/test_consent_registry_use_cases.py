"""The consent registry's use cases on in-memory adapters (``reelfab_consent_registry.memory``): no
database, no broker, no disk. What a use case decides, what it records and announces, and that an
enrolment never writes to the object store inside a transaction nor leaves a row pointing at a
missing object."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from reelfab.bus.memory import InMemoryBus
from reelfab.consent.decision import ConsentRequest
from reelfab.consent.lease import Scope, verify
from reelfab.contracts.codec import default_codec
from reelfab.contracts.generated.records import ConsentChanged
from reelfab.contracts.topics import AUDIT_CHECKPOINT, CONSENT_CHANGED
from reelfab.settings import Settings
from reelfab_consent_registry.crypto import ErasedError
from reelfab_consent_registry.domain import SERVICE
from reelfab_consent_registry.errors import Conflict, NotFound, Refused, TooLarge
from reelfab_consent_registry.memory import InMemoryRegistry, in_memory
from reelfab_consent_registry.repository import Store
from reelfab_consent_registry.use_cases import Registry
from tests.integration.consent_api_support import StandInEngine, portrait_png

NOW = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)
SCOPE = Scope(("tiktok",), ("dance",), (), True)
ADA, VERA = portrait_png(7), portrait_png(8)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def reg(clock: Clock) -> InMemoryRegistry:
    bus = InMemoryBus(Settings(), SERVICE, default_codec())
    built = in_memory(bus, engine_factory=StandInEngine, clock=clock)  # type: ignore[arg-type]

    def no_transaction_open(uri: str) -> None:
        assert built.repository.open_transactions == 0, f"{uri} written inside a transaction"

    built.objects.on_put = no_transaction_open
    return built


@pytest.fixture
def registry(reg: InMemoryRegistry) -> Registry:
    return reg.wired.registry


def actions(reg: InMemoryRegistry) -> list[str]:
    return [row["action"] for row in reg.repository.state.audit_log]


def announced(reg: InMemoryRegistry) -> list[ConsentChanged]:
    return [v for v in reg.repository.on(CONSENT_CHANGED) if isinstance(v, ConsentChanged)]


async def granted(registry: Registry, subject: str = "ada", image: bytes = ADA, **grant: Any) -> None:
    await registry.enrol(subject, image, "ops", create_name=subject.title())
    options: dict[str, Any] = {"scope": SCOPE, "valid_from": None, "valid_until": None, "daily_cap": None}
    await registry.grant(subject, document=b"signed form", actor="ops", **{**options, **grant})


def ask(subject: str = "ada", **kw: Any) -> ConsentRequest:
    return ConsentRequest(**{"subject": subject, "purpose": "swap", "platform": "tiktok", "at": NOW,
                             "template_tags": ("dance",), "commercial": True, **kw})


# -- subjects and enrolment ---------------------------------------------------------------------------


async def test_a_subject_is_created_once_with_a_valid_id(reg: InMemoryRegistry, registry: Registry) -> None:
    assert await registry.create_subject("ada", "  Ada L. ", actor="ops") == {"subject_id": "ada", "display_name": "Ada L."}
    with pytest.raises(Conflict, match="already exists"):
        await registry.create_subject("ada", "Ada again", actor="ops")
    with pytest.raises(Refused, match="subject id"):
        await registry.create_subject("no/such", "Bad", actor="ops")
    with pytest.raises(Refused, match="display name"):
        await registry.create_subject("blank", "  ", actor="ops")
    assert actions(reg) == ["subject.created"] and reg.repository.rollbacks == 1


async def test_an_enrolment_writes_its_object_before_its_transaction_and_the_row_points_at_it(
    reg: InMemoryRegistry, registry: Registry
) -> None:
    result = await registry.enrol("ada", ADA, "ops", create_name="Ada")
    assert result["embedder"] == "stand-in-v1" and result["qc"]["faces"] == 1
    [image] = await reg.repository.bound(None).enrolled_images("ada")
    assert image.sha256 == result["sha256"] and image.image_uri.startswith("mem://consent/ada/")
    assert list(reg.objects.objects) == [image.image_uri]
    assert ADA[:64] not in reg.objects.objects[image.image_uri]  # sealed
    assert await registry.read_image("ada", image.sha256) == ADA
    assert actions(reg) == ["subject.created", "image.enrolled"]


async def test_a_refused_enrolment_leaves_no_object_no_row_and_no_subject(reg: InMemoryRegistry,
                                                                          registry: Registry) -> None:
    await registry.enrol("ada", ADA, "ops", create_name="Ada")
    with pytest.raises(Refused, match="matches another enrolled subject \\(ada"):  # one person, one subject
        await registry.enrol("vera", ADA, "ops", create_name="Vera")
    assert len(reg.objects.deleted) == 1 and reg.objects.deleted[0] not in reg.objects.objects
    assert len(reg.objects.objects) == 1
    assert [s["subject_id"] for s in await registry.list_subjects()] == ["ada"]
    assert actions(reg) == ["subject.created", "image.enrolled"]
    with pytest.raises(Refused, match="not an image"):  # refused before any object is written
        await registry.enrol("vera", b"%PDF-1.4 not an image", "ops", create_name="Vera")
    assert len(reg.objects.objects) == 1 and len(reg.objects.deleted) == 1


async def test_enrolment_refusals_before_any_work(registry: Registry, reg: InMemoryRegistry) -> None:
    with pytest.raises(NotFound):
        await registry.enrol("nobody", ADA, "ops")
    with pytest.raises(TooLarge):
        await registry.enrol("ada", b"x" * (registry.config.max_upload_bytes + 1), "ops", create_name="Ada")
    await registry.enrol("ada", ADA, "ops", create_name="Ada")
    with pytest.raises(Conflict, match="already exists"):
        await registry.enrol("ada", VERA, "ops", create_name="Ada again")
    with pytest.raises(Conflict, match="already enrolled"):
        await registry.enrol("ada", ADA, "ops")
    assert len(reg.objects.objects) == 1 and reg.objects.deleted == []


async def test_an_enrolment_whose_transaction_fails_deletes_its_object(
    reg: InMemoryRegistry, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    await registry.create_subject("ada", "Ada", actor="ops")
    real = reg.repository.transaction

    @contextlib.asynccontextmanager
    async def failing_insert() -> AsyncIterator[Store]:
        async with real() as store:
            async def boom(*args: Any) -> None:
                raise ConnectionResetError("the database went away mid-transaction")

            monkeypatch.setattr(store, "insert_image", boom)
            yield store

    monkeypatch.setattr(reg.repository, "transaction", failing_insert)
    with pytest.raises(ConnectionResetError):
        await registry.enrol("ada", ADA, "ops")
    assert reg.objects.objects == {} and len(reg.objects.deleted) == 1
    assert await reg.repository.bound(None).enrolled_images("ada") == []


async def test_an_enrolment_whose_commit_outcome_is_unknown_keeps_its_object(
    reg: InMemoryRegistry, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit landed but the answer was lost: the row exists, so its object must too."""
    await registry.create_subject("ada", "Ada", actor="ops")
    real = reg.repository.transaction

    @contextlib.asynccontextmanager
    async def commit_answer_lost() -> AsyncIterator[Store]:
        async with real() as store:
            yield store
        raise ConnectionResetError("connection lost during COMMIT")

    monkeypatch.setattr(reg.repository, "transaction", commit_answer_lost)
    with pytest.raises(ConnectionResetError):
        await registry.enrol("ada", ADA, "ops")
    [image] = await reg.repository.bound(None).enrolled_images("ada")
    assert image.image_uri in reg.objects.objects and reg.objects.deleted == []


# -- consent versions ---------------------------------------------------------------------------------


async def test_a_grant_is_signed_recorded_audited_and_announced(reg: InMemoryRegistry, registry: Registry) -> None:
    await registry.create_subject("bare", "Bare", actor="ops")
    with pytest.raises(Refused, match="enrol a photo"):
        await registry.grant("bare", document=b"form", scope=SCOPE, valid_from=None, valid_until=None,
                             daily_cap=None, actor="ops")
    await granted(registry, daily_cap=3)
    [event] = announced(reg)
    assert (event.subject_id, event.change, event.consent_version, event.daily_cap) == ("ada", "GRANTED", 1, 3)
    assert event.lease is not None and [i.sha256 for i in event.enrolled_images] == [
        i.sha256 for i in await reg.repository.bound(None).enrolled_images("ada")]
    async with reg.repository.connection() as store:
        terms = verify(await store.latest_lease("ada"), await store.public_keys())  # type: ignore[arg-type]
    assert terms.status == "GRANTED" and terms.issued_at == NOW and terms.scope == SCOPE
    assert actions(reg)[-1] == "consent.granted"
    with pytest.raises(Conflict, match="amend it instead"):
        await registry.grant("ada", document=b"again", scope=SCOPE, valid_from=None, valid_until=None,
                             daily_cap=None, actor="ops")
    with pytest.raises(Refused, match="document is empty"):
        await registry.grant("ada", document=b"", scope=SCOPE, valid_from=None, valid_until=None,
                             daily_cap=None, actor="ops")
    assert len(announced(reg)) == 1  # refusals announce nothing


class OnePersonEngine(StandInEngine):
    """Every picture shows the same person (one embedding), so a second photo may join a subject."""

    def prepare_source(self, image: Any) -> Any:
        return super().prepare_source(np.zeros((4, 4, 3), np.uint8))


async def test_amend_merges_scope_changes_and_a_new_image_amends_active_consent(clock: Clock) -> None:
    reg = in_memory(InMemoryBus(Settings(), SERVICE, default_codec()), engine_factory=OnePersonEngine, clock=clock)
    registry = reg.wired.registry
    await granted(registry)
    terms = await registry.amend("ada", actor="ops", scope_changes={"territories": ("FR",)}, reason="FR only")
    assert terms.consent_version == 2 and terms.scope == Scope(("tiktok",), ("dance",), ("FR",), True)
    clock.now = NOW + timedelta(hours=1)
    await registry.enrol("ada", VERA, "ops")  # another photo of the same person: consent v3 lists both
    assert [(e.change, e.consent_version, len(e.enrolled_images)) for e in announced(reg)] == [
        ("GRANTED", 1, 1), ("AMENDED", 2, 1), ("AMENDED", 3, 2)]
    assert announced(reg)[-1].reason == "image enrolled" and announced(reg)[-1].scope.territories == ["FR"]
    with pytest.raises(NotFound):
        await registry.amend("nobody", actor="ops", daily_cap=2)


async def test_revoke_lists_the_posts_to_take_down_and_erase_makes_biometrics_unreadable(
    reg: InMemoryRegistry, registry: Registry
) -> None:
    from reelfab_consent_registry.domain import Post

    await granted(registry)
    await registry.record_post(reg.repository.bound(None), Post("p-1", "tiktok", "ada", "j-1", 1, NOW))
    with pytest.raises(Conflict, match="revoke"):
        await registry.erase("ada", actor="ops")
    terms, posts = await registry.revoke("ada", actor="ops", reason="asked to")
    assert terms.status == "REVOKED" and [p["post_id"] for p in posts] == ["p-1"]
    assert announced(reg)[-1].takedown_post_ids == ["p-1"]
    sha = (await registry.get_subject("ada"))["images"][0]["sha256"]
    report = await registry.erase("ada", actor="ops")
    assert report["unreadable_embeddings"] == 1 and report["unreadable_images"][0] in reg.objects.objects
    with pytest.raises(ErasedError):
        await registry.read_image("ada", sha)
    with pytest.raises(ErasedError):
        await registry.enrol("ada", VERA, "ops")
    assert (await registry.check(ask())).reason == "erased"
    assert announced(reg)[-1].change == "ERASED" and announced(reg)[-1].display_name == ""
    detail = await registry.get_subject("ada")
    assert detail["display_name"] == "" and detail["erased_at"] is not None
    assert [v["status"] for v in detail["versions"]] == ["GRANTED", "REVOKED", "ERASED"]
    with pytest.raises(Conflict, match="erased"):
        await registry.revoke("ada", actor="ops", reason="again")
    assert actions(reg)[-3:] == ["consent.erased", "subject.erased", "consent.denied"]


# -- checks -------------------------------------------------------------------------------------------


async def test_a_job_spends_one_use_of_the_daily_cap_however_often_it_asks(reg: InMemoryRegistry,
                                                                          registry: Registry) -> None:
    await granted(registry, daily_cap=2)
    for _ in range(3):  # a job and two redeliveries
        assert (await registry.check(ask(), consume=True, job_id="job-1")).allowed
    assert (await registry.check(ask(), consume=True, job_id="job-2")).allowed
    denied = await registry.check(ask(), consume=True, job_id="job-3", actor="swapper")
    assert denied.reason == "daily_cap_reached"
    assert (await registry.check(ask(), job_id="job-1")).allowed  # a counted job is inside the cap
    assert reg.repository.state.usage == {("ada", NOW.date()): 2}
    entry = reg.repository.state.audit_log[-1]
    assert (entry["action"], entry["actor"], entry["details"]["job_id"]) == ("consent.denied", "swapper", "job-3")
    with pytest.raises(Refused, match="job_id"):
        await registry.check(ask(), consume=True)


async def test_checks_follow_the_lease_and_the_enrolled_images(reg: InMemoryRegistry, registry: Registry,
                                                              clock: Clock) -> None:
    await granted(registry, valid_until=NOW + timedelta(days=30))
    assert (await registry.check(ask(), image_bytes=ADA)).allowed
    assert (await registry.check(ask(), image_bytes=VERA)).reason == "image_not_enrolled"
    assert (await registry.check(ask(platform="youtube"))).reason == "out_of_scope_platform"
    assert (await registry.check(ask(at=NOW + timedelta(days=31)))).reason == "expired"
    assert (await registry.check(ask("nobody"))).reason == "no_consent"
    assert actions(reg).count("consent.denied") == 4


# -- the audit trail ----------------------------------------------------------------------------------


async def test_a_checkpoint_is_signed_published_on_commit_and_guards_the_chain(reg: InMemoryRegistry,
                                                                               registry: Registry) -> None:
    trail = registry.trail
    assert await trail.issue_checkpoint() is None  # nothing to sign
    for n in range(3):
        await registry.create_subject(f"s{n}", f"Person {n}", actor="ops")
    cp = await trail.issue_checkpoint()
    assert cp is not None and (cp.entry_count, cp.head_seq, cp.log_id) == (3, 3, reg.repository.log_id)
    assert [v.entry_count for v in reg.repository.on(AUDIT_CHECKPOINT)] == [3]  # type: ignore[union-attr]
    assert await trail.latest_checkpoint() == cp  # read back from the (in-memory) topic
    assert await trail.issue_checkpoint(only_if_grown=True) is None
    assert (await trail.verify_audit()).ok
    del reg.repository.state.audit_log[2:]  # someone cuts the tail
    result = await trail.verify_audit()
    assert not result.ok and result.first_broken == 3 and "are gone" in result.problem
    with pytest.raises(Conflict, match="no longer extends"):
        await trail.issue_checkpoint()
