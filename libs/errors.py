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


class StorageError(ReelfabError):
    """Object storage refused an operation (bad URI, key escaping the root, checksum mismatch)."""


class StackError(ReelfabError):
    """The local Kafka/PostgreSQL stack could not be started, reached or stopped."""
