"""What the registry refuses, each mapped to an HTTP status by the API."""

from __future__ import annotations

from reelfab.errors import PermanentError


class RegistryError(PermanentError):
    status = 400


class NotFound(RegistryError):
    status = 404


class Conflict(RegistryError):
    status = 409


class Refused(RegistryError):
    """Input understood but not acceptable (QC failed, wrong person, ...)."""

    status = 422


class TooLarge(RegistryError):
    status = 413


class Unavailable(RegistryError):
    """A dependency outside the database (the checkpoint topic on Kafka) does not answer."""

    status = 503
