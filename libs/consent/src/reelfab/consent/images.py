"""An enrolled image named by reference: ``registry://subjects/<subject_id>/images/<sha256>``.

A planned job carries this reference, never the face's bytes; the swapper fetches them from the
registry (``RegistryClient.fetch_image``) at the point of use, so a revoked or erased subject's image
cannot be fetched at all. A reference is parsed strictly: nothing is decoded or normalised, and
anything but the one canonical form is refused naming the part at fault."""

from __future__ import annotations

import re

from reelfab.errors import PermanentError
from reelfab.identifiers import check_identifier

IMAGE_REF_SCHEME = "registry"
_PREFIX = f"{IMAGE_REF_SCHEME}://subjects/"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SCHEME = re.compile(r"[\x00-\x20]*([A-Za-z][A-Za-z0-9+.-]*):")  # after any padding or control characters
_MAX_REF = 512  # far above any valid reference (128-char id + 64 hex); keeps error text bounded


class ImageFetchRefused(PermanentError):
    """The registry refused to hand over an enrolled image: ``status`` 403 (the subject's consent is
    not active), 404 (no such subject or image), 409 (the stored image failed its integrity check) or
    410 (the subject was erased); ``reason`` is the registry's reason code (``revoked``, ``expired``,
    ``erased``, ``unknown_image``, ``tampered``, ...) when it gave one."""

    def __init__(self, message: str, *, status: int, reason: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class ImageFetchRejected(PermanentError):
    """The registry answered, but with bytes the client will not use: more than its size limit, or
    bytes whose sha256 is not the one the reference names (a proxy, or a registry gone wrong)."""


def check_sha256(value: str, field: str = "sha256") -> str:
    """``value`` unchanged when it is 64 lowercase hex digits; PermanentError naming ``field`` otherwise."""
    if not isinstance(value, str) or _SHA256.fullmatch(value) is None:
        raise PermanentError(f"{field} {value!r:.80} is not a sha256 (64 lowercase hex digits)")
    return value


def image_ref(subject_id: str, sha256: str) -> str:
    """The reference to ``subject_id``'s enrolled image whose bytes hash to ``sha256``."""
    check_identifier(subject_id, "subject_id")
    check_sha256(sha256)
    return f"{_PREFIX}{subject_id}/images/{sha256}"


def parse_image_ref(uri: str) -> tuple[str, str] | None:
    """``(subject_id, sha256)`` of a registry reference; None for a URI of another scheme (an
    object-store URI, a plain path); PermanentError for a registry URI in any but the canonical form."""
    if not isinstance(uri, str):
        raise PermanentError(f"image reference {uri!r:.80} is not text")
    if not _is_registry(uri):
        return None
    if len(uri) > _MAX_REF:
        raise PermanentError(f"image reference {uri[:80]!r}... is {len(uri)} characters, over {_MAX_REF}")
    if not uri.startswith(_PREFIX):
        raise PermanentError(
            f"image reference {uri!r:.120} is not of the form {_PREFIX}<subject_id>/images/<sha256> "
            "(scheme in lower case, host 'subjects', no user, port or extra slashes)"
        )
    rest = uri[len(_PREFIX) :]
    for bad, what in (("?", "a query string"), ("#", "a fragment"), ("%", "percent-encoding"), ("\\", "a backslash")):
        if bad in rest:
            raise PermanentError(f"image reference {uri!r:.120} has {what}; references are never encoded or extended")
    segments = rest.split("/")
    if len(segments) != 3 or segments[1] != "images":
        raise PermanentError(
            f"image reference {uri!r:.120} must have exactly the path <subject_id>/images/<sha256> after "
            f"{_PREFIX} (got {len(segments)} segments)"
        )
    subject_id, _, sha256 = segments
    check_identifier(subject_id, f"subject_id of image reference {uri!r:.120}")
    check_sha256(sha256, f"sha256 of image reference {uri!r:.120}")
    return subject_id, sha256


def _is_registry(uri: str) -> bool:
    """Whether ``uri`` claims the registry scheme, in any case and after any padding (so a disguised
    one is refused, not mistaken for another scheme's URI)."""
    found = _SCHEME.match(uri)
    return found is not None and found.group(1).lower() == IMAGE_REF_SCHEME
