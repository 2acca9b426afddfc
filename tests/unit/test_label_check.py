"""The visible AI label, looked for in the picture (reelfab.media.label_check): what the post-producer
requires of a video it signs without having rendered it (the swapper's fused mode)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reelfab.media.label_check import label_problem
from reelfab.media.render import RenderJob, RenderSpec, label_filter, render
from reelfab.media.tools import tool
from reelfab_post_producer.adapters import FfprobeSpecCheck


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("label") / "c.mp4"
    subprocess.run([tool("ffmpeg"), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=360x640:rate=25:duration=1.6",
                    "-f", "lavfi", "-i", "sine=frequency=330:duration=1.6", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    str(path)], check=True)
    return path


def _render(clip: Path, out: Path, spec: RenderSpec) -> Path:
    render(RenderJob(input=clip, output=out, duration_s=1.6, caption_text="captions do not count"), spec)
    return out


def test_a_rendered_video_shows_its_label_and_one_without_it_does_not(clip: Path, tmp_path: Path) -> None:
    labelled = _render(clip, tmp_path / "labelled.mp4", RenderSpec())
    assert label_problem(labelled, RenderSpec(), 1.6) is None
    assert FfprobeSpecCheck(RenderSpec()).label(labelled, 1.6) is None  # what the post-producer calls
    bare = _render(clip, tmp_path / "bare.mp4", RenderSpec(label_text=None))  # the same video, unlabelled
    problem = label_problem(bare, RenderSpec(), 1.6)
    assert problem is not None and "'AI-generated' is not in the picture at the top-left corner" in problem
    assert label_problem(bare, RenderSpec(label_text=None), 1.6) is None  # a deployment without a label


def test_the_label_elsewhere_or_without_its_box_is_not_the_label(clip: Path, tmp_path: Path) -> None:
    labelled = _render(clip, tmp_path / "labelled.mp4", RenderSpec())
    assert "bottom-right corner" in (label_problem(labelled, RenderSpec(label_position="bottom-right"), 1.6) or "")
    # white text where the label goes, on a white picture: every glyph pixel is lit, but there is no box
    spec = RenderSpec()
    plain = tmp_path / "plain.mp4"
    text_only = label_filter("AI-generated", spec).replace("box=1", "box=0")
    subprocess.run([tool("ffmpeg"), "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=white:s=1080x1920:r=25:d=1",
                    "-vf", text_only, "-pix_fmt", "yuv420p", "-c:v", "libx264", str(plain)], check=True)
    assert "100% of its glyph pixels lit, contrast 0" in (label_problem(plain, spec, 1.0) or "")


def test_a_file_with_no_frame_there_is_a_clear_error(clip: Path, tmp_path: Path) -> None:
    from reelfab.media.errors import MediaError

    with pytest.raises(MediaError, match=r"no 1080x1920 frame to look for the label in"):
        label_problem(clip, RenderSpec(), 1.6)  # 360x640: not a delivery-size picture
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty.mp4"):
        label_problem(empty, RenderSpec(), 1.0)
