"""ffmpeg plumbing: probing, frames through pipes, and the errors bad files get."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from reelfab.media.errors import MediaError
from reelfab.media.frames import FrameWriter, read_frames, read_image
from reelfab.media.probe import probe
from reelfab.media.tools import tool


def _lavfi(path: Path, *args: str, seconds: float = 1.0, size: str = "320x240", rate: int = 25, audio: bool = True) -> Path:
    cmd = [tool("ffmpeg"), "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "aac"]
    cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p", *args, str(path)]
    subprocess.run(cmd, check=True)
    return path


def test_probe_reports_what_the_pipeline_needs(tmp_path: Path) -> None:
    info = probe(_lavfi(tmp_path / "a.mp4", seconds=2.0))
    assert (info.width, info.height, info.fps) == (320, 240, 25.0)
    assert abs(info.duration_s - 2.0) < 0.05 and info.frames == 50
    assert info.has_audio and info.audio_codec == "aac" and info.codec == "h264"
    assert info.rotation == 0 and not info.variable_frame_rate


def test_a_clip_without_audio_says_so(tmp_path: Path) -> None:
    info = probe(_lavfi(tmp_path / "silent.mp4", audio=False))
    assert not info.has_audio and info.audio_codec is None and info.sample_rate is None


def test_rotation_metadata_is_applied_to_size_and_frames(tmp_path: Path) -> None:
    src = _lavfi(tmp_path / "flat.mp4", audio=False)
    rotated = tmp_path / "rotated.mp4"
    subprocess.run([tool("ffmpeg"), "-v", "error", "-y", "-i", str(src), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated)], check=True)
    info = probe(rotated)
    assert info.rotation in (90, 270) and (info.width, info.height) == (240, 320)
    frame = next(read_frames(rotated, info=info))
    assert frame.shape == (320, 240, 3)


def test_frames_stream_in_order_and_can_be_resampled(tmp_path: Path) -> None:
    clip = _lavfi(tmp_path / "a.mp4", seconds=1.0)
    frames = list(read_frames(clip))
    assert len(frames) == 25 and frames[0].shape == (240, 320, 3) and frames[0].dtype == np.uint8
    assert not np.array_equal(frames[0], frames[10])  # testsrc2 moves
    assert len(list(read_frames(clip, fps=10, size=(160, 120)))) == 10


@pytest.mark.parametrize("codec", ["ffv1", "x264rgb-lossless"])
def test_lossless_mezzanines_are_bit_exact_and_x264_lossless_is_near(tmp_path: Path, codec: str) -> None:
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(5)]
    with FrameWriter(tmp_path / "m.mkv", 96, 64, 25, codec=codec) as w:
        for f in frames:
            w.write(f)
    back = list(read_frames(tmp_path / "m.mkv"))
    assert len(back) == 5 and all(np.array_equal(a, b) for a, b in zip(frames, back, strict=True))

    smooth = [np.full((64, 96, 3), (10 * i, 120, 200 - 10 * i), np.uint8) for i in range(5)]
    with FrameWriter(tmp_path / "m.mp4", 96, 64, 25, codec="x264-lossless") as w:
        for f in smooth:
            w.write(f)
    back = list(read_frames(tmp_path / "m.mp4"))
    assert max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(smooth, back, strict=True)) <= 2


def test_writer_muxes_the_audio_of_another_file(tmp_path: Path) -> None:
    src = _lavfi(tmp_path / "a.mp4", seconds=1.0)
    with FrameWriter(tmp_path / "out.mp4", 320, 240, 25, audio_from=src) as w:
        for f in read_frames(src):
            w.write(f)
    info = probe(tmp_path / "out.mp4")
    assert info.has_audio and info.frames == 25


def test_an_aborted_write_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError), FrameWriter(out, 32, 32, 25) as w:
        w.write(np.zeros((32, 32, 3), np.uint8))
        raise RuntimeError("swapper crashed")
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), (b"", "empty"), (b"this is not a video at all" * 10, "not a readable video")],
)
def test_bad_videos_get_a_clear_error(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "bad.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MediaError, match=message):
        probe(path)


def test_a_truncated_video_is_refused_or_yields_what_it_has(tmp_path: Path) -> None:
    clip = _lavfi(tmp_path / "a.mp4", seconds=1.0)
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(MediaError):
        list(read_frames(cut))


@pytest.mark.parametrize(("content", "message"), [(None, "no such file"), (b"", "not a readable image"), (b"\x89PNG garbage", "not a readable image")])
def test_bad_images_get_a_clear_error(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "face.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MediaError, match=message):
        read_image(path)
