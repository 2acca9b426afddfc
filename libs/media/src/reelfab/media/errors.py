"""Media errors. Each message names the file and what was wrong with it."""

from __future__ import annotations

from reelfab.errors import PermanentError


class MediaError(PermanentError):
    """An image or video that cannot be read (missing, corrupt, zero-length, not media)."""
