"""Whose face the tracker follows: the template's performer, known by identity embeddings, and the
other faces the clip shows (a drawing on a shirt, a poster, a second person), known so that a face
that looks more like one of them than like the performer is refused.

``profile_performer`` builds this from a handful of frames sampled over the whole clip, before the
swap: the performer is the face that leads (the largest, clearly) in most samples. A sample where the
performer is hidden and a decoy leads anyway is found as an outlier (far from the other leads) and
counted among the others. Without a profile, the tracker learns the performer from its first lock."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import cv2
from numpy.typing import NDArray

from reelfab.faces.types import Embedding, Face, FaceEngine

LEAD_MARGIN = 1.2  # a face leads a sample when it is this much larger than the next one
MAX_REFERENCES = 8
T = TypeVar("T")
DETECT_WIDTH = 540  # samples are searched at most this wide (the detector's cost grows with area)


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    distance: float  # to the nearest reference of the performer
    reason: str = ""  # why not, for logs and reports


@dataclass(frozen=True)
class Performer:
    """``references``: embeddings of the performer; ``others``: of other faces in the clip;
    ``gate``: a face farther than this from every reference is not the performer."""

    references: tuple[Embedding, ...]
    others: tuple[Embedding, ...] = ()
    gate: float = 0.6

    def distance(self, embedding: Embedding) -> float:
        return min((embedding.distance(r) for r in self.references), default=math.inf)

    def judge(self, embedding: Embedding) -> Verdict:
        """Accepted when within ``gate`` of the performer and nearer the performer than any other face."""
        mine = self.distance(embedding)
        if mine > self.gate:
            return Verdict(False, mine, f"identity distance {mine:.2f} to the performer is over {self.gate:.2f}")
        theirs = min((embedding.distance(o) for o in self.others), default=math.inf)
        if theirs < mine:
            return Verdict(False, mine, f"nearer another face of the clip ({theirs:.2f}) than the performer ({mine:.2f})")
        return Verdict(True, mine)

    def learn(self, embedding: Embedding) -> Performer:
        """With one more reference (the oldest learnt ones go first past MAX_REFERENCES)."""
        kept = (*self.references, embedding)[-MAX_REFERENCES:]
        return replace(self, references=kept)


def profile_performer(
    engine: FaceEngine, samples: Iterable[NDArray[Any]], *, gate: float | None = None, references: int = 4
) -> Performer | None:
    """The performer of a clip from ``samples`` (frames spread over it); ``None`` when no sample has
    a face. ``gate`` defaults to the engine's threshold for photographs (``identity_threshold``).
    Embeddings are the expensive part (dlib's: ~90 ms on one core), so every sample is searched but
    only ``references`` leads, spread over the clip, and the faces that do not lead are embedded."""
    gate = engine.identity_threshold("photo") if gate is None else gate
    leads: list[tuple[NDArray[Any], Face]] = []
    others: list[tuple[NDArray[Any], Face]] = []
    for frame in samples:
        faces = sorted(detect_sample(engine, frame), key=lambda f: -f.size)
        if not faces:
            continue
        if len(faces) == 1 or faces[0].size >= LEAD_MARGIN * faces[1].size:
            leads.append((frame, faces[0]))
            others.extend((frame, f) for f in faces[1:])
        else:  # no clear lead in this sample: its faces are judged later, against the leads
            others.extend((frame, f) for f in faces)
    if not leads:
        return None
    lead_embeddings = [engine.embed(frame, face) for frame, face in _spread(leads, references)]
    centre = _medoid(lead_embeddings)
    near = [e for e in lead_embeddings if e.distance(centre) <= gate / 2]
    far = [e for e in lead_embeddings if e.distance(centre) > gate / 2]  # a decoy led while the performer hid
    other_embeddings = [engine.embed(frame, face) for frame, face in _spread(others, 2 * MAX_REFERENCES)]
    # a face of the clip that matches the performer is the performer, seen without a clear lead
    strangers = [e for e in [*other_embeddings, *far] if min(e.distance(r) for r in near) > gate / 2]
    return Performer(tuple(near), tuple(strangers), gate)


def detect_sample(engine: FaceEngine, frame: NDArray[Any]) -> list[Face]:
    """Faces of ``frame``, searched at most DETECT_WIDTH wide, with landmarks at full resolution."""
    h, w = frame.shape[:2]
    factor = min(1.0, DETECT_WIDTH / max(min(w, h), 1))
    small = frame if factor == 1 else cv2.resize(frame, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    faces = [f.scaled(1 / factor) for f in engine.detect(small)]
    if factor == 1:
        return faces
    return [replace(engine.refine(frame, f), box=f.box, score=f.score) for f in faces]


def _medoid(embeddings: list[Embedding]) -> Embedding:
    """The embedding with the smallest summed distance to the others."""
    return min(embeddings, key=lambda e: sum(e.distance(o) for o in embeddings))


def _spread(items: list[T], limit: int) -> list[T]:
    """At most ``limit`` of ``items``, evenly spaced through the list (which follows the clip)."""
    if len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]
