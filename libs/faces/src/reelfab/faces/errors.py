"""Face engine errors. Each message names the input and what was wrong with it; the CLI prints it as
one line, the bus dead-letters it as permanent."""

from __future__ import annotations

from reelfab.errors import PermanentError


class FaceError(PermanentError):
    """The input does not have the face the operation needs."""


class NoFaceError(FaceError):
    pass


class ManyFacesError(FaceError):
    pass


class FaceTooSmallError(FaceError):
    pass


class ModelError(PermanentError):
    """A model that is missing, corrupt (hash mismatch), not allowed (licence) or unusable."""


class SwapQualityError(FaceError):
    """A swap that put the face into too few of the clip's frames: shipping it would show the
    performer, or a half-swapped clip. ``report``: the frame counts (reelfab.faces.report.SwapReport)."""

    def __init__(self, message: str, report: object) -> None:
        super().__init__(message)
        self.report = report
