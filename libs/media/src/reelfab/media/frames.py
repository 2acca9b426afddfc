"""Frames in and out of ffmpeg through pipes: no per-frame files on disk.

``read_frames`` decodes any clip ffmpeg can read to BGR uint8 arrays at its displayed orientation
(rotation applied), optionally resampled to a constant frame rate and scaled. ``FrameWriter``
encodes BGR frames (optionally muxing audio from another file) to a file."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from reelfab.media import children
from reelfab.media.errors import MediaError
from reelfab.media.probe import VideoInfo, probe
from reelfab.media.tools import tool


def read_frames(
    path: Path,
    *,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
    info: VideoInfo | None = None,
    start_s: float = 0.0,
    max_frames: int | None = None,
) -> Iterator[NDArray[Any]]:
    """Yield frames of ``path`` as (H, W, 3) uint8 BGR. ``size`` is (width, height)."""
    info = info or probe(path)
    w, h = size or (info.width, info.height)
    filters = []
    if fps:
        filters.append(f"fps={fps}")
    if size:
        filters.append(f"scale={w}:{h}")
    cmd = [tool("ffmpeg"), "-nostdin", "-v", "error"]
    if start_s:
        cmd += ["-ss", f"{start_s:.3f}"]
    cmd += ["-i", str(path), "-map", "0:v:0", "-an", "-sn"]
    if filters:
        cmd += ["-vf", ",".join(filters)]
    if max_frames:
        cmd += ["-frames:v", str(max_frames)]
    cmd += ["-f", "rawvideo", "-pix_fmt", "bgr24", "-"]
    frame_bytes = w * h * 3
    proc = children.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    errors: list[bytes] = []
    drain = threading.Thread(target=lambda: errors.append(proc.stderr.read() if proc.stderr else b""), daemon=True)
    drain.start()
    count = 0
    try:
        assert proc.stdout is not None
        while True:
            buf = proc.stdout.read(frame_bytes)
            if len(buf) < frame_bytes:
                break
            count += 1
            yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        drain.join(timeout=5)
    if count == 0:
        raise MediaError(f"{path}: no frame could be decoded ({b''.join(errors).decode(errors='replace').strip()[-300:]})")


class FrameWriter:
    """Encode BGR frames to ``path``. ``codec`` presets: "x264" (delivery-like, crf), "x264-lossless"
    (qp 0, yuv444p: near-lossless, the colour conversion rounds), "x264rgb-lossless" (libx264rgb qp 0 on
    the BGR frames themselves: bit-exact, and the fastest lossless one: the swapper's mezzanine, in mkv),
    "ffv1" (bit-exact, mkv; 2-3x slower to write and read). Audio from ``audio_from`` is copied in."""

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        fps: float,
        *,
        codec: str = "x264",
        crf: int = 18,
        preset: str = "veryfast",
        audio_from: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.path = path
        self.size = (width, height)
        cmd = [tool("ffmpeg"), "-nostdin", "-v", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}", "-r", f"{fps}", "-i", "-"]
        if audio_from is not None:
            cmd += ["-i", str(audio_from), "-map", "0:v:0", "-map", "1:a:0?", "-c:a", "copy", "-shortest"]
        if codec == "x264":
            cmd += ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p"]
        elif codec == "x264-lossless":
            cmd += ["-c:v", "libx264", "-preset", preset, "-qp", "0", "-pix_fmt", "yuv444p"]
        elif codec == "x264rgb-lossless":
            cmd += ["-c:v", "libx264rgb", "-preset", "ultrafast", "-qp", "0", "-pix_fmt", "bgr24"]
        elif codec == "ffv1":
            cmd += ["-c:v", "ffv1", "-level", "3", "-pix_fmt", "bgr0"]
        else:
            raise ValueError(f"unknown codec preset {codec!r}")
        cmd += [*extra_args, str(path)]
        self.proc = children.popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self.frames = 0

    def write(self, frame: NDArray[Any]) -> None:
        if frame.shape[:2] != (self.size[1], self.size[0]):
            raise ValueError(f"frame of {frame.shape[1]}x{frame.shape[0]} for a {self.size[0]}x{self.size[1]} video")
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        except BrokenPipeError:
            raise MediaError(f"ffmpeg stopped while writing {self.path}: {self._stderr()}") from None
        self.frames += 1

    def close(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        code = self.proc.wait()
        if code != 0:
            raise MediaError(f"ffmpeg failed writing {self.path}: {self._stderr()}")

    def abort(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.path.unlink(missing_ok=True)

    def _stderr(self) -> str:
        return (self.proc.stderr.read().decode(errors="replace").strip()[-400:] if self.proc.stderr else "")

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def read_image(path: Path) -> NDArray[Any]:
    """An image file as BGR uint8; a clear error for what is not one."""
    import cv2

    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise MediaError(f"{path}: not a readable image (empty, corrupt or an unsupported format)")
    return image
