"""Whose face a finished video shows, by identity embedding: the demo's proof that a revoked or an
unconsented person is in no published video rests on this, not only on the jobs' lineage.

``IdentityCheck`` embeds one reference image per person once, then, per video, every face of
``samples`` frames spread over it (detected at most ``DETECT_WIDTH`` wide, as the swapper's performer
profile does). ``VideoIdentity.distances`` holds, per reference, the smallest distance over all those
faces: "contains" asks whether *any* frame shows the person. Faces are pooled, not told apart: in a
clip that showed two cast members, the one reading farther would be judged against the nearer one's
distance and could be missed (the demo's templates show one performer). On the calibration below the
median over frames and the mean embedding left the true source a little nearer the top (worst deficit
0.024 and 0.019, the minimum 0.030) but flagged as many others or more at the margin that covers it
(of 135 pairs: median 10 at 0.03, mean 7 at 0.02, minimum 6 at 0.03), and only the minimum sees a
face that some frames show.

The rule (``contains``): a person is in the video when their distance is within ``margin`` of the
nearest reference's and under ``ceiling``. Absolute thresholds alone do not work: a classical swap onto
a template performer is a blend, and dlib sees the generated people close together. The true source
measured 0.20-0.35 from its reference, the nearest other person 0.26-0.37, and the unswapped performer
of one template 0.29 from person 1; the engine's "synthetic" threshold (0.2) would refuse all but one
true source. Only the ranking carries identity, and not cleanly: nearest-neighbour picked the true
source in 16 of 18 clips (person 2 read as person 1 on two templates, by 0.022 and 0.028). So the rule
is "cannot be ruled out": for consent a missed face is the costly error, a false alarm only fails the
demo loudly. ``margin`` covers the worst true-source deficit measured, 0.038 (below); 0.05 would double
the false flags.

Calibration (classical engine, 8 samples): references ``virtual_person(seed)`` for people 1-10 and the
performers 1001-1003; people 1-5 swapped by ``reelfab.faces.clip.swap_clip`` onto three 3 s 540x960
templates (15 clips), and three demo-like finals (people 1, 3, 2 swapped onto 6 s 720x1280 templates,
rendered to 1080x1920 by ``reelfab.media.render``):

- the true source within 0.028 of the nearest reference in 18 of 18 (0.030 on another set of frames);
- other people flagged at margin 0.04: 13 of 162 pairs with people 1-10 as the cast, 10 of 72 with
  people 1-5 (6 and 5 at 0.03). Most are lookalikes: person 1 in clips of 2 and 4 (references 0.29
  and 0.27 apart), 5 in clips of 3 (0.36); person 2's swaps, the poorest (its nearest reference up to
  0.32 away), also flagged 4, 5, 7 and 9. Clips of people 1 and 5 flagged no one else; 6 and 8 were
  flagged in no clip (0.049 and 0.081 or more over the nearest);
- an unswapped template (as a swap that left the performer would be) read as a cast member in 6 of 30
  pairs; with its performer among the references, in 1 (the performer then nearest, 0.19-0.30, and
  no true source lost). So give the templates' performers as references too, under ids that
  consented to nothing: they compete for "nearest" and keep a leftover performer from being read as
  the cast member it resembles;
- the final render (upscaled to 1080x1920, caption and label added) moved the true source's distance
  by at most 0.006 from the swapped clip's;
- the demo cast's seeds (``cast.py``: 21-28, the stranger 99), 21 clips on the same templates: the
  stranger's reference is 0.26 from seed 21's, and all three clips of 21 read nearest to 99 (21 itself
  0.033-0.038 further, the worst deficit of all 42 swapped clips: caught at 0.04, missed at 0.03). Twins
  (references under ~0.30 apart) cannot be told apart in a swap; a stranger 0.41 or more from every
  cast member (seed 91) was flagged in none of the 18 clips of 21-28 (0.106 or more over the nearest)
  and was found in all three of its own.

identify() takes ~1.7 s for a 6 s 1080x1920 final on a 2-core machine (decode, 8 detections and
embeddings); each reference ~0.3 s, once. The rule's numbers are dlib's (``RULES``); another embedder
has none until it is measured."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
from numpy.typing import NDArray

from reelfab.faces.errors import NoFaceError
from reelfab.faces.identity import detect_sample
from reelfab.faces.types import Embedding, FaceEngine, best_face
from reelfab.media.errors import MediaError
from reelfab.media.frames import read_image

# per embedder: (margin, ceiling); the module docstring gives the measurements behind them
RULES = {"dlib_resnet_v1": (0.04, 0.40)}


@dataclass(frozen=True)
class VideoIdentity:
    """``nearest``: the reference closest to the video's faces (None: no face in any sampled frame);
    ``distances``: per reference, the smallest distance over every face of every sampled frame."""

    nearest: str | None
    distance: float | None
    distances: dict[str, float]
    frames_with_face: int
    frames_sampled: int


class IdentityCheck:
    """Identifies the faces of videos among ``references`` (subject id -> an image of that person's
    face). References may include people who are no cast member (the templates' performers): they
    compete for "nearest" so a leftover performer is not read as the cast member it resembles."""

    def __init__(
        self, references: Mapping[str, Path], engine: FaceEngine | None = None, samples: int = 8
    ) -> None:
        if not references:
            raise ValueError("an identity check needs at least one reference face")
        if samples < 1:
            raise ValueError(f"samples must be at least 1, not {samples}")
        if engine is None:
            from reelfab.faces.backends import get_engine
            from reelfab.settings import get_settings

            engine = get_engine("classical", get_settings())
        if engine.embedder not in RULES:
            raise ValueError(
                f"no identity rule calibrated for the {engine.embedder} embedder: one of {', '.join(RULES)}"
            )
        self.engine = engine
        self.samples = samples
        self.margin, self.ceiling = RULES[engine.embedder]
        self.references = {subject: self._reference(subject, path) for subject, path in references.items()}

    def _reference(self, subject: str, path: Path) -> Embedding:
        image = read_image(path)
        face = best_face(detect_sample(self.engine, image))
        if face is None:
            raise NoFaceError(f"{path}: no face found in the reference image of {subject}")
        return self.engine.embed(image, face)

    def identify(self, video: Path) -> VideoIdentity:
        """The faces of ``samples`` frames spread evenly over ``video``, measured against every reference."""
        distances = dict.fromkeys(self.references, math.inf)
        with_face = sampled = 0
        for frame in _sample_frames(video, self.samples):
            sampled += 1
            faces = detect_sample(self.engine, frame)
            with_face += bool(faces)
            for face in faces:
                embedding = self.engine.embed(frame, face)
                for subject, reference in self.references.items():
                    distances[subject] = min(distances[subject], embedding.distance(reference))
        if not with_face:
            return VideoIdentity(None, None, {}, 0, sampled)
        nearest = min(distances, key=distances.__getitem__)
        return VideoIdentity(nearest, distances[nearest], distances, with_face, sampled)

    def contains(self, video_identity: VideoIdentity, subject_id: str) -> bool:
        """Whether the video may show ``subject_id``: their distance is within ``margin`` of the
        nearest reference's and under ``ceiling`` (the module docstring says why)."""
        if subject_id not in self.references:
            raise KeyError(f"{subject_id!r} is not among the references: {', '.join(self.references)}")
        if video_identity.distance is None:
            return False
        mine = video_identity.distances[subject_id]
        return mine <= video_identity.distance + self.margin and mine <= self.ceiling


def _sample_frames(video: Path, samples: int) -> Iterator[NDArray[Any]]:
    """``samples`` frames at even spacing (the middle of each of ``samples`` equal stretches). Frames
    are decoded in order and only the chosen ones converted: no seeking, whose accuracy depends on
    the container."""
    if not video.is_file():
        raise MediaError(f"{video}: no such file")
    capture = cv2.VideoCapture(str(video))
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        if count <= 0:
            raise MediaError(f"{video}: not a readable video (no frames could be decoded)")
        wanted = sorted({min(int((i + 0.5) * count / samples), count - 1) for i in range(samples)})
        index = found = 0
        for target in wanted:
            while index <= target and capture.grab():
                index += 1
            if index <= target:
                break  # the container promised more frames than it holds
            ok, frame = capture.retrieve()
            if ok:
                found += 1
                yield frame
        if not found:
            raise MediaError(f"{video}: not a readable video (no frames could be decoded)")
    finally:
        capture.release()
