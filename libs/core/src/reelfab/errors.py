"""Error taxonomy shared by every service.

The bus decides what to do with a failed message by the class of the error alone:
``TransientError`` is retried with backoff, ``PermanentError`` (and anything after the
retry budget is spent) goes to the dead-letter topic with the reason.
"""

from __future__ import annotations


class ReelfabError(Exception):
    """Base class of every error Reelfab raises on purpose."""


class PermanentError(ReelfabError):
    """Retrying cannot help: bad input, schema mismatch, a decision such as a consent denial."""


class TransientError(ReelfabError):
    """May succeed later: a broker or database hiccup, a timeout."""


class DecodeError(PermanentError):
    """Bytes that are not a record of any known schema, or not of the schema the topic carries."""


class SchemaMismatchError(DecodeError):
    """A well-formed record, but of a schema other than the one the topic carries."""


class EncodeError(PermanentError):
    """A value that does not fit its schema (missing required field, wrong type)."""


class MessageTooLargeError(PermanentError):
    """A message over the configured maximum size."""


class DependencyUnavailable(TransientError):
    """A dependency (PostgreSQL, Kafka, the consent registry, the object store) cannot be reached.

    Nobody's message is at fault: the bus pauses and retries with capped backoff until it is back,
    without counting attempts towards the DLQ, and readiness is false meanwhile."""

    def __init__(self, dependency: str, detail: str) -> None:
        super().__init__(f"{dependency} is unavailable: {detail}")
        self.dependency = dependency


class StorageError(ReelfabError):
    """Object storage refused an operation (bad URI, key escaping the root, checksum mismatch)."""


class ObjectRefused(StorageError, PermanentError):
    """A key or URI the store will never serve: absolute, escaping the root, another scheme."""


class ObjectMissing(StorageError, PermanentError):
    """The object a message names is not there, or is not the bytes its sha256 says."""


class StoreUnavailable(DependencyUnavailable):
    """The store itself cannot be reached (its root is gone or its filesystem fails)."""

    def __init__(self, detail: str) -> None:
        super().__init__("object store", detail)


class StackError(ReelfabError):
    """The local Kafka/PostgreSQL stack could not be started, reached or stopped."""
