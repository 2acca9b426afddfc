"""What a swap did with each frame, and the gate a job's output must pass.

Every frame gets one status: ``swapped`` (the performer's face was found and swapped), ``held`` (the
face was lost for a moment and the last good swap is held in place, then faded; see tracking), ``lost``
(no performer's face: the frame is left as it is) or ``rejected`` (faces were seen but none was the
performer: a drawing, a poster, another person; the frame is left as it is)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class FrameStatus(StrEnum):
    SWAPPED = "swapped"
    HELD = "held"
    LOST = "lost"
    REJECTED = "rejected"


@dataclass
class SwapReport:
    """Frame counts by status, and two details: ``occluded`` frames (swapped with something kept in
    front of the face) and ``refused_detections`` (faces refused as not the performer)."""

    swapped: int = 0
    held: int = 0
    lost: int = 0
    rejected: int = 0
    occluded: int = 0
    refused_detections: int = 0
    statuses: list[FrameStatus] = field(default_factory=list, repr=False)  # per frame, in order

    def record(self, status: FrameStatus, *, refused: int = 0, occluded: bool = False) -> None:
        setattr(self, status.value, getattr(self, status.value) + 1)
        self.statuses.append(status)
        self.refused_detections += refused
        self.occluded += occluded

    @property
    def frames(self) -> int:
        return self.swapped + self.held + self.lost + self.rejected

    @property
    def swapped_share(self) -> float:
        """Frames with the source face in them (swapped or held), as a share of all frames."""
        return (self.swapped + self.held) / self.frames if self.frames else 0.0

    def as_dict(self) -> dict[str, Any]:
        counts = ("swapped", "held", "lost", "rejected", "occluded", "refused_detections")
        return {**{k: getattr(self, k) for k in counts}, "frames": self.frames,
                "swapped_share": round(self.swapped_share, 4)}

    def summary(self) -> str:
        return (
            f"{self.frames} frames: {self.swapped} swapped, {self.held} held, {self.lost} lost, "
            f"{self.rejected} rejected ({self.refused_detections} faces refused as not the performer)"
        )


@dataclass(frozen=True)
class QualityGate:
    """A swap ships only when the face is in at least ``min_swapped_share`` of its frames."""

    min_swapped_share: float = 0.8

    def __post_init__(self) -> None:
        share = self.min_swapped_share
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 <= share <= 1.0:
            raise ValueError(f"min_swapped_share must be a number within 0..1, not {share!r}")

    def judge(self, report: SwapReport) -> str | None:
        """``None`` when ``report`` passes, else why not (for the job's failure). A clip of no frames
        never passes."""
        if not report.frames:
            return "the clip gave no frames to swap"
        if report.swapped_share >= self.min_swapped_share:
            return None
        return (
            f"the face was swapped in {report.swapped_share:.0%} of the frames, under the "
            f"{self.min_swapped_share:.0%} required ({report.summary()})"
        )
