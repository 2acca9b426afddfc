"""The delivery-spec check: a file made to spec passes; a wrong one has every mismatch named."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from reelfab.media.render import RenderSpec
from reelfab.media.spec_check import top_level_boxes, verify
from reelfab.media.tools import tool

SPEC = RenderSpec()


def _make(path: Path, *, size: str, rate: int, audio: list[str] | None, video: list[str], seconds: float = 2.0,
          movflags: str = "+faststart") -> Path:  # fmt: skip
    cmd = [
        tool("ffmpeg"),
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={size}:rate={rate}:duration={seconds}",
    ]
    if audio is not None:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", *audio]
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", *video]
    cmd += ["-movflags", movflags] if movflags else []
    cmd.append(str(path))
    subprocess.run(cmd, check=True)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spec")


def test_a_file_made_to_spec_passes(folder: Path) -> None:
    good = _make(folder / "good.mp4", size="1080x1920", rate=25, seconds=1.0,
                 audio=["-c:a", "aac", "-ar", "48000", "-ac", "2"],
                 video=["-profile:v", "high", "-x264-params", "8x8dct=1", "-pix_fmt", "yuv420p"],
                 movflags="+faststart+use_metadata_tags")  # fmt: skip
    check = verify(good, SPEC, expected_duration_s=1.0)
    assert check.passed, check.problems
    assert check.faststart and check.problems == []
    assert (check.width, check.height, check.fps, check.sample_rate, check.channels) == (
        1080,
        1920,
        25.0,
        48000,
        2,
    )


def test_every_mismatch_is_named(folder: Path) -> None:
    wrong = _make(folder / "wrong.mp4", size="720x1280", rate=30, seconds=2.0,
                  audio=["-c:a", "libmp3lame", "-ar", "44100", "-ac", "1"],
                  video=["-pix_fmt", "yuv444p"], movflags="")  # fmt: skip
    check = verify(wrong, SPEC, expected_duration_s=6.0)
    assert not check.passed
    assert check.problems == [
        "video profile is High 4:4:4 Predictive, expected High",
        "pixel format is yuv444p, expected yuv420p",
        "video is 720x1280, expected 1080x1920",
        "frame rate is 30 fps, expected 25 (constant)",
        "audio codec is mp3, expected aac",
        "audio sample rate is 44100 Hz, expected 48000",
        "audio has 1 channel(s), expected 2",
        f"duration is {check.duration_s:.3f} s, expected 6.000 ± 0.1 s",
        "not faststart: the moov box comes after mdat",
    ]


def test_missing_streams_and_unreadable_files_are_problems_not_exceptions(folder: Path) -> None:
    silent = _make(folder / "silent.mp4", size="1080x1920", rate=25, seconds=1.0, audio=None,
                   video=["-profile:v", "high", "-x264-params", "8x8dct=1", "-pix_fmt", "yuv420p"])  # fmt: skip
    assert verify(silent, SPEC, 1.0).problems == ["no audio stream"]
    assert verify(folder / "nothing.mp4", SPEC, 1.0).problems == [f"{folder / 'nothing.mp4'}: no such file"]
    junk = folder / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    check = verify(junk, SPEC, 1.0)
    assert not check.passed and "not a readable video" in check.problems[0]


def test_box_walk_reads_64_bit_sizes_and_stops_on_garbage(tmp_path: Path) -> None:
    data = struct.pack(">I4s", 16, b"ftyp") + b"isom0000"
    data += struct.pack(">I4sQ", 1, b"mdat", 24) + b"\x00" * 8
    data += struct.pack(">I4s", 8, b"moov")
    data += struct.pack(">I4s", 3, b"junk")
    path = tmp_path / "boxes.mp4"
    path.write_bytes(data)
    assert top_level_boxes(path) == ["ftyp", "mdat", "moov"]
