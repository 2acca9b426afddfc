"""ffprobe, parsed into what the pipeline needs to know about a clip."""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from reelfab.media import children
from reelfab.media.errors import MediaError
from reelfab.media.tools import tool


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    width: int  # as displayed (rotation applied)
    height: int
    fps: float
    duration_s: float
    frames: int | None  # from the container where it says; else estimated from fps x duration
    codec: str
    pix_fmt: str
    rotation: int  # degrees the player rotates the stored picture
    has_audio: bool
    audio_codec: str | None
    sample_rate: int | None
    variable_frame_rate: bool
    raw: dict[str, Any]

    @property
    def aspect(self) -> float:
        return self.width / self.height


def probe(path: Path) -> VideoInfo:
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: the file is empty (0 bytes)")
    proc = children.run(
        [tool("ffprobe"), "-v", "error", "-print_format", "json", "-show_streams", "-show_format", str(path)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise MediaError(f"{path}: not a readable video ({proc.stderr.strip()[-300:] or 'ffprobe failed'})")
    data = json.loads(proc.stdout or "{}")
    streams = data.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video" and not _is_cover_art(s)), None)
    if video is None:
        raise MediaError(f"{path}: has no video stream")
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    rotation = _rotation(video)
    w, h = int(video.get("width", 0)), int(video.get("height", 0))
    if w <= 0 or h <= 0:
        raise MediaError(f"{path}: video stream has no size")
    if rotation % 180:
        w, h = h, w
    avg = _rate(video.get("avg_frame_rate"))
    real = _rate(video.get("r_frame_rate"))
    fps = avg or real
    if not fps:
        raise MediaError(f"{path}: cannot tell the frame rate")
    duration = float(video.get("duration") or data.get("format", {}).get("duration") or 0.0)
    if duration <= 0:
        raise MediaError(f"{path}: zero-length video")
    nb = video.get("nb_frames")
    frames = int(nb) if nb and str(nb).isdigit() and int(nb) > 0 else round(duration * fps)
    return VideoInfo(
        path=path, width=w, height=h, fps=fps, duration_s=duration, frames=frames,
        codec=video.get("codec_name", "?"), pix_fmt=video.get("pix_fmt", "?"), rotation=rotation,
        has_audio=audio is not None, audio_codec=audio.get("codec_name") if audio else None,
        sample_rate=int(audio["sample_rate"]) if audio and audio.get("sample_rate") else None,
        variable_frame_rate=bool(avg and real and abs(avg - real) > 0.01 * real),
        raw=data,
    )


def _rate(text: str | None) -> float:
    if not text or text in ("0/0", "0"):
        return 0.0
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        return 0.0


def _rotation(stream: dict[str, Any]) -> int:
    tags = stream.get("tags", {})
    if "rotate" in tags:
        return int(tags["rotate"]) % 360
    for side in stream.get("side_data_list", []):
        if "rotation" in side:
            return int(-float(side["rotation"])) % 360
    return 0


def _is_cover_art(stream: dict[str, Any]) -> bool:
    return bool(stream.get("disposition", {}).get("attached_pic"))
