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
