"""Finding ffmpeg and ffprobe; installing Debian's ffmpeg where they are missing (and saying so)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from functools import cache

from reelfab.errors import StackError
from reelfab.media import children


@cache
def tool(name: str, say: Callable[[str], None] | None = None) -> str:
    """Absolute path of ``ffmpeg`` or ``ffprobe`` (REELFAB_FFMPEG_DIR overrides PATH)."""
    folder = os.environ.get("REELFAB_FFMPEG_DIR")
    if folder and os.access(os.path.join(folder, name), os.X_OK):
        return os.path.join(folder, name)
    found = shutil.which(name)
    if found:
        return found
    raise StackError(f"{name} is not installed; run `reelfab setup` (or apt-get install ffmpeg)")


def ensure_ffmpeg(say: Callable[[str], None] = print) -> str:
    """Install Debian's ffmpeg when ffmpeg or ffprobe is missing; returns the ffmpeg path."""
    if shutil.which("ffmpeg") and shutil.which("ffprobe"):
        return shutil.which("ffmpeg")  # type: ignore[return-value]
    if os.geteuid() != 0:
        raise StackError("ffmpeg/ffprobe are missing and we are not root: install Debian's ffmpeg package")
    say("ffmpeg: not installed; installing Debian's ffmpeg with apt (first run only)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "ffmpeg"]):
        proc = children.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise StackError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()[-500:]}")
    tool.cache_clear()
    return tool("ffmpeg")
