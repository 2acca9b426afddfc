"""Post-production in one ffmpeg pass: reframe to 9:16, scale to 1080×1920 at 25 fps, burn captions
and the visible AI label, fade in/out, mix music under the original audio, loudness-normalise, and
encode to TikTok's delivery spec (H.264 High yuv420p, AAC 48 kHz stereo, faststart, our tags).

One process and one filter graph: every extra pass re-decodes and re-encodes the whole clip (the
field notes measured three passes at 1.8–2.1× the time of one). ``build_command`` is pure (it only
builds the argument list); ``render`` runs it on a file (the swapped mezzanine); ``FrameRender`` runs
the same graph and encoder on frames piped in as they are swapped (the template gives the audio), so a
fused swap writes no mezzanine and its pictures are those ``render`` makes of a lossless one (bit for
bit at whole-number frame rates: a mezzanine's millisecond timestamps can shift the frame the fps
filter picks at 29.97). The only temporary files are the caption SRT and ffmpeg's log."""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from reelfab.errors import PermanentError, TransientError
from reelfab.media import children
from reelfab.media.errors import MediaError
from reelfab.media.probe import VideoInfo, probe
from reelfab.media.tools import tool

Reframe = Literal["face", "blur", "pad"]
Corner = Literal["top-left", "top-right", "bottom-left", "bottom-right"]

ASPECT_TOLERANCE = 0.01  # relative: 720×1280 and 1080×1920 count as 9:16, 1088×1920 too
METADATA_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
# The streams the filter graph reads where ffmpeg's inputs are the mezzanine, then the music.
VIDEO_IN, AUDIO_IN, MUSIC_IN = "[0:v:0]", "[0:a:0]", "[1:a:0]"


@dataclass(frozen=True)
class RenderSpec:
    width: int = 1080
    height: int = 1920
    fps: int = 25
    crf: int = 23
    preset: str = "veryfast"
    profile: str = "high"
    pix_fmt: str = "yuv420p"
    audio_codec: str = "aac"
    sample_rate: int = 48000
    channels: int = 2
    audio_bitrate: str = "128k"
    loudness_lufs: float = -14.0
    true_peak_db: float = -1.5
    loudness_range: float = 11.0
    fade_in_s: float = 0.5
    fade_out_s: float = 0.5
    music_gain_db: float = -12.0  # music sits under the original audio
    reframe: Reframe = "face"  # used only when the source is not 9:16
    face_smoothing_s: float = 1.0  # moving-average window over the face centres
    reframe_keyframe_s: float = 0.5  # the crop path is piecewise linear between these
    blur_sigma: float = 12.0  # at 1/4 size, i.e. ~48 px at full size
    label_text: str | None = "AI-generated"  # None: no visible label
    label_position: Corner = "top-left"
    label_font_file: str = "DejaVuSans-Bold.ttf"  # in fonts_dir
    label_font_px: int = 44
    label_margin_px: int = 48
    caption_font: str = "DejaVu Sans"
    caption_font_size: int = 10  # SRT sizes scale against 288 lines: 10 → ~67 px on 1920
    caption_margin_v: int = 64  # same 288-line units: ~430 px above the bottom, clear of TikTok's UI
    caption_max_chars: int = 36  # per cue, when captions come as plain text
    fonts_dir: Path = Path("/usr/share/fonts/truetype/dejavu")
    timeout_s: float = 900.0

    def __post_init__(self) -> None:
        if self.reframe not in ("face", "blur", "pad"):
            raise ValueError(f"reframe {self.reframe!r}: one of face, blur, pad")
        if self.label_position not in ("top-left", "top-right", "bottom-left", "bottom-right"):
            raise ValueError(f"label_position {self.label_position!r}: top-/bottom- and -left/-right")
        if self.width % 2 or self.height % 2:
            raise ValueError(f"{self.width}x{self.height}: yuv420p needs an even width and height")

    @property
    def aspect(self) -> float:
        return self.width / self.height


@dataclass(frozen=True)
class RenderJob:
    input: Path  # the swapped mezzanine
    output: Path
    duration_s: float | None = None  # the template's; None: the input's probed duration
    music: Path | None = None
    caption_text: str | None = None
    caption_srt: Path | None = None
    face_track: Mapping[str, Any] | None = None  # reelfab.faces.clip.track_document
    metadata: Mapping[str, str] = field(default_factory=dict)  # e.g. job_id, consent_version, ai_generated


StopCheck = Callable[[], "tuple[str, str] | None"]


class RenderStopped(PermanentError):
    """The render was stopped while ffmpeg ran (``should_stop`` answered): ``reason`` says why
    (for consent: revoked, erased, expired, ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class RenderResult:
    output: Path
    seconds: float
    command: list[str]


# ---------------------------------------------------------------------------------------------- run


def render(
    job: RenderJob,
    spec: RenderSpec = RenderSpec(),
    *,
    should_stop: StopCheck | None = None,
    poll_s: float = 0.2,
) -> RenderResult:
    """Render ``job`` to ``job.output``. Raises MediaError (input, music or ffmpeg trouble), with
    ffmpeg's last stderr lines; a partial output is deleted.

    ``should_stop`` is asked every ``poll_s`` while ffmpeg runs (and once before it starts): a
    (reason, detail) answer kills ffmpeg, deletes the partial output and raises RenderStopped —
    a consent revoked mid-render stops the render there, not after it."""
    check_inputs(job)
    if should_stop is not None and (stop := should_stop()):
        raise RenderStopped(*stop)
    info = probe(job.input)
    job.output.parent.mkdir(parents=True, exist_ok=True)
    # The default temp folder may hold characters the filter syntax treats specially.
    temp_root = None if _filter_safe(tempfile.gettempdir()) else "/tmp"
    with tempfile.TemporaryDirectory(prefix="reelfab-render-", dir=temp_root) as folder:
        captions = write_captions(job, spec, output_duration(job, info), Path(folder))
        command = build_command(job, spec, info, captions=captions)
        started = time.perf_counter()
        _run_ffmpeg(command, job.output, spec.timeout_s, Path(folder) / "ffmpeg.log", should_stop, poll_s)
        seconds = time.perf_counter() - started
    return RenderResult(job.output, seconds, command)


def check_inputs(job: RenderJob) -> None:
    """Everything that can be checked before ffmpeg starts."""
    if job.music is not None and not job.music.is_file():
        raise MediaError(f"music file {job.music} does not exist")
    if job.caption_srt is not None and not job.caption_srt.is_file():
        raise MediaError(f"caption file {job.caption_srt} does not exist")
    if job.output.resolve() == job.input.resolve():
        raise MediaError(f"{job.output}: the output would overwrite the input")
    for key in job.metadata:
        if not METADATA_KEY.fullmatch(key):
            raise ValueError(f"metadata key {key!r}: use letters, digits and underscores")


def _run_ffmpeg(command: list[str], output: Path, timeout_s: float, log: Path,
                should_stop: StopCheck | None = None, poll_s: float = 0.2) -> None:
    """One ffmpeg process (dying with this one), its stderr into ``log`` (a pipe nobody reads while
    we poll could fill and stall it), polled for ``should_stop`` and the timeout."""
    deadline = time.monotonic() + timeout_s
    with log.open("w+b") as errors:
        proc = children.popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors)
        try:
            while True:
                try:
                    code = proc.wait(timeout=poll_s)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if should_stop is not None and (stop := should_stop()):
                    _kill(proc)
                    output.unlink(missing_ok=True)
                    raise RenderStopped(*stop)
                if time.monotonic() > deadline:
                    _kill(proc)
                    output.unlink(missing_ok=True)
                    raise TransientError(f"ffmpeg took longer than {timeout_s:.0f} s rendering {output}")
        except BaseException:
            _kill(proc)  # an error in this thread (or KeyboardInterrupt) never leaves ffmpeg running
            raise
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
    if code != 0:
        output.unlink(missing_ok=True)
        raise ffmpeg_failure(f"rendering {output}", code, "\n".join(stderr.strip().splitlines()[-6:]))


def ffmpeg_failure(what: str, code: int | None, tail: str) -> Exception:
    """The error for an ffmpeg that ended with ``code``: killed by a signal (the OOM killer, an
    operator) is a TransientError, worth another try; any other failure is the input's (MediaError)."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return TransientError(f"ffmpeg was killed ({name}) while {what}" + (f": {tail}" if tail else ""))
    return MediaError(f"ffmpeg failed {what}: {tail or f'exit status {code}'}")


def _kill(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


# -------------------------------------------------------------------------------------------- fused


class FrameRender:
    """Render frames as they come (the swapper's fused mode): the same filter graph, encoder and tags as
    ``render``, fed by a pipe of BGR frames instead of a mezzanine file, so there is still one lossy
    encode and no lossless copy on disk. ``job.input`` is the *template*: its audio is used (there is no
    mezzanine to carry it); ``info`` describes the frames that will be written (``probe(template)``).

    Blocking, for one worker thread: create, write, close (or abort) it from the same thread, which the
    kernel watches to kill ffmpeg if this process dies (reelfab.media.children). ffmpeg's stderr goes to
    ``render-ffmpeg.log`` in ``log_dir`` (kept), else in the temp folder that holds the captions."""

    def __init__(
        self, job: RenderJob, spec: RenderSpec, info: VideoInfo, *, log_dir: Path | None = None
    ) -> None:
        check_inputs(job)
        if info.has_audio and not job.input.is_file():
            raise MediaError(f"template {job.input} (the render's audio) does not exist")
        self.job, self.spec, self.info = job, spec, info
        self.frames = 0
        self._shape = (info.height, info.width, 3)
        self._result: RenderResult | None = None
        self._aborted = False
        job.output.parent.mkdir(parents=True, exist_ok=True)
        # The default temp folder may hold characters the filter syntax treats specially.
        temp_root = None if _filter_safe(tempfile.gettempdir()) else "/tmp"
        self._folder = Path(tempfile.mkdtemp(prefix="reelfab-render-", dir=temp_root))
        try:
            if log_dir is not None:
                log_dir.mkdir(parents=True, exist_ok=True)
            self._log = (log_dir or self._folder) / "render-ffmpeg.log"
            captions = write_captions(job, spec, output_duration(job, info), self._folder)
            inputs, audio, music = frame_inputs(job, info)
            # The frame count is known only when the pipe closes: hold the last frame for up to the whole
            # duration (stream_s=0), and -t cuts there (a full stream is encoded exactly as without it).
            self.command = build_command(
                job, spec, info, captions=captions, inputs=inputs, audio=audio, music=music, stream_s=0.0
            )
            self._started = time.perf_counter()
            with self._log.open("wb") as errors:  # ffmpeg keeps its own descriptor
                self._proc = children.popen(
                    self.command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors
                )
        except BaseException:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise

    def write(self, frame: NDArray[Any]) -> None:
        """One BGR frame, (height, width, 3) uint8 as ``info`` says."""
        if self._result is not None or self._aborted:
            state = "closed" if self._result is not None else "aborted"
            raise MediaError(f"{self.job.output}: the render is already {state}")
        if frame.shape != self._shape or frame.dtype != np.uint8:
            h, w, _ = self._shape
            raise MediaError(
                f"frame of shape {frame.shape} {frame.dtype} for {self.job.output}: "
                f"the render takes ({h}, {w}, 3) uint8 BGR frames ({w}x{h})"
            )
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).data)  # no copy for a contiguous frame
        except BrokenPipeError:
            tail = self._stderr_tail(wait=True)
            raise ffmpeg_failure(f"rendering {self.job.output} (it stopped reading frames)", self._proc.poll(),
                                 tail) from None
        self.frames += 1

    def close(self) -> RenderResult:
        """Finish the render (ffmpeg encodes what is buffered, holds the last frame where the frames fell
        short of the duration, and stops at it). On failure the partial output is deleted."""
        if self._result is not None:
            return self._result
        if self._aborted:
            raise MediaError(f"{self.job.output}: the render was aborted")
        try:
            with contextlib.suppress(BrokenPipeError):  # ffmpeg died: its exit status says why
                assert self._proc.stdin is not None
                self._proc.stdin.close()
            code = self._proc.wait(timeout=self.spec.timeout_s)
        except subprocess.TimeoutExpired:
            self.abort()
            raise TransientError(
                f"ffmpeg took longer than {self.spec.timeout_s:.0f} s finishing {self.job.output}"
            ) from None
        except BaseException:
            self.abort()
            raise
        if code != 0:
            tail = self._stderr_tail()
            self.abort()
            raise ffmpeg_failure(f"rendering {self.job.output}", code, tail)
        self._result = RenderResult(self.job.output, time.perf_counter() - self._started, self.command)
        shutil.rmtree(self._folder, ignore_errors=True)
        return self._result

    def abort(self) -> None:
        """Kill ffmpeg, delete the partial output and the temp folder. Idempotent; a no-op after a
        successful ``close`` (the output is then complete)."""
        if self._result is not None:
            return
        _kill(self._proc)
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        self.job.output.unlink(missing_ok=True)
        shutil.rmtree(self._folder, ignore_errors=True)
        self._aborted = True

    def _stderr_tail(self, *, wait: bool = False) -> str:
        if wait:  # a broken pipe comes a moment before ffmpeg's last words
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        try:
            text = self._log.read_bytes().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-6:])

    def __enter__(self) -> FrameRender:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def frame_inputs(job: RenderJob, info: VideoInfo) -> tuple[list[str], str, str]:
    """``build_command``'s inputs for frames on stdin, with the audio and music stream labels: raw BGR
    (as FrameWriter takes them) as input 0 ([0:v:0]), the template's audio (-vn: its video is never
    decoded), then the looped music."""
    inputs = ["-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{info.width}x{info.height}", "-r", f"{info.fps}",
              "-i", "pipe:0"]  # fmt: skip
    audio = music = ""  # unused where absent
    if info.has_audio:
        inputs += ["-vn", "-i", str(job.input)]
        audio = "[1:a:0]"
    if job.music is not None:
        music = f"[{2 if info.has_audio else 1}:a:0]"
        inputs += music_input(job.music)
    return inputs, audio, music


# ------------------------------------------------------------------------------------------ command


def output_duration(job: RenderJob, info: VideoInfo) -> float:
    return job.duration_s if job.duration_s is not None else info.duration_s


def build_command(
    job: RenderJob,
    spec: RenderSpec,
    info: VideoInfo,
    *,
    captions: Path | None = None,
    inputs: Sequence[str] | None = None,
    video: str = VIDEO_IN,
    audio: str = AUDIO_IN,
    music: str = MUSIC_IN,
    stream_s: float | None = None,
) -> list[str]:
    """The one ffmpeg invocation for ``job``. ``captions`` is the SRT ``write_captions`` made (at a
    filter-safe path); a job with captions needs it. ``inputs`` are ffmpeg's input arguments (default:
    ``job.input``, then the looped music) and ``video``/``audio``/``music`` the streams of them the graph
    reads (``audio`` only where ``info.has_audio``, ``music`` only where the job has music); ``stream_s``
    as ``video_graph`` takes it."""
    if (job.caption_text or job.caption_srt) and captions is None:
        raise ValueError("the job has captions: pass the SRT from write_captions()")
    duration = output_duration(job, info)
    if inputs is None:
        inputs = ["-i", str(job.input), *(music_input(job.music) if job.music is not None else [])]
    graph = ";".join(
        video_graph(job, spec, info, duration, captions, video=video, stream_s=stream_s)
        + audio_graph(job, spec, info, duration, audio=audio, music=music)
    )
    return [
        tool("ffmpeg"), "-hide_banner", "-nostdin", "-nostats", "-v", "error", "-y",
        *inputs,
        "-filter_complex", graph,
        "-map", "[v]", "-map", "[a]",
        "-map_metadata", "-1", "-map_chapters", "-1",
        "-c:v", "libx264", "-profile:v", spec.profile, "-pix_fmt", spec.pix_fmt,
        "-crf", str(spec.crf), "-preset", spec.preset, "-r", str(spec.fps),
        "-c:a", spec.audio_codec, "-b:a", spec.audio_bitrate, "-ar", str(spec.sample_rate), "-ac", str(spec.channels),
        "-t", f"{duration:.3f}",
        # use_metadata_tags: without it the mp4 muxer drops keys it does not know (job_id, ...)
        "-movflags", "+faststart+use_metadata_tags",
        *metadata_args(job.metadata),
        str(job.output),
    ]  # fmt: skip


def music_input(path: Path) -> list[str]:
    # Looped so a short track still covers the clip (amix duration=first keeps the clip's length).
    return ["-stream_loop", "-1", "-i", str(path)]


def metadata_args(metadata: Mapping[str, str]) -> list[str]:
    args: list[str] = []
    for key, value in metadata.items():
        args += ["-metadata", f"{key}={value}"]
    return args


def video_graph(
    job: RenderJob,
    spec: RenderSpec,
    info: VideoInfo,
    duration: float,
    captions: Path | None,
    *,
    video: str = VIDEO_IN,
    stream_s: float | None = None,
) -> list[str]:
    """Filter-graph segments from the ``video`` stream to [v]. ``stream_s``: how long that stream is
    (default ``info.duration_s``); its last frame is held over what it falls short of ``duration``."""
    head = ["setpts=PTS-STARTPTS", f"fps={spec.fps}"]  # constant frame rate first: VFR in, CFR out
    shortfall = duration - (info.duration_s if stream_s is None else stream_s)
    if shortfall > 0.5 / spec.fps:  # a mezzanine a little shorter than the template: hold its last frame
        head.append(f"tpad=stop_mode=clone:stop_duration={shortfall:.3f}")
    segments, tail_input = reframe_segments(spec, info, job.face_track, duration, ",".join(head), video=video)
    tail = ["setsar=1"]
    if captions is not None:
        tail.append(subtitles_filter(captions, spec))
    if spec.label_text:
        tail.append(label_filter(spec.label_text, spec))
    tail += fade_filters("fade", spec, duration)
    tail.append(f"format={spec.pix_fmt}")
    segments.append(f"{tail_input}{','.join(tail)}[v]")
    return segments


def reframe_segments(
    spec: RenderSpec,
    info: VideoInfo,
    track: Mapping[str, Any] | None,
    duration: float,
    head: str,
    *,
    video: str = VIDEO_IN,
) -> tuple[list[str], str]:
    """Segments taking ``video`` to a spec-sized picture, and the prefix the rest of the chain goes on."""
    size = f"{spec.width}:{spec.height}"
    if is_target_aspect(info, spec):
        return [], f"{video}{head},scale={size},"
    if spec.reframe == "pad":
        fit = f"scale={size}:force_original_aspect_ratio=decrease:force_divisible_by=2"
        return [], f"{video}{head},{fit},pad={size}:(ow-iw)/2:(oh-ih)/2:black,"
    if spec.reframe == "blur":
        return blur_segments(spec, head, video=video), "[bgfg]"
    crop = face_crop(info, spec, track, duration)
    return [], f"{video}{head},{crop},scale={size},"


def is_target_aspect(info: VideoInfo, spec: RenderSpec) -> bool:
    return abs(info.aspect / spec.aspect - 1.0) <= ASPECT_TOLERANCE


def blur_segments(spec: RenderSpec, head: str, *, video: str = VIDEO_IN) -> list[str]:
    # The background is blurred at 1/4 size and upscaled: +48% time instead of +100% at full size.
    qw, qh = _even(spec.width / 4), _even(spec.height / 4)
    size = f"{spec.width}:{spec.height}"
    return [
        f"{video}{head},split=2[bgsrc][fgsrc]",
        f"[bgsrc]scale={qw}:{qh}:force_original_aspect_ratio=increase,crop={qw}:{qh},"
        f"gblur=sigma={spec.blur_sigma:g},scale={size}[bg]",
        f"[fgsrc]scale={size}:force_original_aspect_ratio=decrease:force_divisible_by=2[fg]",
        "[bg][fg]overlay=(W-w)/2:(H-h)/2[bgfg]",
    ]


# ------------------------------------------------------------------------------------- face reframe


def face_crop(info: VideoInfo, spec: RenderSpec, track: Mapping[str, Any] | None, duration: float) -> str:
    """A 9:16 ``crop``; on a wide source its x follows the smoothed face centre (piecewise linear in t)."""
    w, h = info.width, info.height
    if info.aspect < spec.aspect:  # taller than 9:16: a centred band
        ch = min(h, _even(w / spec.aspect))
        return f"crop={w}:{ch}:0:{(h - ch) // 2}"
    cw = min(w, _even(h * spec.aspect))
    centres = face_centres(track, w) if track else None
    if centres is None:
        return f"crop={cw}:{h}:{(w - cw) // 2}:0"
    fps = float(track["fps"]) if track and track.get("fps") else info.fps
    smoothed = moving_average(centres, max(1, round(spec.face_smoothing_s * fps)))
    keys = crop_keyframes(smoothed, fps, duration, spec.reframe_keyframe_s, cw, w)
    return f"crop={cw}:{h}:{_escape(crop_x_expression(keys))}:0"


def face_centres(track: Mapping[str, Any], width: int) -> list[float] | None:
    """Per track frame, the face box's horizontal centre in input pixels; gaps interpolated linearly,
    the ends held at the first and last known centre. None when no frame has a face. (Plain Python:
    a track is a few thousand numbers, and the post-producer's image needs no numpy for it.)"""
    frames = track.get("frames") or []
    scale = width / float(track.get("width") or width)  # a track made at another size
    known = [(i, (f["box"][0] + f["box"][2]) / 2 * scale) for i, f in enumerate(frames) if f]
    if not known:
        return None
    out: list[float] = []
    k = 0
    for i in range(len(frames)):
        while k + 1 < len(known) and known[k + 1][0] <= i:
            k += 1
        i0, v0 = known[k]
        if i <= i0 or k + 1 == len(known):
            out.append(float(v0))
        else:
            i1, v1 = known[k + 1]
            out.append(v0 + (v1 - v0) * (i - i0) / (i1 - i0))
    return out


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Centred moving average, edges padded with the edge value (no lag, no pull towards 0)."""
    if window <= 1 or len(values) < 2:
        return [float(v) for v in values]
    half = window // 2
    padded = [float(values[0])] * half + [float(v) for v in values] + [float(values[-1])] * (window - 1 - half)
    total = sum(padded[:window])
    out = [total / window]
    for j in range(window, len(padded)):
        total += padded[j] - padded[j - window]
        out.append(total / window)
    return out


def crop_keyframes(
    centres: Sequence[float], fps: float, duration: float, step_s: float, crop_w: int, width: int
) -> list[tuple[float, int]]:
    """(time, crop x) every ``step_s`` over the clip, the window kept inside the picture."""
    count = max(1, math.ceil(duration / step_s)) + 1
    keys = []
    for k in range(count):
        t = min(k * step_s, duration)
        centre = centres[min(len(centres) - 1, round(t * fps))]
        keys.append((t, min(max(round(centre - crop_w / 2), 0), width - crop_w)))
    return keys


def crop_x_expression(keys: Sequence[tuple[float, int]]) -> str:
    """x0 + Σ Δx_k · clip((t - t_k)/Δt_k, 0, 1): piecewise linear in t as a flat sum (no nesting,
    so long clips do not build deep expressions)."""
    expression = str(keys[0][1])
    for (t0, x0), (t1, x1) in zip(keys, keys[1:], strict=False):
        if x1 != x0 and t1 > t0:
            expression += f"{x1 - x0:+d}*clip((t-{t0:.3f})/{t1 - t0:.3f},0,1)"
    return expression


# ------------------------------------------------------------------------------- captions and label


def write_captions(job: RenderJob, spec: RenderSpec, duration: float, folder: Path) -> Path | None:
    """The job's captions as an SRT at a filter-safe path in ``folder`` (paths with ' : , break the
    subtitles filter, so a given SRT is copied rather than referenced)."""
    target = folder / "captions.srt"
    if job.caption_srt is not None:
        shutil.copyfile(job.caption_srt, target)
        return target
    if job.caption_text and job.caption_text.strip():
        target.write_text(srt_from_text(job.caption_text, duration, spec.caption_max_chars), encoding="utf-8")
        return target
    return None


def srt_from_text(text: str, duration: float, max_chars: int) -> str:
    """Words in cues of at most ``max_chars``, each shown for a share of the clip proportional to its length."""
    chunks = caption_chunks(text, max_chars)
    total = sum(len(c) for c in chunks)
    cues, start = [], 0.0
    for n, chunk in enumerate(chunks, 1):
        end = duration if n == len(chunks) else start + duration * len(chunk) / total
        cues.append(f"{n}\n{_srt_time(start)} --> {_srt_time(end)}\n{chunk}\n")
        start = end
    return "\n".join(cues)


def caption_chunks(text: str, max_chars: int) -> list[str]:
    # Braces, angle brackets and backslashes would reach libass as override tags or markup.
    words = re.sub(r"[{}<>\\]", "", text).split()
    chunks: list[str] = []
    for word in words:
        if chunks and len(chunks[-1]) + 1 + len(word) <= max_chars:
            chunks[-1] += " " + word
        else:
            chunks.append(word)
    return chunks


def subtitles_filter(srt: Path, spec: RenderSpec) -> str:
    style = (
        f"FontName={spec.caption_font},FontSize={spec.caption_font_size},PrimaryColour=&H00FFFFFF,"
        f"OutlineColour=&H00000000,BorderStyle=1,Outline=2,Shadow=0,Alignment=2,MarginV={spec.caption_margin_v}"
    )
    return f"subtitles=filename={_escape(str(srt))}:fontsdir={_escape(str(spec.fonts_dir))}:force_style={_escape(style)}"


def label_filter(text: str, spec: RenderSpec) -> str:
    margin = spec.label_margin_px
    x = str(margin) if spec.label_position.endswith("left") else f"w-tw-{margin}"
    y = str(margin * 2) if spec.label_position.startswith("top") else f"h-th-{margin * 2}"
    font = spec.fonts_dir / spec.label_font_file
    return (
        f"drawtext=fontfile={_escape(str(font))}:text={_escape(text)}:expansion=none:"
        f"fontsize={spec.label_font_px}:fontcolor=white:box=1:boxcolor=black@0.45:boxborderw=14:x={x}:y={y}"
    )


def fade_filters(name: str, spec: RenderSpec, duration: float) -> list[str]:
    """``fade``/``afade`` in and out; fades shrink on clips shorter than both together."""
    fade_in, fade_out = spec.fade_in_s, spec.fade_out_s
    if fade_in + fade_out > duration > 0:
        fade_in, fade_out = (v * duration / (fade_in + fade_out) for v in (fade_in, fade_out))
    filters = []
    if fade_in > 0:
        filters.append(f"{name}=t=in:st=0:d={fade_in:.3f}")
    if fade_out > 0:
        filters.append(f"{name}=t=out:st={duration - fade_out:.3f}:d={fade_out:.3f}")
    return filters


# -------------------------------------------------------------------------------------------- audio


def audio_graph(
    job: RenderJob,
    spec: RenderSpec,
    info: VideoInfo,
    duration: float,
    *,
    audio: str = AUDIO_IN,
    music: str = MUSIC_IN,
) -> list[str]:
    """Filter-graph segments from the ``audio`` stream (where ``info.has_audio``) and the ``music``
    stream (where the job has music) to [a]."""
    layout = "stereo" if spec.channels == 2 else f"{spec.channels}c"
    to_spec = f"aresample={spec.sample_rate},aformat=channel_layouts={layout}"
    if info.has_audio:  # padded with silence: a clip whose audio ends early still gets audio to the end
        segments = [f"{audio}asetpts=PTS-STARTPTS,{to_spec},apad[orig]"]
    else:  # a template without audio still needs an audio track
        segments = [f"anullsrc=r={spec.sample_rate}:cl={layout}[orig]"]
    mixed = "[orig]"
    if job.music is not None:
        segments.append(f"{music}{to_spec},volume={spec.music_gain_db:g}dB[music]")
        # duration=first: the clip's length, not the music's; normalize=0: keep both levels as set
        segments.append("[orig][music]amix=inputs=2:duration=first:normalize=0[mix]")
        mixed = "[mix]"
    chain = [
        f"loudnorm=I={spec.loudness_lufs:g}:TP={spec.true_peak_db:g}:LRA={spec.loudness_range:g}",
        f"aresample={spec.sample_rate}",  # loudnorm outputs 192 kHz; ffmpeg would otherwise pick 96 kHz
        *fade_filters("afade", spec, duration),
        f"aformat=channel_layouts={layout}",
    ]
    segments.append(f"{mixed}{','.join(chain)}[a]")
    return segments


# ------------------------------------------------------------------------------------------ helpers


def _escape(value: str) -> str:
    """A filter option value escaped for both levels ffmpeg unescapes: the option parser (' : \\)
    and then the filter graph parser (' \\ [ ] , ;)."""
    for char in "\\':":
        value = value.replace(char, "\\" + char)
    for char in "\\'[],;":
        value = value.replace(char, "\\" + char)
    return value


def _filter_safe(path: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9_./-]+", path) is not None


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def _srt_time(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"
