"""The demo's static page (reelfab.devtools.demo.page): written from a report with three real (tiny) MP4s,
two of them without a thumbnail yet, and read back with the stdlib's HTML parser: one player per video
with a poster on disk, hostile names shown as text, nothing fetched from the web, one chart line per arm,
one timeline entry per consent event, stage bars that add up, and a run without videos still renders.

``demo_report`` is shared with tests/integration/test_demo_page_browser.py."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from reelfab.devtools.demo.page import PageError, write_page
from reelfab.media.tools import tool

HOSTILE_NAME = "<script>alert(1)</script>"
HOSTILE_CAPTION = "</script><script>alert(2)</script>"
HOSTILE_TEMPLATE = '"><img src=x onerror=alert(3)>'
STARTED = "2026-03-01T09:00:00Z"
STAGES = ("swap_queue", "swap", "render", "review", "publish")


def tiny_mp4(path: Path) -> Path:
    """Two seconds of ffmpeg's test pattern, 108x192 H.264 (no audio)."""
    subprocess.run(
        [tool("ffmpeg"), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=108x192:rate=25",
         "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return path


def _video(
    job: str, subject: str, name: str, round_: int, seconds: tuple[float, ...], **extra: Any
) -> dict[str, Any]:
    stages = [{"stage": stage, "seconds": s} for stage, s in zip(STAGES, seconds, strict=True)]
    lineage = {
        "subject_id": subject, "display_name": name, "consent_version": 1, "template_id": "tpl-dance",
        "template_sha256": "ab" * 32, "music_id": "bed-1", "caption_style": "bold", "caption_text": "hi",
        "swapper_model": "classical-v1", "backend": "classical", "model_license": "MIT",
        "source_image_sha256": "cd" * 32, "final_sha256": f"{job}-final-" + "ef" * 24,
        "arm_id": "template:tpl-dance", "plan_id": "plan-1",
    }  # fmt: skip
    lineage.update(extra.pop("lineage", {}))
    return {
        "job_id": job, "file": f"videos/{job}.mp4", "thumbnail": f"videos/{job}.jpg", "round": round_,
        "trigger": "plan", "priority": 5, "trend_id": None, "lineage": lineage,
        "spec_check": {"passed": True, "width": 108, "height": 192, "fps": 25.0, "video_codec": "h264",
                       "audio_codec": "aac", "duration_s": 2.0, "problems": []},
        "c2pa": {"valid": True, "label": "c2pa.ai_generated", "ai_generated": True, "problems": []},
        "identity": {"nearest": subject, "distance": 0.31, "frames_with_face": 48},
        "post": {"post_id": f"post-{job}", "account": "demo", "privacy_level": "SELF_ONLY",
                 "published_at": "2026-03-01T09:01:00Z", "dry_run": True,
                 "engagement": {"views": 120, "likes": 9, "comments": 1, "shares": 2, "completion_rate": 0.4}},
        "timings": {"stages": stages, "total_s": round(sum(seconds), 3)},
        **extra,
    }  # fmt: skip


def demo_report(out_dir: Path, make_video: Callable[[Path], Path] = tiny_mp4) -> dict[str, Any]:
    """A report as `reelfab demo` leaves it, with its videos (and the first one's thumbnail) in ``out_dir``."""
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    (out_dir / "assets" / "people").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_dir / "assets" / "people" / "ada.png"), np.full((32, 32, 3), 200, np.uint8))
    videos = [
        _video("job_a", "ada", HOSTILE_NAME, 1, (0.5, 3.0, 1.5, 0.2, 0.3)),
        _video("job_b", "bob", "Bob", 2, (0.25, 2.0, 1.0, 0.5, 0.25), trigger="trend", trend_id="tr-1",
               lineage={"caption_text": HOSTILE_CAPTION}),
        _video("job_c", "ada", HOSTILE_NAME, 2, (1.0, 1.0, 1.0, 0.0, 0.0),
               lineage={"template_id": HOSTILE_TEMPLATE}),
    ]  # fmt: skip
    for video in videos:
        make_video(out_dir / video["file"])
    # job_a comes with a thumbnail of its own (54 px wide): the page keeps it
    subprocess.run(
        [tool("ffmpeg"), "-v", "error", "-y", "-i", str(out_dir / videos[0]["file"]), "-frames:v", "1",
         "-vf", "scale=54:-2", "-update", "1", str(out_dir / videos[0]["thumbnail"])],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    arm = lambda arm_id, mean, posts: {  # noqa: E731
        "arm_id": arm_id, "space": arm_id.split(":")[0], "label": arm_id.split(":")[1], "mean": mean,
        "low": mean - 0.01, "high": mean + 0.01, "posts": posts}  # fmt: skip
    return {
        "demo": {"started_at": STARTED, "finished_at": "2026-03-01T09:01:40Z", "seconds": 100.0,
                 "backend": "classical", "bus": "embedded", "publish_to": "dryrun", "account": "demo",
                 "rounds": 3, "people": 4, "templates": 1, "version": "0.1.0"},
        "people": [
            {"subject_id": "ada", "display_name": HOSTILE_NAME, "image": "assets/people/ada.png",
             "consent": "granted", "true_rate": 0.06},
            {"subject_id": "bob", "display_name": "Bob", "image": "assets/people/bob.png", "consent": "granted",
             "true_rate": 0.03},
            {"subject_id": "cleo", "display_name": "Cleo", "image": None, "consent": "revoked", "true_rate": None},
            {"subject_id": "dan", "display_name": "Dan", "image": None, "consent": "none", "true_rate": None},
        ],
        "templates": [{"template_id": "tpl-dance", "tags": ["dance"], "file": "assets/templates/d.mp4",
                       "duration_s": 8.0}],
        "music": [{"music_id": "bed-1", "file": "assets/music/bed-1.m4a"}],
        "videos": videos,
        "not_published": [
            {"job_id": "job_d", "subject_id": "dan", "stage": "swap", "reason_code": "no_consent",
             "reason": "no consent lease for dan", "round": 1},
            {"job_id": "job_e", "subject_id": "cleo", "stage": "publish", "reason_code": "revoked",
             "reason": "consent revoked <before> posting", "round": None},
        ],
        "leaderboard": [
            {"round": 1, "at": "2026-03-01T09:00:30Z",
             "arms": [arm("subject:ada", 0.05, 1), arm("subject:bob", 0.02, 1)]},
            {"round": 2, "at": "2026-03-01T09:01:00Z",
             "arms": [arm("subject:ada", 0.06, 2), arm("subject:bob", 0.03, 2), arm("style:bold", 0.04, 1)]},
            {"round": 3, "at": "2026-03-01T09:01:30Z",
             "arms": [arm("subject:ada", 0.07, 3), arm("subject:bob", 0.02, 3), arm("style:bold", 0.05, 2)]},
        ],
        "consent_timeline": [  # not in time order: the page sorts them
            {"at": "2026-03-01T09:00:30.5Z", "kind": "revoked", "subject_id": "cleo", "detail": "by the subject"},
            {"at": "2026-03-01T09:00:01Z", "kind": "granted", "subject_id": "ada", "detail": "v1"},
            {"at": "2026-03-01T09:00:02Z", "kind": "granted", "subject_id": "bob", "detail": "v1"},
            {"at": "2026-03-01T09:00:03Z", "kind": "granted", "subject_id": "cleo", "detail": "v1"},
            {"at": "2026-03-01T09:00:40Z", "kind": "denied", "subject_id": "dan", "detail": "no lease"},
        ],
        "trend": {"trend_id": "tr-1", "title": "Rainy dance", "tags": ["dance"], "at": "2026-03-01T09:00:50Z",
                  "jobs": ["job_b"]},
        "checks": {"videos": 3, "spec_passed": 3, "c2pa_valid": 3, "revoked_face_after_revocation": 0,
                   "unconsented_face": 0, "timings_add_up": True, "problems": []},
    }  # fmt: skip


# --- a small DOM from the stdlib's parser ----------------------------------------------------------------

VOID = {"meta", "link", "img", "br", "hr", "input", "source", "area", "base", "col", "embed", "track", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    parent: Node | None = None
    children: list[Node | str] = field(default_factory=list)

    def walk(self) -> Iterator[Node]:
        for child in self.children:
            if isinstance(child, Node):
                yield child
                yield from child.walk()

    def all(self, tag: str | None = None, cls: str | None = None) -> list[Node]:
        return [
            n for n in self.walk()
            if (tag is None or n.tag == tag) and (cls is None or cls in n.attrs.get("class", "").split())
        ]  # fmt: skip

    def by_id(self, id_: str) -> Node:
        [node] = [n for n in self.walk() if n.attrs.get("id") == id_]
        return node

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = self.current = Node("#document", {})

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.current.children.append(Node(tag, {k: v or "" for k, v in attrs}, self.current))

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        assert node is not None and node.parent is not None, f"</{tag}> closes nothing that is open"
        self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.children.append(data)


def parse(html: str) -> Node:
    builder = _Builder()
    builder.feed(html)
    builder.close()
    return builder.root


@dataclass
class Written:
    report: dict[str, Any]
    out_dir: Path
    html: str
    dom: Node


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Written:
    out_dir = tmp_path_factory.mktemp("demo")
    report = demo_report(out_dir)
    before = copy.deepcopy(report)
    page = write_page(report, out_dir)
    assert page == out_dir / "index.html"
    assert report == before, "write_page changed the report it was given"
    html = page.read_text(encoding="utf-8")
    return Written(report, out_dir, html, parse(html))


# --- the tests ----------------------------------------------------------------------------------------------


def test_each_video_has_one_player_with_its_file_and_a_poster_on_disk(written: Written) -> None:
    players = written.dom.all("video")
    assert [p.attrs["src"] for p in players] == [v["file"] for v in written.report["videos"]]
    for player, video in zip(players, written.report["videos"], strict=True):
        assert "controls" in player.attrs and player.attrs["preload"] == "none"
        assert player.attrs["poster"] == video["thumbnail"]
        assert (written.out_dir / player.attrs["poster"]).is_file()
        card = player.parent
        assert card is not None and card.attrs["data-job"] == video["job_id"]
        assert [b.attrs["data-job"] for b in card.all("button", "lineage")] == [video["job_id"]]

    kept = cv2.imread(str(written.out_dir / "videos/job_a.jpg"))
    assert kept.shape[1] == 54, "the thumbnail the report came with was overwritten"
    for job in ("job_b", "job_c"):
        thumb = written.out_dir / f"videos/{job}.jpg"
        assert thumb.read_bytes()[:3] == b"\xff\xd8\xff", f"{thumb} is not a JPEG"
        assert cv2.imread(str(thumb)).shape[1] == 270


def test_cards_show_name_template_round_and_a_trend_badge_on_trend_videos_only(written: Written) -> None:
    cards = {c.attrs["data-job"]: c for c in written.dom.all("article", "card")}
    assert list(cards) == ["job_a", "job_b", "job_c"]
    assert cards["job_b"].all(cls="name")[0].text == "Bob"
    assert [c.all(cls="round")[0].text for c in cards.values()] == ["1", "2", "2"]
    assert cards["job_a"].all(cls="template")[0].text == "tpl-dance"
    assert [job for job, c in cards.items() if c.all(cls="trend")] == ["job_b"]


def test_hostile_strings_are_shown_as_text_never_as_markup(written: Written) -> None:
    for raw in (HOSTILE_NAME, HOSTILE_CAPTION, HOSTILE_TEMPLATE, "<before>"):
        assert raw not in written.html
    cards = {c.attrs["data-job"]: c for c in written.dom.all("article", "card")}
    assert cards["job_a"].all(cls="name")[0].text == HOSTILE_NAME  # shown as typed
    assert cards["job_c"].all(cls="template")[0].text == HOSTILE_TEMPLATE
    assert written.dom.all("img") == [n for n in written.dom.all("img") if n.attrs.get("src") != "x"]
    handlers = [(n.tag, a) for n in written.dom.walk() for a in n.attrs if a.startswith("on")]
    assert handlers == [], "an event handler attribute got into the page"

    scripts = written.dom.all("script")
    data = [s for s in scripts if s.attrs.get("type") == "application/json"]
    code = [s for s in scripts if s not in data]
    assert len(data) == 1 and len(code) == 1, [s.attrs for s in scripts]
    assert "alert" not in code[0].text
    payload = json.loads(data[0].text)  # the JSON survived the HTML parser whole: no "</" in it
    lineage = {v["job_id"]: v["lineage"] for v in payload["videos"]}
    assert lineage["job_b"]["caption_text"] == HOSTILE_CAPTION
    assert lineage["job_a"]["display_name"] == HOSTILE_NAME


def test_nothing_is_fetched_from_the_web_and_every_local_reference_exists(written: Written) -> None:
    refs = [
        (n.tag, a, v) for n in written.dom.walk() for a, v in n.attrs.items()
        if a in ("src", "href", "poster", "srcset", "action", "data", "xlink:href")
    ]  # fmt: skip
    assert refs, "the page references nothing: the check below would prove nothing"
    remote = [r for r in refs if r[2].strip().lower().startswith(("http:", "https:", "//"))]
    assert remote == []
    assert not [n for n in written.dom.all("link") if "stylesheet" in n.attrs.get("rel", "")]
    styles = "".join(s.text for s in written.dom.all("style")).lower()
    assert "@import" not in styles and "url(" not in styles
    for tag, _attr, value in refs:
        if not value.startswith("data:"):
            assert (written.out_dir / value).is_file(), f"<{tag}> points at {value}, not in the folder"
    # a person's picture is shown only where it is in the folder (bob's is not)
    assert [i.attrs["src"] for i in written.dom.all("img")] == ["assets/people/ada.png"]


def test_the_leaderboard_chart_draws_one_line_per_arm_through_its_rounds(written: Written) -> None:
    chart = written.dom.by_id("leaderboard-chart")
    lines = {n.attrs["data-arm"]: n for n in chart.all("polyline", "arm-line")}
    assert list(lines) == ["subject:ada", "subject:bob", "style:bold"]
    points = {
        arm: [tuple(map(float, p.split(","))) for p in n.attrs["points"].split()] for arm, n in lines.items()
    }
    assert {arm: len(p) for arm, p in points.items()} == {"subject:ada": 3, "subject:bob": 3, "style:bold": 2}
    # rounds run left to right; a higher mean sits higher (smaller y)
    assert [x for x, _ in points["subject:ada"]] == sorted(x for x, _ in points["subject:ada"])
    assert points["style:bold"][0][0] == points["subject:ada"][1][0]  # bold starts at round 2
    ada, bob, bold = (points[a][-1][1] for a in ("subject:ada", "subject:bob", "style:bold"))
    assert ada < bold < bob
    assert len({n.attrs["stroke"] for n in lines.values()}) == 3
    legend = written.dom.by_id("leaderboard-legend").all("li")
    assert [li.attrs["data-arm"] for li in legend] == list(lines)
    assert [li.text.split()[0] for li in legend] == ["ada", "bob", "bold"]
    rows = written.dom.by_id("leaderboard-table").all("tr")[1:]
    assert [r.attrs["data-arm"] for r in rows] == list(lines)
    assert [c.text for c in rows[2].all("td")][0] == "—"  # bold had no posts in round 1


def test_the_timeline_has_one_entry_per_consent_event_in_time_order(written: Written) -> None:
    entries = written.dom.by_id("consent-timeline").all("li", "consent-event")
    assert len(entries) == len(written.report["consent_timeline"])
    assert [e.attrs["data-kind"] for e in entries] == ["granted", "granted", "granted", "revoked", "denied"]
    assert [float(e.attrs["data-offset-s"]) for e in entries] == [1.0, 2.0, 3.0, 30.5, 40.0]
    assert "Cleo" in entries[3].text and HOSTILE_NAME in entries[0].text
    dots = written.dom.by_id("consent-strip").all("circle", "event-dot")
    assert len(dots) == len(entries)
    assert [float(d.attrs["cx"]) for d in dots] == sorted(float(d.attrs["cx"]) for d in dots)


def test_stage_bars_are_stacked_per_video_and_totalled_per_stage(written: Written) -> None:
    rows = {r.attrs["data-job"]: r for r in written.dom.all("div", "timing-row")}
    assert list(rows) == ["job_a", "job_b", "job_c"]
    widths = {}
    for job, row in rows.items():
        segments = row.all("span", "segment")
        assert [s.attrs["data-stage"] for s in segments] == list(STAGES)
        widths[job] = sum(float(s.attrs["data-pct"]) for s in segments)
    longest = 5.5  # job_a; the others' bars are as long as their share of it
    assert widths["job_a"] == pytest.approx(100, abs=0.01)
    assert widths["job_b"] == pytest.approx(4.0 / longest * 100, abs=0.01)
    assert widths["job_c"] == pytest.approx(3.0 / longest * 100, abs=0.01)
    colours = {
        s.attrs["data-stage"]: s.attrs["style"].split("background:")[1]
        for s in rows["job_b"].all("span", "segment")
    }
    assert len(set(colours.values())) == len(STAGES)

    totals = {
        r.attrs["data-stage"]: float(r.all("td")[1].attrs["data-seconds"])
        for r in written.dom.by_id("stage-totals").all("tr")[1:]
    }
    assert totals == pytest.approx(
        {"swap_queue": 1.75, "swap": 6.0, "render": 3.5, "review": 0.7, "publish": 0.55}
    )


def test_jobs_not_published_are_listed_with_their_reasons(written: Written) -> None:
    rows = written.dom.by_id("not-published-table").all("tr")[1:]
    assert [r.attrs["data-job"] for r in rows] == ["job_d", "job_e"]
    cells = [[c.text for c in r.all("td")] for r in rows]
    assert cells[0] == ["job_d", "Dan", "1", "swap", "no_consent", "no consent lease for dan"]
    assert cells[1][1:] == ["Cleo", "—", "publish", "revoked", "consent revoked <before> posting"]


def test_the_header_sums_up_the_run_and_its_checks(written: Written) -> None:
    header = written.dom.by_id("summary")
    facts = " ".join(header.all("p")[0].text.split())
    for fact in ("2026-03-01 09:00:00 UTC", "100.0 s", "classical", "embedded", "dryrun as demo", "3 rounds"):
        assert fact in facts
    checks = written.dom.by_id("checks").all("li")
    assert all("bad" not in li.attrs["class"] for li in checks)
    assert any(li.text == "platform spec passed 3/3" for li in checks)


def test_a_failed_check_is_flagged(tmp_path: Path) -> None:
    report = {
        "videos": [],
        "checks": {"videos": 3, "spec_passed": 2, "unconsented_face": 1, "problems": ["x"]},
    }
    dom = parse(write_page(report, tmp_path).read_text())
    bad = [li.text for li in dom.by_id("checks").all("li") if "bad" in li.attrs["class"].split()]
    assert bad == ["platform spec passed 2/3", "unconsented face: 1"]


@pytest.mark.parametrize("report", [{}, {"videos": []}, {"demo": {"started_at": STARTED}, "videos": [],
                                     "leaderboard": [], "consent_timeline": [], "checks": {"videos": 0}}])  # fmt: skip
def test_a_run_without_videos_still_renders(report: dict[str, Any], tmp_path: Path) -> None:
    dom = parse(write_page(report, tmp_path).read_text())
    assert dom.all("video") == [] and dom.all("article", "card") == []
    assert "No videos" in dom.by_id("no-videos").text
    assert json.loads(dom.by_id("page-data").text) == {"videos": []}


def test_a_video_ffmpeg_cannot_read_fails_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "broken.mp4").write_bytes(b"not a video at all")
    report = {"videos": [{"job_id": "broken", "file": "videos/broken.mp4", "thumbnail": "videos/broken.jpg"}]}
    with pytest.raises(PageError, match=r"videos/broken\.mp4"):
        write_page(report, tmp_path)
    assert not (tmp_path / "videos" / "broken.jpg").exists() and not (tmp_path / "index.html").exists()


def test_a_path_outside_the_folder_is_refused(tmp_path: Path) -> None:
    report = {"videos": [{"job_id": "x", "file": "../elsewhere.mp4", "thumbnail": "../elsewhere.jpg"}]}
    with pytest.raises(PageError, match="outside"):
        write_page(report, tmp_path / "demo")


def test_videos_are_shown_in_posting_order_with_numbers_rounded_for_people(tmp_path: Path) -> None:
    from reelfab.devtools.demo.page import page_view

    late = _video("job-late", "ada", "Ada", 1, (1, 1, 1, 1, 1))
    early = _video("job-early", "bo", "Bo", 1, (1, 1, 1, 1, 1))
    late["post"]["published_at"], early["post"]["published_at"] = "2026-03-01T09:05:00Z", "2026-03-01T09:01:00Z"
    late["identity"]["distance"] = 0.347912345
    view = page_view({"videos": [late, early]}, tmp_path)
    assert [v["job_id"] for v in view["videos"]] == ["job-early", "job-late"]
    assert view["videos"][1]["identity"]["distance"] == 0.348
