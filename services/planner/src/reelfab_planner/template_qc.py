"""The catalogue's QC on real files: a template clip (ffprobe for duration and size, then a face
detector on frames sampled evenly over the clip: how often a face shows, and how much of the frame's
height it fills, which tells a close-up from a wide shot) and a music bed (an audio stream that lasts).

Every failing rule is reported, not just the first. A file that cannot be measured at all (missing,
a directory, empty, not a video, no video stream) is refused at once with the reason, in the same
words for a clip and a bed (check_file). The detector is the face
engine's (reelfab.faces): the configured frame backend, the classical one where the backend works on
whole clips."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reelfab.faces.qc import Reason
from reelfab.faces.types import FaceEngine, best_face
from reelfab.media import children
from reelfab.media.errors import MediaError
from reelfab.media.frames import read_frames
from reelfab.media.probe import VideoInfo, probe
from reelfab.media.tools import tool
from reelfab.settings import Settings

from .catalogue import Refused, TemplateLimits, classify_shot

DETECT_WIDTH = 540  # frames are searched at most this wide (as the face engine's template QC does)


@dataclass(frozen=True)
class TemplateQC:
    """What the QC measured of a clip, and every rule it broke (``reasons``; none: it passed)."""

    path: Path
    duration_s: float
    width: int
    height: int
    fps: float
    sampled: int  # frames the detector looked at
    with_face: int  # ... of which showed a face
    face_share: float
    face_height_share: float  # median face height / frame height over the frames with a face
    shot: str
    reasons: tuple[Reason, ...] = ()
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.reasons

    def check(self) -> TemplateQC:
        """Itself when it passed; Refused with every reason otherwise."""
        if self.reasons:
            raise Refused(f"template {self.path.name}", [r.message for r in self.reasons], [r.code for r in self.reasons])
        return self


@dataclass(frozen=True)
class MusicQC:
    path: Path
    duration_s: float
    codec: str
    sample_rate: int | None
    channels: int | None


def template_limits(settings: Settings) -> TemplateLimits:
    return TemplateLimits(
        min_seconds=settings.planner_template_min_s,
        max_seconds=settings.planner_template_max_s,
        min_short_side=settings.planner_template_min_short_side,
        min_face_share=settings.planner_template_min_face_share,
        samples=settings.planner_template_qc_samples,
    )


def qc_engine(settings: Settings) -> FaceEngine:
    """The face engine whose detector the QC uses: the configured frame backend (classical | onnx),
    classical for facefusion (it works on whole clips, not frames)."""
    from reelfab.faces.backends import FRAME_BACKENDS, get_engine

    backend = settings.face_backend if settings.face_backend in FRAME_BACKENDS else "classical"
    return get_engine(backend, settings)


def measure_template(path: Path, engine: FaceEngine, limits: TemplateLimits, *, closeup_face_share: float,
                     detect_width: int = DETECT_WIDTH) -> TemplateQC:
    """The clip at ``path`` measured against ``limits``; Refused when it cannot be measured at all."""
    info = _probe_video(path)
    reasons: list[Reason] = []
    if not limits.min_seconds <= info.duration_s <= limits.max_seconds:
        reasons.append(Reason("duration", f"it lasts {info.duration_s:.1f} s, templates must last "
                                          f"{limits.min_seconds:g} to {limits.max_seconds:g} s"))
    if min(info.width, info.height) < limits.min_short_side:
        reasons.append(Reason("resolution", f"{info.width}x{info.height} is too small: its short side must be at "
                                            f"least {limits.min_short_side} px"))
    heights = _face_heights(path, info, engine, limits.samples, detect_width)
    sampled = len(heights)
    found = [h for h in heights if h is not None]
    share = len(found) / sampled
    height_share = statistics.median(found) if found else 0.0
    if not found:
        reasons.append(Reason("no_face", f"no face in any of the {sampled} sampled frames"))
    elif share < limits.min_face_share:
        reasons.append(Reason("face_hidden", f"a face shows in {len(found)} of {sampled} sampled frames ({share:.0%}), "
                                             f"at least {limits.min_face_share:.0%} needed"))
    shot = classify_shot(height_share, closeup_face_share)
    metrics: dict[str, Any] = {
        "duration_s": round(info.duration_s, 3), "width": info.width, "height": info.height, "fps": round(info.fps, 3),
        "codec": info.codec, "has_audio": info.has_audio, "sampled_frames": sampled, "face_frames": len(found),
        "face_share": round(share, 4), "face_height_share": round(height_share, 4), "shot": shot,
        "closeup_face_share": closeup_face_share, "detector": getattr(engine, "name", type(engine).__name__),
        "limits": {"min_s": limits.min_seconds, "max_s": limits.max_seconds, "min_short_side": limits.min_short_side,
                   "min_face_share": limits.min_face_share},
    }
    return TemplateQC(path, info.duration_s, info.width, info.height, info.fps, sampled, len(found), share,
                      height_share, shot, tuple(reasons), metrics)


def template_qc(path: Path, engine: FaceEngine, limits: TemplateLimits, *, closeup_face_share: float,
                detect_width: int = DETECT_WIDTH) -> TemplateQC:
    """The measured clip when it passes every rule; Refused naming every rule it breaks."""
    return measure_template(path, engine, limits, closeup_face_share=closeup_face_share,
                            detect_width=detect_width).check()


def music_qc(path: Path, *, min_seconds: float = 1.0) -> MusicQC:
    """A music bed: a readable file with an audio stream that lasts at least ``min_seconds`` (the
    render loops a bed shorter than the clip). Refused with every reason otherwise."""
    what = f"music bed {path.name}"
    check_file(path, what, empty_code="not_audio")
    proc = children.run(
        [tool("ffprobe"), "-v", "error", "-print_format", "json", "-show_streams", "-show_format", str(path)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        detail = proc.stderr.strip()[-300:] or "ffprobe failed"
        raise Refused(what, [f"{path}: not a readable audio file ({detail})"], ["not_audio"])
    data = json.loads(proc.stdout or "{}")
    audio = next((s for s in data.get("streams", []) if s.get("codec_type") == "audio"), None)
    if audio is None:
        raise Refused(what, [f"{path}: has no audio stream"], ["no_audio"])
    duration = _float(audio.get("duration")) or _float(data.get("format", {}).get("duration"))
    if duration < min_seconds:
        raise Refused(what, [f"it lasts {duration:.2f} s, a music bed must last at least {min_seconds:g} s"],
                      ["duration"])
    rate, channels = audio.get("sample_rate"), audio.get("channels")
    return MusicQC(path, duration, audio.get("codec_name", "?"), int(rate) if rate else None,
                   int(channels) if channels else None)


# ----------------------------------------------------------------------------------------------- helpers


def check_file(path: Path, what: str, *, empty_code: str) -> None:
    """Refused, in the same words for templates and music beds, unless ``path`` is a regular file with
    something in it: missing, a directory (or another kind of non-file), empty (``empty_code``)."""
    if not path.exists():
        raise Refused(what, [f"{path}: no such file"], ["missing"])
    if path.is_dir():
        raise Refused(what, [f"{path}: is a directory, not a file"], ["not_a_file"])
    if not path.is_file():
        raise Refused(what, [f"{path}: is not a regular file"], ["not_a_file"])
    if path.stat().st_size == 0:
        raise Refused(what, [f"{path}: the file is empty (0 bytes)"], [empty_code])


def _probe_video(path: Path) -> VideoInfo:
    what = f"template {path.name}"
    check_file(path, what, empty_code="not_video")
    try:
        return probe(path)
    except MediaError as exc:  # empty, unreadable, no video stream, no size, zero length: says which
        raise Refused(what, [str(exc)], ["not_video"]) from None


def _face_heights(path: Path, info: VideoInfo, engine: FaceEngine, samples: int, detect_width: int) -> list[float | None]:
    """Per sampled frame, the best face's height / the frame's height (None: no face). The samples start
    ``samples`` equal slices of the clip (ffmpeg's fps filter picks them in one decoding pass)."""
    n = max(1, min(samples, info.frames or samples))
    scale = min(1.0, detect_width / info.width)
    size = (max(2, round(info.width * scale) // 2 * 2), max(2, round(info.height * scale) // 2 * 2))
    out: list[float | None] = []
    try:
        frames = read_frames(path, fps=n / info.duration_s, size=size, info=info, max_frames=n)
        for frame in frames:
            face = best_face(engine.detect(frame))
            out.append(face.height / frame.shape[0] if face is not None else None)
    except MediaError as exc:  # probed as a video, but no frame decodes
        raise Refused(f"template {path.name}", [str(exc)], ["not_video"]) from None
    if not out:
        raise Refused(f"template {path.name}", [f"{path}: no frame could be decoded"], ["not_video"])
    return out


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0
