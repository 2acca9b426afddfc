"""Identifiers are opaque tokens (docs/architecture.md "Delivery rules").

Every field of an Avro record whose name ends in ``_id`` (job, subject/face, template, music, trend,
plan, arm, post, event, trace ids) must match ``IDENTIFIER_PATTERN``: 1 to 128 characters from
``A-Z a-z 0-9 _ - . ~``, not starting with ``.`` (so never ``.`` or ``..``) and never containing ``/``,
``\\``, NUL, spaces or control characters. The pattern is checked where a record is decoded (a
violating record is dead-lettered naming the field) and again wherever an identifier becomes part of a
filesystem path or an object-store key: an identifier is never joined into a path unvalidated."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from reelfab.errors import PermanentError

IDENTIFIER_PATTERN = r"^[A-Za-z0-9_~-][A-Za-z0-9_.~-]{0,127}$"
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)


class InvalidIdentifier(PermanentError):
    """An identifier that does not match IDENTIFIER_PATTERN; it names the field it came from."""


def is_identifier_field(name: str) -> bool:
    """The naming rule that marks a record field as an identifier."""
    return name.endswith("_id")


def check_identifier(value: str, field: str = "identifier") -> str:
    """``value`` unchanged when it is a valid identifier; InvalidIdentifier naming ``field`` otherwise."""
    if not isinstance(value, str) or _IDENTIFIER.fullmatch(value) is None:
        raise InvalidIdentifier(
            f"{field} {value!r:.80} is not an opaque identifier (expected {IDENTIFIER_PATTERN}): "
            "it must not contain '/', '\\', spaces or control characters, nor start with '.'"
        )
    return value


def key_segment(value: str, field: str = "identifier") -> str:
    """An identifier to use as one segment of an object-store key."""
    return check_identifier(value, field)


def make_workdir(root: Path, job_id: str) -> Path:
    """A fresh private folder for one attempt at one job, always created inside ``root``.

    The folder name is the validated id plus a random suffix, so two attempts (a redelivery while a
    crashed attempt's folder is still there) never share or delete each other's files."""
    check_identifier(job_id, "job_id")
    root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{job_id}.", dir=root)).resolve()
    if path.parent != root.resolve():  # belt and braces: mkdtemp with a validated prefix cannot escape
        raise InvalidIdentifier(f"work folder {path} for job_id {job_id!r} is not directly inside {root}")
    return path
