"""What media tests ask of ffmpeg's results: the children still running, the audio level at the end,
every decoded picture's hash."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from reelfab.media.tools import tool


def ffmpeg_children() -> list[int]:
    """Pids of this process's ffmpeg children that still run (zombies, already dead, left out)."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_file.read_text()
        except OSError:
            continue
        name, after = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if int(after[1]) == os.getpid() and "ffmpeg" in name and after[0] != "Z":
            found.append(int(stat.split()[0]))
    return found


def mean_volume(path: Path, last_s: float) -> float:
    """The mean volume (dB) of the last ``last_s`` seconds of ``path``'s first audio stream."""
    proc = subprocess.run(
        [tool("ffmpeg"), "-v", "info", "-sseof", f"-{last_s}", "-i", str(path), "-map", "0:a:0",
         "-af", "volumedetect", "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(re.search(r"mean_volume: (-?[\d.]+|-inf) dB", proc.stderr).group(1))  # type: ignore[union-attr]


def video_md5s(path: Path) -> list[str]:
    """The MD5 of every decoded picture (ffmpeg's framemd5, in the stream's own pixel format)."""
    out = subprocess.run(
        [tool("ffmpeg"), "-v", "error", "-i", str(path), "-map", "0:v:0", "-f", "framemd5", "-"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line.split(",")[-1].strip() for line in out.splitlines() if line and not line.startswith("#")]
