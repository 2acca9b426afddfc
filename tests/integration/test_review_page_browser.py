"""The review page in a real browser: Debian's headless Chromium (driven by selenium through Debian's
chromedriver) logs in, finds the waiting video in the queue, plays it (a real H.264 MP4 made with ffmpeg),
chooses the account and the privacy level, consents and approves; the desk records the approval with the
operator's name. A screenshot of the job page lands in .reelfab/test-artifacts/review-page.png.

No Kafka or PostgreSQL: the page is served by uvicorn in a thread over the in-memory desk."""

from __future__ import annotations

import base64
import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from reelfab.media.tools import tool
from reelfab_publisher.web import review_app
from tests.review_page_support import FakeDesk, make_item

pytestmark = pytest.mark.timeout(900)  # a fresh machine installs chromium first (apt-get)

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / ".reelfab" / "test-artifacts"
SECRET = b"browser-test-secret-0123456789abcdef"
JOB = "job_browser_1"
WAIT_S = 30.0


def make_mp4(path: Path, seconds: float = 3.0) -> Path:
    """A short vertical H.264/AAC MP4, as the post-producer renders (540x960, 25 fps, yuv420p)."""
    subprocess.run(
        [tool("ffmpeg"), "-v", "error", "-y",
         "-f", "lavfi", "-i", "testsrc=size=540x960:rate=25", "-f", "lavfi", "-i", "sine=frequency=440",
         "-t", str(seconds), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-profile:v", "high",
         "-c:a", "aac", "-movflags", "+faststart", str(path)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return path


@contextlib.contextmanager
def served(app: Any) -> Iterator[str]:
    """uvicorn on a free port of 127.0.0.1 in a background thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=5
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="review-page", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + WAIT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise AssertionError("uvicorn did not start serving the review page")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@pytest.fixture(scope="module")
def chromium() -> tuple[Path, Path]:
    from reelfab.devtools.browser import ensure_chromium

    return ensure_chromium(say=print)  # installs Debian's chromium and chromium-driver where missing (root)


@pytest.fixture
def browser(chromium: tuple[Path, Path], tmp_path: Path) -> Iterator[webdriver.Chrome]:
    binary, driver_path = chromium
    options = webdriver.ChromeOptions()
    options.binary_location = str(binary)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1280,1800",
        "--autoplay-policy=no-user-gesture-required",
        "--mute-audio",
        "--no-first-run",
        "--no-default-browser-check",
    ):
        options.add_argument(arg)
    service = Service(executable_path=str(driver_path), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1)


def save_screenshot(driver: webdriver.Chrome, shot: Path) -> Path:
    """The whole page (Chromium's DevTools capture beyond the viewport) into ``shot`` and the artefacts."""
    driver.execute_script("window.scrollTo(0, 0)")
    try:
        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )["data"]
        shot.write_bytes(base64.b64decode(data))
    except (KeyError, WebDriverException):
        driver.save_screenshot(str(shot))  # the viewport only
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / shot.name)
    return shot


def play_video(driver: WebDriver) -> dict[str, Any]:
    """Start the player (muted) and wait until it has decoded frames and its clock moves."""
    support = driver.execute_script(
        "const v = document.getElementById('player');"
        "return {h264: v.canPlayType('video/mp4; codecs=\"avc1.640028, mp4a.40.2\"'),"
        "        mp4: v.canPlayType('video/mp4')};"
    )
    started = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const v = document.getElementById('player');"
        "v.muted = true;"
        "v.play().then(() => done({ok: true}),"
        "  (e) => done({ok: false, error: String(e), code: v.error ? v.error.code : null,"
        "               message: v.error ? v.error.message : null}));"
    )
    assert started["ok"], (
        f"the review page's player did not play the H.264 MP4 in Debian's chromium: {started}; "
        f"canPlayType: {support}"
    )
    state = "const v = document.getElementById('player'); return [v.readyState, v.currentTime, v.videoWidth];"
    wait(driver).until(lambda d: d.execute_script(state)[0] >= 2 and d.execute_script(state)[1] > 0.2)
    first = driver.execute_script(state)
    wait(driver).until(lambda d: d.execute_script(state)[1] > first[1] + 0.3)
    ready, current, width = driver.execute_script(state)
    return {"readyState": ready, "currentTime": current, "videoWidth": width, "canPlayType": support}


def test_an_operator_watches_and_approves_a_video_in_chromium(
    browser: webdriver.Chrome, tmp_path: Path
) -> None:
    desk = FakeDesk()
    video = make_mp4(tmp_path / "final.mp4")
    desk.add(make_item(JOB, title="Ada dances <b>in the rain</b>", hashtags=("dance", "rain")), video)

    with served(review_app(desk, secret=SECRET, base_path="/review")) as url:
        # the queue needs a session: the browser lands on the login page
        browser.get(f"{url}/review/")
        wait(browser).until(ec.presence_of_element_located((By.ID, "token")))
        browser.find_element(By.ID, "token").send_keys("tok-alice")
        browser.find_element(By.ID, "login").click()
        wait(browser).until(ec.presence_of_element_located((By.ID, "waiting")))
        assert browser.find_element(By.ID, "operator").text == "alice"

        row = browser.find_element(By.CSS_SELECTOR, f'#waiting tr[data-job="{JOB}"]')
        assert "Ada dances <b>in the rain</b>" in row.text  # shown as typed, not as markup
        row.find_element(By.LINK_TEXT, JOB).click()
        wait(browser).until(ec.presence_of_element_located((By.ID, "player")))
        assert browser.find_element(By.ID, "job-id").text == JOB

        playback = play_video(browser)
        assert playback["readyState"] >= 2 and playback["videoWidth"] == 540, playback

        # nothing chosen: the privacy select waits for an account and the approve button cannot submit
        privacy = Select(browser.find_element(By.ID, "privacy_level"))
        assert not browser.find_element(By.ID, "privacy_level").is_enabled()
        assert privacy.first_selected_option.get_attribute("value") == ""
        browser.find_element(By.ID, "approve").click()
        time.sleep(0.5)
        assert browser.current_url.endswith(f"/review/jobs/{JOB}") and desk.approvals == []

        account = Select(browser.find_element(By.ID, "account"))
        disabled = [o.get_attribute("value") for o in account.options if not o.is_enabled()]
        assert "broken" in disabled  # an account with a problem cannot be chosen
        account.select_by_value("main")
        wait(browser).until(lambda d: d.find_element(By.ID, "privacy_level").is_enabled())
        offered = [
            o.get_attribute("value") for o in privacy.options if o.is_enabled() and o.get_attribute("value")
        ]
        assert offered == ["PUBLIC_TO_EVERYONE", "FOLLOWER_OF_CREATOR", "SELF_ONLY"]  # main's own options
        comments = browser.find_element(By.ID, "disable_comment")
        assert comments.is_selected() and not comments.is_enabled()  # the creator turned comments off
        privacy.select_by_value("FOLLOWER_OF_CREATOR")

        title = browser.find_element(By.ID, "title")
        title.clear()
        title.send_keys("Ada dances in the rain, approved")
        assert browser.find_element(By.ID, "title-count").text == str(len("Ada dances in the rain, approved"))
        hashtags = browser.find_element(By.ID, "hashtags")
        hashtags.clear()
        hashtags.send_keys("#dance, rain #ai")

        save_screenshot(browser, tmp_path / "review-page.png")

        browser.find_element(By.ID, "consent").click()
        browser.find_element(By.ID, "approve").click()
        wait(browser).until(ec.presence_of_element_located((By.ID, "flash")))
        assert f"Approved {JOB}" in browser.find_element(By.ID, "flash").text
        assert browser.find_elements(By.CSS_SELECTOR, f'#waiting tr[data-job="{JOB}"]') == []
        assert browser.find_element(By.ID, "waiting-empty").text == "Nothing is waiting for review."

    [(job_id, approval, actor)] = desk.approvals
    assert (job_id, actor) == (JOB, "alice")
    assert approval.account == "main" and approval.privacy_level == "FOLLOWER_OF_CREATOR"
    assert approval.title == "Ada dances in the rain, approved"
    assert approval.hashtags == ("dance", "rain", "ai")
    assert approval.disable_comment is True and approval.disable_duet is False
    assert (ARTIFACTS / "review-page.png").stat().st_size > 10_000
