"""The swapper's priority, broker-free: the admission alone (run slots, expedited first, arrival order
within a lane, no starvation of normal jobs, cancellation), then the handler on the in-memory bus (an
expedited job published behind a backlog of normal ones starts next; a job whose deadline passed, on
arrival or while it waited, is not started), then a source face named by registry reference, fetched
through a fake of RegistryClient.fetch_image at the point of use."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from reelfab.consent.decision import Decision
from reelfab.consent.images import ImageFetchRefused, ImageFetchRejected, image_ref
from reelfab.contracts.codec import default_codec
from reelfab.contracts.topics import JOB_FAILED, SWAP_COMPLETED, SWAP_EXPEDITED, SWAP_REQUESTED
from reelfab.errors import DependencyUnavailable
from reelfab_swapper_gpu import handlers
from reelfab_swapper_gpu.priority import Admission, Lane, lane_for
from tests.conftest import eventually
from tests.unit.services.test_swapper_handlers import FACE_PNG, NOW, FakeGate, World, job, make_world

E, N = Lane.EXPEDITED, Lane.NORMAL


# ------------------------------------------------------------------------------------ the admission


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


class Jobs:
    """Jobs that take a slot of an admission and hold it until told to finish; ``started`` in order."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.started: list[str] = []
        self.finish: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def submit(self, name: str, lane: Lane) -> None:
        self.finish[name] = asyncio.Event()

        async def run() -> None:
            async with self.admission.slot(lane):
                self.started.append(name)
                await self.finish[name].wait()

        self.tasks[name] = asyncio.create_task(run(), name=name)
        await _settle()  # it has asked for its slot: arrival order is submission order

    async def done(self, name: str) -> None:
        assert name in self.started, f"{name} cannot finish: it has not started (started: {self.started})"
        self.finish[name].set()
        await self.tasks[name]
        await _settle()


async def test_free_slots_admit_at_once_and_a_full_admission_makes_jobs_wait() -> None:
    jobs = Jobs(Admission(2, expedited_grace_s=0.0))
    await jobs.submit("a", N)
    await jobs.submit("b", E)
    await jobs.submit("c", N)
    assert jobs.started == ["a", "b"] and jobs.admission.running == 2
    assert jobs.admission.waiting(N) == 1 and jobs.admission.waiting() == 1
    await jobs.done("a")
    assert jobs.started == ["a", "b", "c"] and jobs.admission.waiting() == 0
    await jobs.done("b")
    await jobs.done("c")
    assert jobs.admission.running == 0


async def test_an_expedited_job_behind_many_waiting_normal_ones_starts_first() -> None:
    jobs = Jobs(Admission(1, expedited_grace_s=0.0))
    await jobs.submit("busy", N)
    for i in range(50):
        await jobs.submit(f"n{i}", N)
    await jobs.submit("urgent", E)
    assert jobs.started == ["busy"], "a running job is not pre-empted"
    await jobs.done("busy")
    assert jobs.started == ["busy", "urgent"]
    await jobs.done("urgent")
    for i in range(50):
        await jobs.done(f"n{i}")
    assert jobs.started == ["busy", "urgent", *(f"n{i}" for i in range(50))]  # arrival order within the lane


async def test_every_waiting_expedited_job_goes_before_any_normal_one_each_lane_in_arrival_order() -> None:
    jobs = Jobs(Admission(1, expedited_grace_s=0.0))
    await jobs.submit("busy", N)
    order = [("n0", N), ("e0", E), ("n1", N), ("e1", E), ("n2", N), ("e2", E)]
    for name, lane in order:
        await jobs.submit(name, lane)
    for name in ["busy", "e0", "e1", "e2", "n0", "n1"]:
        await jobs.done(name)
    assert jobs.started == ["busy", "e0", "e1", "e2", "n0", "n1", "n2"]


async def test_a_normal_job_that_would_start_while_an_expedited_one_waits_yields() -> None:
    jobs = Jobs(Admission(1, expedited_grace_s=0.0))
    await jobs.submit("busy", N)
    await jobs.submit("urgent", E)
    await jobs.done("busy")  # the slot went to the waiting expedited job, not to whoever asks next
    await jobs.submit("late-normal", N)
    assert jobs.started == ["busy", "urgent"] and jobs.admission.waiting(N) == 1


async def test_a_cancelled_waiter_leaves_the_queue_and_a_slot_given_to_one_is_handed_on() -> None:
    jobs = Jobs(Admission(1, expedited_grace_s=0.0))
    await jobs.submit("busy", N)
    await jobs.submit("gone", E)
    await jobs.submit("next", N)
    jobs.tasks["gone"].cancel()
    await _settle()
    assert jobs.admission.waiting(E) == 0 and jobs.admission.waiting(N) == 1
    await jobs.done("busy")
    assert jobs.started == ["busy", "next"]
    await jobs.done("next")


async def test_a_freed_expedited_slot_is_held_a_moment_for_the_next_expedited_job() -> None:
    """A consumer hands in one job at a time: the next expedited job arrives just after the last one
    ends, while a normal job already waits. The slot waits for it (the grace), then goes to the
    normal job when no expedited job comes."""
    jobs = Jobs(Admission(1, expedited_grace_s=0.2))
    await jobs.submit("e1", E)
    await jobs.submit("n1", N)
    await jobs.done("e1")
    assert jobs.started == ["e1"]  # held: n1 does not take it at once
    await jobs.submit("e2", E)  # the expedited consumer's next job, a moment later
    assert jobs.started == ["e1", "e2"]
    await jobs.done("e2")
    assert jobs.started == ["e1", "e2"]
    await asyncio.sleep(0.3)  # no expedited job came: the normal one has the slot after the grace
    await _settle()
    assert jobs.started == ["e1", "e2", "n1"]
    await jobs.done("n1")


async def test_without_a_normal_job_waiting_nothing_is_held() -> None:
    jobs = Jobs(Admission(1, expedited_grace_s=30.0))
    await jobs.submit("e1", E)
    await jobs.done("e1")
    await jobs.submit("n1", N)
    assert jobs.started == ["e1", "n1"]  # the free slot is taken at once
    await jobs.done("n1")


async def test_a_slot_handed_to_a_waiter_cancelled_before_it_runs_is_handed_on() -> None:
    admission = Admission(1, expedited_grace_s=0.0)
    await admission.acquire(N)  # a running job, held by hand so its release is one synchronous step
    started: list[str] = []

    async def wait(name: str, lane: Lane) -> None:
        async with admission.slot(lane):
            started.append(name)

    unlucky = asyncio.create_task(wait("unlucky", E))
    await _settle()
    after = asyncio.create_task(wait("after", N))
    await _settle()
    admission.release()  # the slot is handed to "unlucky" ...
    unlucky.cancel()  # ... which is cancelled before it ever runs
    await _settle()
    assert started == ["after"] and unlucky.cancelled() and after.done() and admission.running == 0


async def test_the_admission_reports_waiting_counts_and_admissions_by_lane() -> None:
    seen: list[tuple[Lane, int]] = []
    admitted: list[tuple[Lane, float]] = []
    ticks = iter(range(100))
    jobs = Jobs(Admission(1, expedited_grace_s=0.0, clock=lambda: float(next(ticks)), watch=lambda lane, n: seen.append((lane, n)),
                          admitted=lambda lane, s: admitted.append((lane, s))))
    await jobs.submit("busy", N)
    await jobs.submit("n", N)
    await jobs.submit("e", E)
    assert seen == [(N, 1), (E, 1)]
    await jobs.done("busy")
    assert seen[-1] == (E, 0)
    await jobs.done("e")
    assert seen[-1] == (N, 0)
    assert [lane for lane, _ in admitted] == [N, E, N] and admitted[0][1] == 0.0 and admitted[1][1] > 0


def test_an_admission_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one run slot"):
        Admission(0)
    with pytest.raises(ValueError, match="expedited_burst must be at least 1"):
        Admission(1, expedited_burst=0)


async def test_a_normal_job_is_not_starved_by_a_stream_of_expedited_ones() -> None:
    jobs = Jobs(Admission(1, expedited_burst=2, expedited_grace_s=0.0))
    await jobs.submit("busy", N)
    await jobs.submit("n0", N)
    for i in range(5):
        await jobs.submit(f"e{i}", E)
    for name in ["busy", "e0", "e1", "n0", "e2", "e3"]:
        await jobs.done(name)
    # two expedited jobs went past the waiting normal one; then it had its turn; then expedited again
    assert jobs.started == ["busy", "e0", "e1", "n0", "e2", "e3", "e4"]
    await jobs.done("e4")


async def test_only_expedited_jobs_admitted_while_a_normal_one_waits_count_towards_the_burst() -> None:
    jobs = Jobs(Admission(1, expedited_burst=1, expedited_grace_s=0.0))
    await jobs.submit("busy", N)
    await jobs.submit("e0", E)
    await jobs.submit("e1", E)
    await jobs.done("busy")  # e0 starts with no normal job waiting: no normal job was passed over
    await jobs.submit("n0", N)
    await jobs.submit("e2", E)
    for name in ["e0", "e1", "n0"]:
        await jobs.done(name)
    assert jobs.started == ["busy", "e0", "e1", "n0", "e2"]
    await jobs.done("e2")


@pytest.mark.parametrize(("topic", "priority", "lane"), [
    (SWAP_EXPEDITED, 5, E), (SWAP_EXPEDITED, 0, E), (SWAP_REQUESTED, 0, N), (SWAP_REQUESTED, 3, E),
])
def test_the_lane_is_the_expedited_topic_or_a_priority_above_zero(topic: str, priority: int, lane: Lane) -> None:
    assert lane_for(topic, priority) is lane


# ------------------------------------------------------------------------------------ the handler


class HoldingGate(FakeGate):
    """Denies every job at its first (local) consent check, cheaply; a check for a subject in ``hold``
    waits until its event is set. ``subjects`` is the order the jobs started in."""

    def __init__(self) -> None:
        super().__init__(Decision(False, "no_consent", "no consent on file", None))
        self.hold: dict[str, asyncio.Event] = {}
        self.subjects: list[str] = []

    async def check(self, **kwargs: Any) -> Decision:
        self.subjects.append(kwargs["subject"])
        if (event := self.hold.get(kwargs["subject"])) is not None:
            await event.wait()
        return await super().check(**kwargs)


def holding_world(tmp_path: Path) -> tuple[World, HoldingGate]:
    w = make_world(tmp_path)
    gate = HoldingGate()
    w.swapper.ports.gate = gate
    handle = handlers.on_swap_requested(w.swapper)
    w.bus.subscribe(SWAP_EXPEDITED, handle)
    w.bus.subscribe(SWAP_REQUESTED, handle)
    return w, gate


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_an_expedited_job_published_behind_a_backlog_of_normal_jobs_starts_next(tmp_path: Path) -> None:
    w, gate = holding_world(tmp_path)
    gate.hold["busy"] = release = asyncio.Event()
    admitted_before = {lane: _sample("reelfab_swap_admissions_total", {"lane": lane}) for lane in ("normal", "expedited")}
    async with w.bus:
        await w.bus.publish(SWAP_REQUESTED, job(w, subject_id="busy").record)
        await eventually(lambda: gate.subjects == ["busy"], timeout=5)
        for i in range(30):
            await w.bus.publish(SWAP_REQUESTED, job(w, subject_id=f"normal-{i}").record)
        await w.bus.publish(SWAP_EXPEDITED, job(w, subject_id="urgent", priority=10).record)
        await eventually(lambda: w.swapper.admission.waiting(Lane.EXPEDITED) == 1, timeout=5)
        assert _sample("reelfab_swap_jobs_waiting", {"lane": "expedited"}) == 1
        release.set()
        await w.bus.wait_idle(10)
    assert gate.subjects[:2] == ["busy", "urgent"], gate.subjects[:5]
    assert sorted(gate.subjects[2:]) == sorted(f"normal-{i}" for i in range(30))
    codec = default_codec()
    failed = [codec.decode(m.value).value["reason_code"] for p in w.bus.log.log_for(JOB_FAILED) for m in p]
    assert failed == ["consent.no_consent"] * 32  # every job went through the same handler and failed fast
    assert _sample("reelfab_swap_admissions_total", {"lane": "expedited"}) == admitted_before["expedited"] + 1
    assert _sample("reelfab_swap_admissions_total", {"lane": "normal"}) == admitted_before["normal"] + 31
    assert _sample("reelfab_swap_jobs_waiting", {"lane": "expedited"}) == 0


async def test_a_job_past_its_deadline_is_not_started(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    ev = job(w, deadline=NOW - timedelta(seconds=1), priority=5)
    await handlers.on_swap_requested(w.swapper)(ev)
    [(code, detail)] = w.failed()
    assert code == "deadline_passed" and "was not started" in detail
    [failed] = w.on(JOB_FAILED)
    assert failed["retryable"] is False and failed["job_id"] == ev.record.job_id
    assert w.gate.calls == [] and w.store.reads == [] and w.qc.calls == 0 and w.swap.calls == []
    assert w.job_objects(ev.record.job_id) == []  # over: its inputs are purged like any failed job's


async def test_a_job_already_late_on_arrival_fails_without_queueing_for_a_slot(tmp_path: Path) -> None:
    w, gate = holding_world(tmp_path)
    gate.hold["busy"] = release = asyncio.Event()
    handle = handlers.on_swap_requested(w.swapper)
    busy = asyncio.ensure_future(handle(job(w, subject_id="busy")))
    await eventually(lambda: gate.subjects == ["busy"], timeout=5)
    late = job(w, subject_id="late", priority=9, deadline=NOW - timedelta(minutes=1))
    await asyncio.wait_for(handle(late), 5)  # while the only slot is busy: it did not wait for it
    assert [code for code, _ in w.failed()] == ["deadline_passed"] and w.swapper.admission.waiting() == 0
    assert gate.subjects == ["busy"] and w.job_objects(late.record.job_id) == []
    release.set()
    await busy


async def test_a_job_within_its_deadline_runs(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    await handlers.on_swap_requested(w.swapper)(job(w, deadline=NOW + timedelta(minutes=5), priority=5))
    assert w.failed() == [] and len(w.swap.calls) == 1


async def test_a_deadline_that_passes_while_the_job_waits_for_a_slot_stops_it_at_its_start(tmp_path: Path) -> None:
    w, gate = holding_world(tmp_path)
    now = [NOW]
    w.swapper.ports.clock = lambda: now[0]
    gate.hold["busy"] = release = asyncio.Event()
    handle = handlers.on_swap_requested(w.swapper)
    busy = asyncio.ensure_future(handle(job(w, subject_id="busy")))
    await eventually(lambda: gate.subjects == ["busy"], timeout=5)
    urgent = job(w, subject_id="urgent", priority=9, deadline=NOW + timedelta(seconds=30))
    waiting = asyncio.ensure_future(handle(urgent))
    await eventually(lambda: w.swapper.admission.waiting() == 1, timeout=5)
    now[0] = NOW + timedelta(seconds=31)  # the busy job took longer than the trend could wait
    release.set()
    await asyncio.gather(busy, waiting)
    assert gate.subjects == ["busy"]  # the late job never reached its consent check
    assert [code for code, _ in w.failed()] == ["consent.no_consent", "deadline_passed"]


# ------------------------------------------------------------------------------------ the face by reference


FACE_SHA = hashlib.sha256(FACE_PNG).hexdigest()


class FakeFetch:
    """Stands in for RegistryClient.fetch_image: hands over ``FACE_PNG`` for ("vera", its sha256), or
    raises ``error``; ``calls`` records (subject, sha256, consent checks made before the fetch)."""

    def __init__(self, gate: FakeGate, error: Exception | None = None, data: bytes = FACE_PNG) -> None:
        self.gate, self.error, self.data = gate, error, data
        self.calls: list[tuple[str, str, int]] = []

    def __call__(self, subject: str, sha256: str) -> bytes:
        self.calls.append((subject, sha256, len(self.gate.calls)))
        if self.error is not None:
            raise self.error
        return self.data


def ref_world(tmp_path: Path, *answers: Decision, error: Exception | None = None,
              data: bytes = FACE_PNG) -> tuple[World, FakeFetch]:
    w = make_world(tmp_path, *answers)
    fetch = FakeFetch(w.gate, error, data)
    w.swapper.ports.fetch_image = fetch
    return w, fetch


def ref_job(w: World, subject: str = "vera", sha256: str = FACE_SHA, **overrides: Any) -> Any:
    return job(w, subject_id="vera", source_image_uri=image_ref(subject, sha256), source_image_sha256=FACE_SHA,
               **overrides)


async def test_a_face_named_by_registry_reference_is_fetched_after_the_consent_gate_and_swapped(
    tmp_path: Path,
) -> None:
    w, fetch = ref_world(tmp_path)
    ev = ref_job(w)
    await handlers.on_swap_requested(w.swapper)(ev)
    assert w.failed() == []
    [done] = w.on(SWAP_COMPLETED)
    assert done["source_image_sha256"] == FACE_SHA and done["job_id"] == ev.record.job_id
    assert fetch.calls == [("vera", FACE_SHA, 1)]  # after the local consent check, before the consuming one
    assert ev.record.source_image_uri not in w.store.reads  # not read from the object store
    local, consuming = w.gate.calls
    assert local["image"] is None and consuming["image"] == FACE_PNG and consuming["consume"]
    assert w.swap.calls[0]["shape"] == (8, 8, 3)  # the fetched face went into the swap


async def test_an_object_store_uri_is_read_from_the_store_as_before(tmp_path: Path) -> None:
    w, fetch = ref_world(tmp_path)
    ev = job(w)
    await handlers.on_swap_requested(w.swapper)(ev)
    assert w.failed() == [] and fetch.calls == [] and ev.record.source_image_uri in w.store.reads


async def test_a_consent_denial_fetches_no_face_from_the_registry(tmp_path: Path) -> None:
    w, fetch = ref_world(tmp_path, Decision(False, "revoked", "consent of vera was revoked", 2))
    await handlers.on_swap_requested(w.swapper)(ref_job(w))
    assert [code for code, _ in w.failed()] == ["consent.revoked"] and fetch.calls == []


@pytest.mark.parametrize(("error", "code"), [
    (ImageFetchRefused("403 consent_denied (revoked): consent was revoked", status=403, reason="revoked"),
     "consent.revoked"),
    (ImageFetchRefused("403 consent_denied: not active", status=403, reason=None), "consent.not_active"),
    (ImageFetchRefused("410 erased (erased): the subject was erased", status=410, reason="erased"), "consent.erased"),
    (ImageFetchRefused("404 not_found (unknown_image): no such image", status=404, reason="unknown_image"),
     "source_unavailable"),
    (ImageFetchRefused("409 unreadable (tampered): decrypts to other bytes", status=409, reason="tampered"),
     "source_unavailable"),
    (ImageFetchRejected("answered more than the 10485760-byte image limit"), "source_unavailable"),
], ids=["revoked", "not-active", "erased", "unknown-image", "tampered", "oversized"])
async def test_a_fetch_the_registry_refuses_fails_the_job_with_the_reason(
    tmp_path: Path, error: Exception, code: str
) -> None:
    w, fetch = ref_world(tmp_path, error=error)
    ev = ref_job(w)
    await handlers.on_swap_requested(w.swapper)(ev)  # a decision: announced, not raised, never retried
    [(failed_code, detail)] = w.failed()
    assert failed_code == code
    assert ev.record.source_image_uri in detail and str(error) in detail
    [failed] = w.on(JOB_FAILED)
    assert failed["retryable"] is False and failed["stage"] == "swapper-gpu"
    assert len(fetch.calls) == 1 and not any(c["consume"] for c in w.gate.calls) and w.swap.calls == []
    assert w.job_objects(ev.record.job_id) == []  # the job's template copy goes with it


async def test_a_registry_outage_is_retried_not_failed(tmp_path: Path) -> None:
    w, fetch = ref_world(tmp_path, error=DependencyUnavailable("consent registry", "does not answer"))
    ev = ref_job(w)
    with pytest.raises(DependencyUnavailable):  # transient: the bus retries the message
        await handlers.on_swap_requested(w.swapper)(ev)
    assert w.uow.published == [] and w.uow.done == {} and w.swap.calls == []
    assert w.swapper.admission.running == 0  # the slot was freed for the next job
    fetch.error = None  # the registry is back: the redelivery swaps
    await handlers.on_swap_requested(w.swapper)(ev)
    assert w.failed() == [] and len(w.uow.on(SWAP_COMPLETED)) == 1 and len(fetch.calls) == 2


@pytest.mark.parametrize(("subject", "sha256", "reason", "why"), [
    ("ben", FACE_SHA, "source_other_subject", "names subject ben, not the job's subject vera"),
    ("vera", "0" * 64, "source_unavailable", f"names sha256 {'0' * 64}, not the job's source_image_sha256"),
], ids=["another-subject", "another-image"])
async def test_a_reference_to_another_face_than_the_jobs_fails_it_unfetched(
    tmp_path: Path, subject: str, sha256: str, reason: str, why: str
) -> None:
    w, fetch = ref_world(tmp_path)
    await handlers.on_swap_requested(w.swapper)(ref_job(w, subject, sha256))
    [(code, detail)] = w.failed()
    assert code == reason and why in detail and fetch.calls == [] and w.swap.calls == []


async def test_a_registry_that_hands_over_other_bytes_fails_the_job(tmp_path: Path) -> None:
    w, fetch = ref_world(tmp_path, data=b"another face")  # a fetcher that does not check: the workflow does
    await handlers.on_swap_requested(w.swapper)(ref_job(w))
    [(code, detail)] = w.failed()
    assert code == "source_unavailable" and f"not {FACE_SHA}" in detail and w.swap.calls == []


async def test_a_reference_on_a_swapper_without_a_registry_client_fails_the_job_saying_what_to_set(
    tmp_path: Path,
) -> None:
    w = make_world(tmp_path)  # no fetch_image: no REELFAB_CONSENT_TOKEN
    await handlers.on_swap_requested(w.swapper)(ref_job(w))
    [(code, detail)] = w.failed()
    assert code == "source_unavailable" and "REELFAB_CONSENT_TOKEN" in detail


@pytest.mark.parametrize("uri", [
    "registry://subjects/vera/images/not-a-sha",
    f"REGISTRY://subjects/vera/images/{FACE_SHA}",
    f"registry://subjects/vera/images/{FACE_SHA}?x=1",
], ids=["bad-sha", "upper-case-scheme", "query"])
async def test_a_malformed_registry_reference_is_dead_lettered(tmp_path: Path, uri: str) -> None:
    w, fetch = ref_world(tmp_path)
    w.bus.subscribe(SWAP_EXPEDITED, handlers.on_swap_requested(w.swapper))
    ev = job(w, source_image_uri=uri, priority=5)
    async with w.bus:
        await w.bus.publish(SWAP_EXPEDITED, ev.record)
        await w.bus.wait_idle(5)
    codec = default_codec()
    dead = [m.key for p in w.bus.log.log_for(SWAP_EXPEDITED + ".dlq") for m in p]
    failed = [codec.decode(m.value).value for p in w.bus.log.log_for(JOB_FAILED) for m in p]
    assert dead == [ev.record.job_id.encode()] and fetch.calls == [] and w.swap.calls == []
    assert [(f["job_id"], f["reason_code"]) for f in failed] == [(ev.record.job_id, "dead_lettered.PermanentError")]


async def test_a_negative_priority_is_dead_lettered_with_its_reason(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    w.bus.subscribe(SWAP_EXPEDITED, handlers.on_swap_requested(w.swapper))
    ev = job(w, priority=-5)
    async with w.bus:
        await w.bus.publish(SWAP_EXPEDITED, ev.record)
        await w.bus.wait_idle(5)
    dead = [m for p in w.bus.log.log_for(SWAP_EXPEDITED + ".dlq") for m in p]
    assert [m.key for m in dead] == [ev.record.job_id.encode()]
    assert b"priority -5 is negative" in (dead[0].header("reelfab.error.message") or b"")
    assert w.gate.calls == [] and w.swap.calls == []
