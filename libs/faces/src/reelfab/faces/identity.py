"""Whose face the tracker follows: the template's performer, known by identity embeddings, and the
other faces the clip shows (a drawing on a shirt, a poster, a second person), known so that a face
that looks more like one of them than like the performer is refused.

``profile_performer`` builds this from a handful of frames sampled over the whole clip, before the
swap: the performer is the face that is largest through the clip (see there). Without a profile, the
tracker learns the performer from its first lock."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import cv2
import numpy as np
from numpy.typing import NDArray

from reelfab.faces.types import Embedding, Face, FaceEngine

MAX_REFERENCES = 8
SIMILAR_SIZE = 0.9
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


def profile_performer(
    engine: FaceEngine, samples: Iterable[NDArray[Any]], *, gate: float | None = None, references: int = 4
) -> Performer | None:
    """The performer of a clip from ``samples`` (frames spread over it, in order); ``None`` when no
    sample has a face. ``gate`` defaults to the engine's threshold for photographs.

    Faces are linked from sample to sample by position into tracks; among those seen in at least two
    samples (a face the detector finds once decides nothing), the performer's is the one seen in most
    samples of those whose median face is at least ``SIMILAR_SIZE`` of the largest (a print on a shirt
    or a poster is smaller than the performer's face, a second person further back too; between two
    people of a size, the one on screen longer). The other tracks are other faces when they are seen beside the
    performer in a sample, or are far from the performer's identity (a track seen alone and near it is
    the performer, where the linking lost it). Embeddings are the expensive part (dlib's: ~0.1 s on one
    core), so only ``references`` faces of the performer's track and two of every other are embedded."""
    gate = engine.identity_threshold("photo") if gate is None else gate
    tracks: list[list[tuple[int, NDArray[Any], Face]]] = []
    for index, frame in enumerate(samples):
        for face in detect_sample(engine, frame):
            track = _nearest(tracks, face, index)
            if track is None:
                tracks.append([(index, frame, face)])
            else:
                track.append((index, frame, face))
    if not tracks:
        return None
    present = [t for t in tracks if len(t) >= 2] or tracks
    sizes = {id(t): float(np.median([f.size for _, _, f in t])) for t in present}
    largest = max(sizes.values())
    # among the faces about as large as the largest, the one on screen longest
    lead = max((t for t in present if sizes[id(t)] >= SIMILAR_SIZE * largest), key=lambda t: (len(t), sizes[id(t)]))
    mine = [engine.embed(frame, face) for _, frame, face in _spread(lead, references)]
    centre = _medoid(mine)
    near = tuple(e for e in mine if e.distance(centre) <= gate)
    lead_samples = {i for i, _, _ in lead}
    strangers = []
    for track in tracks:
        if track is lead:
            continue
        beside = any(i in lead_samples for i, _, _ in track)
        for _, frame, face in _spread(track, 2):
            embedding = engine.embed(frame, face)
            if beside or min(embedding.distance(r) for r in near) > 0.75 * gate:
                strangers.append(embedding)
    return Performer(near, tuple(_spread(strangers, 2 * MAX_REFERENCES)), gate)


def _nearest(
    tracks: list[list[tuple[int, NDArray[Any], Face]]], face: Face, index: int
) -> list[tuple[int, NDArray[Any], Face]] | None:
    """The track whose last face (in an earlier sample) is within a face size of ``face`` and of a
    similar size."""
    best, best_distance = None, math.inf
    for track in tracks:
        seen_at, _, last = track[-1]
        if seen_at == index:
            continue
        distance = math.dist(_centre(last), _centre(face))
        if distance < min(best_distance, last.size) and 0.6 < face.size / max(last.size, 1e-6) < 1.7:
            best, best_distance = track, distance
    return best


def _centre(face: Face) -> tuple[float, float]:
    return ((face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2)


def detect_sample(engine: FaceEngine, frame: NDArray[Any]) -> list[Face]:
    """Faces of ``frame``, searched at most DETECT_WIDTH wide, with landmarks at full resolution."""
    h, w = frame.shape[:2]
    factor = min(1.0, DETECT_WIDTH / max(min(w, h), 1))
    small = frame if factor == 1 else cv2.resize(frame, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    faces = [f.scaled(1 / factor) for f in engine.detect(small)]
    if not faces and factor < 1:  # a weakly detected face may need the full size
        return engine.detect(frame)
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
