"""`reelfab demo`, reduced (1 round, 2 people, 1 template), run twice into the same folder as a user runs
`make demo` twice, over the tests' real Kafka and PostgreSQL: both runs exit 0 with equally clean
output (no log line, no JSON, no warning on the terminal), each leaves videos that pass the platform
spec and carry valid C2PA credentials declaring AI-generated content, a denied job for the person with
no consent, a revocation after which nothing with that face (by identity embedding) is posted, stage
timings that add up, and a page that opens in headless Chromium with one playable video per video."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.integration.test_demo_page_browser import play
from tests.integration.test_review_page_browser import (
    browser,  # noqa: F401  (a fixture, with the chromium fixture it needs)
    chromium,  # noqa: F401
    save_screenshot,
    wait,
)

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.timeout(1500)]
REDUCED = ["--people", "2", "--templates", "1", "--rounds", "1", "--batch", "2"]
NOISE = ("Traceback", "WARNING", "ERROR", '{"', "Exception", "refused")


def run_demo(out: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    reelfab = Path(sys.executable).parent / "reelfab"
    done = subprocess.run([str(reelfab), "demo", *REDUCED, "--out", str(out)], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, f"demo failed:\n{done.stdout}\n{done.stderr}\n" + (
        (out / "demo.log").read_text()[-4000:] if (out / "demo.log").exists() else "")
    return done, json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def runs(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> list[tuple[subprocess.CompletedProcess[str], dict[str, Any]]]:
    out = tmp_path_factory.mktemp("demo") / "demo-out"
    first = run_demo(out)
    first_videos = {v["job_id"] for v in first[1]["videos"]}
    second = run_demo(out)  # the same folder: emptied and made again
    assert not first_videos & {p.stem for p in (out / "videos").glob("*.mp4")}, "the first run's videos were left"
    return [first, second]


def test_both_runs_say_only_what_the_demo_says(runs: list[tuple[subprocess.CompletedProcess[str], dict[str, Any]]]) -> None:
    for done, _report in runs:
        for line in (done.stdout + done.stderr).splitlines():
            assert not any(word in line for word in NOISE), f"noise on the terminal: {line}"
        assert "denied" in done.stdout and "revoked consent" in done.stdout and "expedited" in done.stdout
        # consent events other tests signed with throwaway keys sit on the tests' consent topic: one line
        assert done.stdout.count("could not be verified") <= 1
    first, second = (sorted(_shape(done.stdout)) for done, _ in runs)
    assert first == second  # the second run reads like the first: the same kinds of line, no more


def _shape(stdout: str) -> list[str]:
    """Each line's leading words, numbers and names masked (ids, counts, times and who the planner or
    the revocation picked differ between runs)."""
    lines = [re.sub(r"Virtual \w+", "Virtual X", re.sub(r"\d+", "#", line)) for line in stdout.splitlines()]
    return [" ".join(line.split()[:2]) for line in lines if line.startswith("·")]


@pytest.mark.parametrize("run", [0, 1], ids=["first", "second"])
def test_every_posted_video_passes_the_spec_and_carries_ai_credentials(
    runs: list[tuple[subprocess.CompletedProcess[str], dict[str, Any]]], run: int
) -> None:
    report = runs[run][1]
    assert report["checks"]["problems"] == []
    assert report["videos"], "nothing was posted"
    for video in report["videos"]:
        assert video["spec_check"]["passed"] and (video["spec_check"]["width"], video["spec_check"]["height"]) == (1080, 1920)
        assert video["c2pa"]["valid"] and video["c2pa"]["ai_generated"]
        assert video["post"]["dry_run"] and video["post"]["approved_by"] == "demo-operator"
        stages = video["timings"]["stages"]
        assert [s["stage"] for s in stages] == ["queue", "swap", "render", "review", "publish"]
        assert all(s["seconds"] >= 0 for s in stages)
        assert math.isclose(sum(s["seconds"] for s in stages), video["timings"]["total_s"], abs_tol=0.01)


@pytest.mark.parametrize("run", [0, 1], ids=["first", "second"])
def test_consent_holds_the_unconsented_is_denied_and_the_revoked_face_is_not_posted_after(
    runs: list[tuple[subprocess.CompletedProcess[str], dict[str, Any]]], run: int
) -> None:
    report = runs[run][1]
    stranger = next(p for p in report["people"] if p["consent"] == "none")
    revoked = next(p for p in report["people"] if p["consent"] == "revoked")
    denied = [j for j in report["not_published"] if j["subject_id"] == stranger["subject_id"]]
    assert denied and denied[0]["reason_code"].startswith("consent.")
    kinds = [(e["kind"], e["subject_id"]) for e in report["consent_timeline"]]
    assert ("revoked", revoked["subject_id"]) in kinds and ("denied", stranger["subject_id"]) in kinds
    revoked_at = next(e["at"] for e in report["consent_timeline"]
                      if (e["kind"], e["subject_id"]) == ("revoked", revoked["subject_id"]))
    for video in report["videos"]:
        assert video["lineage"]["subject_id"] != stranger["subject_id"]
        assert not video["identity"]["shows_unconsented"]
        if datetime.fromisoformat(video["post"]["published_at"]) > datetime.fromisoformat(revoked_at):
            assert video["lineage"]["subject_id"] != revoked["subject_id"]
            assert not video["identity"]["shows_revoked"], f"{video['job_id']} shows the revoked face"
        # the identity check finds the face the lineage names (a positive control: it could see a revoked one)
        assert video["identity"]["shows_subject"], f"{video['job_id']}: its own subject's face was not found"
    for item in report["taken_down"]:  # posted before the revocation: the post and the media went with it
        assert item["subject_id"] == revoked["subject_id"] and item["published_at"] < item["revoked_at"]
        assert item["post_removed"] is True and item["media_deleted"] is True
        assert not any(v["job_id"] == item["job_id"] for v in report["videos"])
    assert report["trend"] and report["trend"]["jobs"]
    assert len(report["leaderboard"]) == 2  # before the first round and after it


def test_the_page_opens_in_chromium_with_one_playable_video_per_posted_video(
    runs: list[tuple[subprocess.CompletedProcess[str], dict[str, Any]]],
    browser: webdriver.Chrome,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    _done, report = runs[-1]
    page = next(tmp_path_factory.getbasetemp().glob("demo*/demo-out/index.html"))
    browser.get(page.as_uri())
    wait(browser).until(lambda d: d.execute_script("return document.readyState") == "complete")
    videos = browser.find_elements(By.TAG_NAME, "video")
    assert len(videos) == len(report["videos"])
    assert sorted(v.get_attribute("src").rsplit("/", 1)[-1] for v in videos) == \
        sorted(Path(v["file"]).name for v in report["videos"])
    state = play(browser, videos[0])
    assert state["readyState"] >= 2
    shot = save_screenshot(browser, tmp_path_factory.mktemp("shots") / "demo-run-page.png")  # and into ARTIFACTS
    assert shot.stat().st_size > 20_000  # a page, not a blank
    severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == []
