"""The demo's page: ``index.html`` beside ``report.json`` in the demo's folder, a static page a person opens
from disk (file://) with everything inline (CSS, JS, SVG; nothing fetched from the web): the run's summary,
one card per video (its lineage and checks in a dialog), the leaderboard per arm over the rounds, the
consent events, the stage timings and the jobs that were not published. Thumbnails the report names but
the folder lacks are cut from their videos with ffmpeg."""

from __future__ import annotations

import subprocess
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from jinja2 import ChainableUndefined, Environment, FileSystemLoader

from reelfab.errors import ReelfabError
from reelfab.media import children
from reelfab.media.tools import tool

TEMPLATE = "page.html.j2"
THUMB_WIDTH = 270
THUMB_AT_S = 1.0
FFMPEG_TIMEOUT_S = 60.0
# Tableau 10: arms and stages are coloured by their index, so any number of either gets a colour
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
           "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")  # fmt: skip
CHART = {"width": 640, "height": 240, "left": 52, "right": 40, "top": 12, "bottom": 30}
STRIP = {"width": 640, "height": 44, "left": 12, "right": 12}


class PageError(ReelfabError):
    """The demo's page could not be written (a thumbnail ffmpeg could not make)."""


def write_page(report: dict[str, Any], out_dir: Path) -> Path:
    """Write ``out_dir/index.html`` for ``report`` (paths in it are relative to ``out_dir``), making each
    video's missing thumbnail first; returns the page's path."""
    for video in report.get("videos") or []:
        ensure_thumbnail(video, out_dir)
    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent),
        autoescape=True,  # every string from the report is text, display names included
        undefined=ChainableUndefined,  # an optional key the report lacks renders as nothing
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(url=_url, secs=_secs, when=_when, num=_num)
    env.policies["json.dumps_kwargs"] = {"sort_keys": False}  # the dialog lists fields in the report's order
    html = env.get_template(TEMPLATE).render(**page_view(report, out_dir))
    page = out_dir / "index.html"
    out_dir.mkdir(parents=True, exist_ok=True)
    page.write_text(html, encoding="utf-8")
    return page


def ensure_thumbnail(video: dict[str, Any], out_dir: Path) -> Path | None:
    """The video's thumbnail (one JPEG frame about 1 s in, 270 px wide), made with ffmpeg where missing."""
    if not video.get("file") or not video.get("thumbnail"):
        return None
    target, source = _inside(out_dir, video["thumbnail"]), _inside(out_dir, video["file"])
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    duration = (video.get("spec_check") or {}).get("duration_s")
    seek = min(THUMB_AT_S, duration / 2) if duration else THUMB_AT_S
    stderr = ""
    for at in dict.fromkeys((seek, 0.0)):  # a clip shorter than the seek gives no frame: then its first
        cmd = [tool("ffmpeg"), "-v", "error", "-y", "-ss", f"{at:.3f}", "-i", str(source), "-frames:v", "1",
               "-vf", f"scale={THUMB_WIDTH}:-2", "-q:v", "3", "-update", "1", str(target)]  # fmt: skip
        try:
            proc = children.run(cmd, capture_output=True, text=True, timeout=FFMPEG_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise PageError(f"no thumbnail for {source}: ffmpeg ran over {FFMPEG_TIMEOUT_S:.0f} s") from exc
        if proc.returncode == 0 and target.is_file() and target.stat().st_size > 0:
            return target
        stderr = proc.stderr.strip()[-500:]
        target.unlink(missing_ok=True)
    raise PageError(
        f"no thumbnail for {source}: ffmpeg could not read a frame of it ({stderr or 'no frame'})"
    )


def _rounded(value: Any, places: int = 3) -> Any:
    """Floats to ``places`` decimals, all the way down (the lineage dialog shows 0.348, not 0.34791…)."""
    if isinstance(value, float):
        return round(value, places)
    if isinstance(value, dict):
        return {k: _rounded(v, places) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v, places) for v in value]
    return value


def page_view(report: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """What the template shows, with the chart's, the timeline's and the bars' geometry worked out."""
    demo = report.get("demo") or {}
    people = {p.get("subject_id"): p for p in report.get("people") or []}
    videos = [{**_rounded(v), "display_name": _name(v, people)} for v in report.get("videos") or []]
    videos.sort(key=lambda v: str((v.get("post") or {}).get("published_at") or ""))  # in the order they were posted
    return {
        "demo": demo,
        "checks": report.get("checks") or {},
        "trend": report.get("trend"),
        "people": [
            {**p, "has_image": bool(p.get("image")) and (out_dir / str(p["image"])).is_file()}
            for p in people.values()
        ],
        "videos": videos,
        "chart": leaderboard_chart(report.get("leaderboard") or []),
        "timeline": consent_timeline(report.get("consent_timeline") or [], demo, people),
        "timings": stage_timings(videos),
        "not_published": [{**j, "display_name": _name(j, people)} for j in report.get("not_published") or []],
        "data": {"videos": videos},
    }


def leaderboard_chart(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One polyline per arm through its posterior mean at each round; y from the lowest to the highest mean."""
    rounds = sorted(rounds, key=lambda r: r.get("round", 0))
    numbers = [r.get("round", 0) for r in rounds]
    arms: dict[str, dict[str, Any]] = {}
    for r in rounds:
        for arm in r.get("arms") or []:
            entry = arms.setdefault(
                str(arm.get("arm_id")), {**arm, "colour": PALETTE[len(arms) % len(PALETTE)]}
            )
            entry.setdefault("by_round", {})[r.get("round", 0)] = arm
    means = [
        float(a["mean"]) for e in arms.values() for a in e["by_round"].values() if a.get("mean") is not None
    ]
    lo, hi = min([0.0, *means]), max(means, default=1.0)
    hi = hi if hi > lo else lo + 1.0
    w, h, left, top = CHART["width"], CHART["height"], CHART["left"], CHART["top"]
    plot_w, plot_h = w - left - CHART["right"], h - top - CHART["bottom"]
    first, last = min(numbers, default=0), max(numbers, default=0)

    def x(n: int) -> float:
        return left + (plot_w / 2 if last == first else (n - first) / (last - first) * plot_w)

    def y(mean: float) -> float:
        return top + (hi - mean) / (hi - lo) * plot_h

    for entry in arms.values():
        known = [(n, a) for n, a in entry["by_round"].items() if a.get("mean") is not None]
        entry["dots"] = [{"x": x(n), "y": y(float(a["mean"])), "round": n, **a} for n, a in known]
        entry["points"] = " ".join(f"{d['x']:.1f},{d['y']:.1f}" for d in entry["dots"])
    y_ticks = [{"y": y(v), "value": v} for v in (lo, (lo + hi) / 2, hi)]
    return {"width": w, "height": h, "left": left, "top": top, "plot_w": plot_w, "plot_h": plot_h,
            "rounds": numbers, "x_ticks": [{"x": x(n), "round": n} for n in numbers],
            "y_ticks": y_ticks, "arms": list(arms.values())}  # fmt: skip


def consent_timeline(
    events: list[dict[str, Any]], demo: dict[str, Any], people: dict[Any, dict[str, Any]]
) -> dict[str, Any]:
    """Consent events in time order, each with its seconds since the run started and its place on a strip."""
    start = _parse(demo.get("started_at")) or min(
        filter(None, (_parse(e.get("at")) for e in events)), default=None
    )
    rows = []
    for event in sorted(events, key=lambda e: str(e.get("at") or "")):
        at = _parse(event.get("at"))
        offset = (at - start).total_seconds() if at and start else None
        rows.append({**event, "offset_s": offset, "display_name": _name(event, people)})
    offsets = [r["offset_s"] for r in rows if r["offset_s"] is not None]
    span = max([float(demo.get("seconds") or 0), *offsets, 1e-9])
    plot_w = STRIP["width"] - STRIP["left"] - STRIP["right"]
    for r in rows:
        r["x"] = None if r["offset_s"] is None else STRIP["left"] + max(r["offset_s"], 0) / span * plot_w
    return {**STRIP, "events": rows, "span_s": span}


def stage_timings(videos: list[dict[str, Any]]) -> dict[str, Any]:
    """Per video a stacked bar of its stages (scaled to the slowest video), and each stage's total."""
    colours: dict[str, str] = {}
    totals: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    for video in videos:
        timings = video.get("timings") or {}
        stages = [dict(s) for s in timings.get("stages") or [] if s.get("stage") is not None]
        for s in stages:
            s["stage"], s["seconds"] = str(s["stage"]), float(s.get("seconds") or 0)
            colours.setdefault(s["stage"], PALETTE[len(colours) % len(PALETTE)])
            totals[s["stage"]] = totals.get(s["stage"], 0.0) + s["seconds"]
        summed = sum(s["seconds"] for s in stages)
        total = summed if timings.get("total_s") is None else float(timings["total_s"])
        adds_up = abs(total - summed) <= max(0.05, 0.01 * total)
        rows.append(
            {"video": video, "stages": stages, "total_s": total, "summed_s": summed, "adds_up": adds_up}
        )
    longest = max([1e-9, *(max(r["total_s"], r["summed_s"]) for r in rows)])
    for r in rows:
        for s in r["stages"]:
            s["pct"], s["colour"] = 100.0 * s["seconds"] / longest, colours[s["stage"]]
    grand = sum(totals.values()) or 1e-9
    stage_totals = [
        {"stage": k, "seconds": v, "share": v / grand, "colour": colours[k]} for k, v in totals.items()
    ]
    return {"rows": rows, "colours": colours, "totals": stage_totals}


def _name(item: dict[str, Any], people: dict[Any, dict[str, Any]]) -> str:
    lineage = item.get("lineage") or {}
    subject = lineage.get("subject_id") or item.get("subject_id")
    return str(
        lineage.get("display_name") or (people.get(subject) or {}).get("display_name") or subject or ""
    )


def _inside(out_dir: Path, relative: str) -> Path:
    """A report's relative path under ``out_dir``; one that would leave the folder is refused."""
    path = (out_dir / relative).resolve()
    if PurePosixPath(relative).is_absolute() or not path.is_relative_to(out_dir.resolve()):
        raise PageError(f"the report names {relative!r}, outside the demo's folder {out_dir}")
    return path


def _parse(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def _url(relative: Any) -> str:
    """A relative path as a URL reference (a space, '#' or ':' in a file name stays part of the path)."""
    return quote(str(relative or ""))


def _secs(value: Any) -> str:
    return "—" if value is None or value == "" else f"{float(value):.1f} s"


def _num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) and not isinstance(value, bool) else "—"


def _when(value: Any) -> str:
    at = _parse(value)
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at else str(value or "—")
