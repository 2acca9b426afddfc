"""Does a rendered file meet the delivery spec? ffprobe's view of it, every mismatch named.

``verify`` never raises: a file that cannot be read is one more problem. The caller decides what a
mismatch means (the post-producer fails the job)."""

from __future__ import annotations

import json
import struct
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from reelfab.media import children
from reelfab.media.render import RenderSpec
from reelfab.media.tools import tool

FPS_TOLERANCE = 0.01


@dataclass
class SpecCheck:
    passed: bool
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    video_codec: str | None = None
    video_profile: str | None = None
    pix_fmt: str | None = None
    audio_codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    duration_s: float | None = None
    faststart: bool | None = None
    problems: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)  # the container's format tags


def verify(path: Path, spec: RenderSpec, expected_duration_s: float, tolerance_s: float = 0.1) -> SpecCheck:
    data, error = _ffprobe(path)
    if data is None:
        return SpecCheck(passed=False, problems=[error])
    streams = data.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    fmt = data.get("format", {})
    check = SpecCheck(passed=False, metadata={str(k): str(v) for k, v in fmt.get("tags", {}).items()})
    check.problems += _check_video(check, video, spec)
    check.problems += _check_audio(check, audio, spec)
    check.problems += _check_duration(check, fmt, expected_duration_s, tolerance_s)
    check.problems += _check_faststart(check, path)
    check.passed = not check.problems
    return check


def _ffprobe(path: Path) -> tuple[dict[str, Any] | None, str]:
    if not path.is_file():
        return None, f"{path}: no such file"
    try:
        proc = children.run(
            [tool("ffprobe"), "-v", "error", "-print_format", "json", "-show_streams", "-show_format", str(path)],
            capture_output=True, text=True, errors="replace", timeout=60,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return None, f"{path}: ffprobe timed out"
    if proc.returncode != 0:
        return None, f"{path}: not a readable video ({proc.stderr.strip()[-300:] or 'ffprobe failed'})"
    return json.loads(proc.stdout or "{}"), ""


def _check_video(check: SpecCheck, video: dict[str, Any] | None, spec: RenderSpec) -> list[str]:
    if video is None:
        return ["no video stream"]
    check.width, check.height = int(video.get("width", 0)), int(video.get("height", 0))
    check.video_codec = video.get("codec_name")
    check.video_profile = video.get("profile")
    check.pix_fmt = video.get("pix_fmt")
    rates = [_rate(video.get("r_frame_rate")), _rate(video.get("avg_frame_rate"))]
    check.fps = rates[1] or rates[0]
    problems = []
    if check.video_codec != "h264":
        problems.append(f"video codec is {check.video_codec}, expected h264")
    if (check.video_profile or "").lower() != spec.profile.lower():
        problems.append(f"video profile is {check.video_profile}, expected {spec.profile.capitalize()}")
    if check.pix_fmt != spec.pix_fmt:
        problems.append(f"pixel format is {check.pix_fmt}, expected {spec.pix_fmt}")
    if (check.width, check.height) != (spec.width, spec.height):
        problems.append(f"video is {check.width}x{check.height}, expected {spec.width}x{spec.height}")
    if any(abs(r - spec.fps) > FPS_TOLERANCE for r in rates):  # both: a VFR file has avg != r
        shown = "/".join(f"{r:g}" for r in dict.fromkeys(rates))
        problems.append(f"frame rate is {shown} fps, expected {spec.fps} (constant)")
    return problems


def _check_audio(check: SpecCheck, audio: dict[str, Any] | None, spec: RenderSpec) -> list[str]:
    if audio is None:
        return ["no audio stream"]
    check.audio_codec = audio.get("codec_name")
    check.sample_rate = int(audio.get("sample_rate") or 0)
    check.channels = int(audio.get("channels") or 0)
    problems = []
    if check.audio_codec != spec.audio_codec:
        problems.append(f"audio codec is {check.audio_codec}, expected {spec.audio_codec}")
    if check.sample_rate != spec.sample_rate:
        problems.append(f"audio sample rate is {check.sample_rate} Hz, expected {spec.sample_rate}")
    if check.channels != spec.channels:
        problems.append(f"audio has {check.channels} channel(s), expected {spec.channels}")
    return problems


def _check_duration(check: SpecCheck, fmt: dict[str, Any], expected: float, tolerance: float) -> list[str]:
    try:
        check.duration_s = float(fmt["duration"])
    except (KeyError, TypeError, ValueError):
        return ["duration unknown"]
    if abs(check.duration_s - expected) > tolerance:
        return [f"duration is {check.duration_s:.3f} s, expected {expected:.3f} ± {tolerance:g} s"]
    return []


def _check_faststart(check: SpecCheck, path: Path) -> list[str]:
    order = top_level_boxes(path)
    if "moov" not in order or "mdat" not in order:
        check.faststart = False
        return [f"not an MP4 with moov and mdat boxes (top-level boxes: {', '.join(order) or 'none'})"]
    check.faststart = order.index("moov") < order.index("mdat")
    return [] if check.faststart else ["not faststart: the moov box comes after mdat"]


def top_level_boxes(path: Path, limit: int = 64) -> list[str]:
    """Types of the file's top-level ISO BMFF boxes, in order, read from their headers only."""
    boxes: list[str] = []
    size_total = path.stat().st_size
    with path.open("rb") as f:
        offset = 0
        while offset + 8 <= size_total and len(boxes) < limit:
            f.seek(offset)
            size, kind = struct.unpack(">I4s", f.read(8))
            if size == 1:  # 64-bit size follows the type
                size = struct.unpack(">Q", f.read(8))[0]
            elif size == 0:  # extends to the end of the file
                size = size_total - offset
            if size < 8:
                break  # not a box header: stop rather than loop
            boxes.append(kind.decode("latin-1"))
            offset += size
    return boxes


def _rate(text: str | None) -> float:
    try:
        return float(Fraction(text)) if text and text not in ("0/0", "0") else 0.0
    except (ValueError, ZeroDivisionError):
        return 0.0
