"""The demo's page in a real browser: Debian's headless Chromium (selenium through Debian's chromedriver, the
review page's fixtures) opens index.html from disk (file://, no server), shows one player per video and
plays each (real H.264 MP4s made with ffmpeg), loads every poster, and opens a card's lineage in its
dialog; the console stays free of errors. A screenshot lands in .reelfab/test-artifacts/demo-page.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec

from reelfab.devtools.demo.page import write_page
from tests.integration.test_review_page_browser import (
    ARTIFACTS,
    browser,  # noqa: F401  (a fixture, with the chromium fixture it needs)
    chromium,  # noqa: F401
    make_mp4,
    play_video,
    save_screenshot,
    wait,
)
from tests.unit.test_demo_page import HOSTILE_NAME, demo_report

pytestmark = pytest.mark.timeout(900)  # a fresh machine installs chromium first (apt-get)


def play(driver: WebDriver, video: WebElement) -> dict[str, Any]:
    """play_video on one of the page's players: it drives the element with id "player", so the page's
    video under test takes that id for the while."""
    driver.execute_script(
        "for (const v of document.querySelectorAll('#player')) v.removeAttribute('id');"
        "arguments[0].id = 'player';",
        video,
    )
    try:
        return play_video(driver)
    finally:
        driver.execute_script("arguments[0].pause(); arguments[0].removeAttribute('id');", video)


def test_the_demo_page_opens_from_disk_plays_every_video_and_shows_a_lineage(
    browser: webdriver.Chrome,  # noqa: F811
    tmp_path: Path,
) -> None:
    out_dir = tmp_path / "demo"
    report = demo_report(out_dir, make_video=make_mp4)  # 540x960 H.264/AAC, as the post-producer renders
    page = write_page(report, out_dir)

    browser.get(page.as_uri())
    wait(browser).until(lambda d: d.execute_script("return document.readyState") == "complete")
    videos = browser.find_elements(By.TAG_NAME, "video")
    assert len(videos) == len(report["videos"])
    posters = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all([...document.querySelectorAll('video')].map((v) => new Promise((ok) => {"
        "  const img = new Image(); img.onload = () => ok(img.naturalWidth); img.onerror = () => ok(0);"
        "  img.src = v.poster; }))).then(done);"
    )
    assert posters == [54, 270, 270], posters  # job_a's own thumbnail, then the two the page made
    save_screenshot(browser, tmp_path / "demo-page.png")

    for video, entry in zip(videos, report["videos"], strict=True):
        assert video.get_attribute("src") == (out_dir / entry["file"]).as_uri()
        playback = play(browser, video)
        assert playback["readyState"] >= 2 and playback["videoWidth"] == 540, (entry["job_id"], playback)

    # a card's lineage button opens the dialog with that job's lineage
    for job in ("job_b", "job_a"):
        lineage = next(v["lineage"] for v in report["videos"] if v["job_id"] == job)
        browser.find_element(By.CSS_SELECTOR, f'.card[data-job="{job}"] button.lineage').click()
        wait(browser).until(ec.visibility_of_element_located((By.ID, "details")))
        details = browser.find_element(By.ID, "details").text
        assert lineage["subject_id"] in details and lineage["final_sha256"] in details, details
        assert browser.find_element(By.ID, "details-title").text == f"{lineage['display_name']} · {job}"
        browser.find_element(By.ID, "details-close").click()
        wait(browser).until(ec.invisibility_of_element_located((By.ID, "details")))
    assert HOSTILE_NAME in browser.find_element(By.CSS_SELECTOR, '.card[data-job="job_a"] .name').text

    # clicking the card itself opens it too
    browser.find_element(By.CSS_SELECTOR, '.card[data-job="job_c"] .name').click()
    wait(browser).until(ec.visibility_of_element_located((By.ID, "details")))
    assert "job_c-final-" in browser.find_element(By.ID, "details").text

    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018  (no hostile string ran as a script)
    severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == [], severe
    assert (ARTIFACTS / "demo-page.png").stat().st_size > 10_000
