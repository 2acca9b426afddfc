"""The demo's parts that decide without a broker: the output folder it may empty, its options, how it
follows a job from the bus, the stage timings it reports and the checks it makes of them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reelfab.devtools.demo import MARKER, DemoOptions, DemoRefused, prepare_out, run_demo
from reelfab.devtools.demo.report import _checks, stage_timings
from reelfab.devtools.demo.scenario import Timeline
from reelfab.devtools.demo.tracker import Tracker
from reelfab.settings import Settings

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_folder_the_demo_did_not_make_is_never_emptied(tmp_path: Path) -> None:
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(DemoRefused, match="not made by the demo"):
        prepare_out(mine)
    assert (mine / "holiday.jpg").read_bytes() == b"precious"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(DemoRefused, match="not a folder"):
        prepare_out(a_file)


def test_an_earlier_demos_folder_is_emptied_and_marked_again(tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    prepare_out(out)
    (out / "videos").mkdir()
    (out / "videos" / "old.mp4").write_bytes(b"old run")
    prepare_out(out)
    assert sorted(p.name for p in out.iterdir()) == [MARKER]


@pytest.mark.parametrize(("options", "named"), [
    (DemoOptions(backend="magic"), "--backend"),
    (DemoOptions(publish_to="youtube"), "--publish-to"),
    (DemoOptions(publish_to="tiktok"), "--account"),
    (DemoOptions(rounds=0), "--rounds"),
    (DemoOptions(people=1), "--people"),
    (DemoOptions(people=99), "--people must be 2 to 8"),
    (DemoOptions(templates=0), "--templates must be 1 to 6"),
    (DemoOptions(templates=7), "--templates"),
    (DemoOptions(batch=0), "--batch"),
])
def test_options_out_of_range_are_refused_naming_the_option(options: DemoOptions, named: str) -> None:
    with pytest.raises(DemoRefused, match=named):
        options.check()
    DemoOptions().check()  # the defaults pass


@pytest.mark.parametrize("options", [{"people": 99}, {"templates": 0}, {"rounds": 0}, {"backend": "magic"}])
def test_refused_options_leave_an_earlier_runs_output_alone(tmp_path: Path, options: dict[str, Any]) -> None:
    out = tmp_path / "demo-out"
    out.mkdir()
    (out / MARKER).write_text("made by the demo")
    (out / "report.json").write_text("{}")
    with pytest.raises(DemoRefused):
        asyncio.run(run_demo(Settings(), DemoOptions(out=out, **options), view=None))
    assert (out / "report.json").read_text() == "{}"  # refused before the folder was emptied


def request(job_id: str, **extra: Any) -> dict[str, Any]:
    return {"job_id": job_id, "subject_id": "demo-ada", "occurred_at": at(0), "template_id": "t1",
            "template_sha256": "a" * 64, "priority": 0, **extra}


def test_a_job_is_followed_through_its_stages_and_other_runs_jobs_are_left_out() -> None:
    tracker = Tracker(round=2)
    tracker.take("reelfab.swap.requested.v1", request("j1"))
    job = tracker.jobs["j1"]
    assert (job.stage, job.round, job.done) == ("queued", 2, False)
    job.frames = (10, 150)
    assert job.stage == "swapping"
    tracker.take("reelfab.swap.completed.v1", {"job_id": "j1", "occurred_at": at(10), "frames": 150, "fps": 25.0})
    assert job.stage == "rendering" and job.frames is None
    tracker.take("reelfab.render.completed.v1", {"job_id": "j1", "occurred_at": at(20)})
    assert job.stage == "in review"
    job.approved_at = at(21)
    assert job.stage == "publishing"
    tracker.take("reelfab.publish.completed.v1", {"job_id": "j1", "occurred_at": at(23)})
    assert job.stage == "published" and job.done
    tracker.take("reelfab.engagement.observed.v1", {"job_id": "old-run-job", "views": 10})
    assert set(tracker.jobs) == {"j1"} and tracker.engagement_seen == 0
    tracker.take("reelfab.swap.requested.v1", request("j2"))
    tracker.take("reelfab.job.failed.v1", {"job_id": "j2", "reason_code": "consent.revoked"})
    assert tracker.jobs["j2"].stage == "stopped" and tracker.counts()["stopped"] == 1


def test_stage_timings_are_consecutive_and_add_up_to_the_total() -> None:
    tracker = Tracker(round=1)
    tracker.take("reelfab.swap.requested.v1", request("j1"))
    tracker.take("reelfab.swap.completed.v1", {"job_id": "j1", "occurred_at": at(10), "frames": 150, "fps": 25.0})
    tracker.take("reelfab.render.completed.v1", {"job_id": "j1", "occurred_at": at(22.5)})
    tracker.take("reelfab.publish.completed.v1", {"job_id": "j1", "occurred_at": at(26)})
    timings = stage_timings(tracker.jobs["j1"], at(24))
    assert timings["stages"] == [{"stage": "queue", "seconds": 4.0}, {"stage": "swap", "seconds": 6.0},
                                 {"stage": "render", "seconds": 12.5}, {"stage": "review", "seconds": 1.5},
                                 {"stage": "publish", "seconds": 2.0}]
    assert timings["total_s"] == 26.0
    # an approval time outside the render..post window (clocks apart) is clamped: still adds up
    odd = stage_timings(tracker.jobs["j1"], at(99))
    assert sum(s["seconds"] for s in odd["stages"]) == pytest.approx(odd["total_s"])


def video(job_id: str, subject: str, published: datetime, **identity: Any) -> dict[str, Any]:
    return {"job_id": job_id, "spec_check": {"passed": True}, "c2pa": {"valid": True, "ai_generated": True},
            "lineage": {"subject_id": subject}, "post": {"published_at": published.isoformat()},
            "identity": {"shows_revoked": False, "shows_unconsented": False, **identity},
            "timings": {"stages": [{"stage": "swap", "seconds": 1.0}], "total_s": 1.0}}


def test_the_checks_catch_a_revoked_face_posted_after_the_revocation_by_identity_too() -> None:
    timeline = Timeline(revoked=("demo-bo", at(100)))
    videos = [video("before", "demo-bo", at(50)), video("after-by-lineage", "demo-bo", at(150)),
              video("after-by-face", "demo-ada", at(160), shows_revoked=True),
              video("stranger", "demo-ada", at(170), shows_unconsented=True), video("fine", "demo-ada", at(180))]
    problems: list[str] = []
    checks = _checks(videos, timeline, problems)
    assert checks["revoked_face_after_revocation"] == 2 and checks["unconsented_face"] == 1
    assert sum("after-by" in p for p in problems) == 2 and not any(p.startswith("before") for p in problems)


def test_the_checks_catch_a_failed_spec_missing_ai_credentials_and_timings_that_do_not_add_up() -> None:
    bad = video("bad", "demo-ada", at(1))
    bad["spec_check"] = {"passed": False, "problems": ["width 1078"]}
    bad["c2pa"] = {"valid": True, "ai_generated": False}
    bad["timings"] = {"stages": [{"stage": "swap", "seconds": 1.0}], "total_s": 3.0}
    problems: list[str] = []
    checks = _checks([bad], Timeline(), problems)
    assert checks["spec_passed"] == 0 and checks["c2pa_valid"] == 0 and checks["timings_add_up"] is False
    assert len(problems) == 3
    nothing: list[str] = []
    _checks([], Timeline(), nothing)
    assert nothing == ["no video was posted (the log file says why)"]  # an empty run is no success


def test_a_backend_that_cannot_swap_here_is_refused_before_anything_starts(tmp_path: Path) -> None:
    from reelfab.devtools.demo.scenario import check_backend
    from reelfab.settings import Settings

    settings = Settings(state_dir=tmp_path, models_dir=tmp_path / "models", facefusion_home=None)
    with pytest.raises(DemoRefused, match=r"--backend onnx: no model installed .*reelfab models pull"):
        check_backend(settings, "onnx")
    with pytest.raises(DemoRefused, match="--backend facefusion: .*REELFAB_FACEFUSION_HOME"):
        check_backend(settings, "facefusion")
    check_backend(settings, "classical")  # needs nothing downloaded


def test_the_person_revoked_has_work_in_flight_but_is_never_the_only_one_with_work() -> None:
    from reelfab.devtools.demo.cast import Cast, Person
    from reelfab.devtools.demo.scenario import pick_revoked

    ada, bo, cy = (Person(f"demo-{n}", n, Path(f"{n}.png"), None, r) for n, r in (("ada", 0.3), ("bo", 0.1), ("cy", 0.05)))
    cast = Cast([ada, bo, cy], Person("demo-nico", "Nico", Path("n.png"), None, None), [], [], {})
    tracker = Tracker(round=1)
    for job_id, subject in (("j1", "demo-ada"), ("j2", "demo-ada"), ("j3", "demo-bo")):
        tracker.take("reelfab.swap.requested.v1", request(job_id, subject_id=subject))
    assert pick_revoked(cast, tracker, 1) is bo  # the least engaging with work in flight (cy has none)
    tracker.take("reelfab.job.failed.v1", {"job_id": "j3"})
    # only Ada has work now: revoking her would leave the demo nothing to post; the least engaging instead
    assert pick_revoked(cast, tracker, 1) is cy


def test_whether_the_revoked_person_had_work_in_flight_is_told() -> None:
    from reelfab.devtools.demo.cast import Person
    from reelfab.devtools.demo.scenario import has_work_in_flight

    ada, bo = (Person(f"demo-{n}", n, Path(f"{n}.png"), None, 0.1) for n in ("ada", "bo"))
    tracker = Tracker(round=1)
    tracker.take("reelfab.swap.requested.v1", request("j1", subject_id="demo-ada"))
    assert has_work_in_flight(tracker, 1, ada) and not has_work_in_flight(tracker, 1, bo)
    tracker.take("reelfab.job.failed.v1", {"job_id": "j1"})
    assert not has_work_in_flight(tracker, 1, ada)
