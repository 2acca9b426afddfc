"""The demo's identity check on real classical swaps: a swapped clip shows its source and no one else,
a clip without a face shows no one, and what is not a video is refused by name.

People 1 (A) and 5 (B) swap; person 8 (U) never does: in the calibration (see the module docstring)
they are the clearly separated ones, so these controls test the check, not dlib's near-misses."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from reelfab.devtools.demo.identity import IdentityCheck, VideoIdentity
from reelfab.devtools.synthetic import template_clip, virtual_person
from reelfab.faces.clip import swap_clip
from reelfab.faces.errors import NoFaceError
from reelfab.media.errors import MediaError
from reelfab.media.tools import tool

A, B, U, PERFORMER = "person-1", "person-5", "person-8", "performer"
CAST = (A, B, U)


@pytest.fixture(scope="module")
def check(tmp_path_factory: pytest.TempPathFactory) -> IdentityCheck:
    folder = tmp_path_factory.mktemp("references")
    references = {}
    for subject, seed in ((A, 1), (B, 5), (U, 8), (PERFORMER, 1001)):  # 1001: template seed 1's performer
        references[subject] = folder / f"{subject}.png"
        cv2.imwrite(str(references[subject]), virtual_person(seed, size=512))
    return IdentityCheck(references)


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory, check: IdentityCheck) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    template = template_clip(
        folder / "template.mp4", seed=1, seconds=2.0, size=(540, 960), with_audio=False
    ).path
    made = {"template": template, "faceless": folder / "faceless.mp4"}
    for subject, seed in ((A, 1), (B, 5)):
        made[subject] = swap_clip(
            check.engine, virtual_person(seed, size=512), template, folder / f"{subject}.mp4"
        ).output
    testsrc = "-v error -y -f lavfi -i testsrc=size=540x960:rate=25:duration=1 -c:v libx264 -pix_fmt yuv420p"
    subprocess.run([tool("ffmpeg"), *testsrc.split(), str(made["faceless"])], check=True)
    return made


def present(check: IdentityCheck, identity: VideoIdentity) -> set[str]:
    return {subject for subject in CAST if check.contains(identity, subject)}


@pytest.mark.parametrize("source", [A, B])
def test_a_swapped_clip_shows_its_source_and_no_one_else(
    check: IdentityCheck, videos: dict[str, Path], source: str
) -> None:
    identity = check.identify(videos[source])
    print(f"\n{source}: {identity}")
    assert identity.frames_sampled == 8 and identity.frames_with_face >= 6
    assert identity.nearest == source
    assert present(check, identity) == {source}  # the other consenting person and the unconsented one: absent


def test_the_unswapped_template_shows_its_performer_and_no_cast_member(
    check: IdentityCheck, videos: dict[str, Path]
) -> None:
    identity = check.identify(videos["template"])
    assert identity.nearest == PERFORMER and check.contains(identity, PERFORMER)
    assert present(check, identity) == set()


def test_a_clip_without_a_face_shows_no_one(check: IdentityCheck, videos: dict[str, Path]) -> None:
    identity = check.identify(videos["faceless"])
    assert identity == VideoIdentity(None, None, {}, 0, 8)
    assert present(check, identity) == set() and not check.contains(identity, PERFORMER)


def test_the_rule_is_nearness_to_the_nearest_under_a_ceiling(check: IdentityCheck) -> None:
    def identity(**distances: float) -> VideoIdentity:
        nearest = min(distances, key=distances.__getitem__)
        return VideoIdentity(nearest, distances[nearest], distances, 8, 8)

    near = dict(zip(CAST, (0.25, 0.25 + check.margin - 0.001, 0.25 + check.margin + 0.001), strict=True))
    assert present(check, identity(**near)) == {A, B}  # B cannot be ruled out, U can
    far = dict.fromkeys(CAST, check.ceiling + 0.01)
    assert present(check, identity(**far)) == set()  # a face of no one in the cast
    with pytest.raises(KeyError, match="stranger"):
        check.contains(identity(**near), "stranger")


def test_what_is_not_a_video_is_refused_by_name(check: IdentityCheck, tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="missing.mp4: no such file"):
        check.identify(tmp_path / "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(MediaError, match="notes.mp4: not a readable video"):
        check.identify(text)


def test_a_reference_without_a_face_is_refused_by_name(tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(NoFaceError, match="blank.png: no face found in the reference image of nobody"):
        IdentityCheck({"nobody": blank})
