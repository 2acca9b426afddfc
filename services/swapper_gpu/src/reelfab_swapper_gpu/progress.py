"""Frames made so far by the swaps running in this process, counted as each frame is written: a
counter whose rate is the live frames/s (the finished-job histogram only moves when a job ends), and
per running job (frames done, frames in the clip) for a view in the same process (`reelfab demo`)."""

from __future__ import annotations

from prometheus_client import Counter

FRAMES_MADE = Counter(
    "reelfab_swap_frames_made_total", "Frames written by running swaps as they are made (rate() is the live frames/s)."
)
_running: dict[str, tuple[int, int]] = {}  # job id -> (done, total); written from the swap's worker thread


def started(job_id: str, total: int) -> None:
    _running[job_id] = (0, max(total, 0))


def advance(job_id: str, n: int) -> None:
    done, total = _running.get(job_id, (0, 0))
    _running[job_id] = (done + n, total)
    FRAMES_MADE.inc(n)


def finished(job_id: str) -> None:
    _running.pop(job_id, None)


def running() -> dict[str, tuple[int, int]]:
    """A copy: job id -> (frames done, frames in the clip) of the swaps running now."""
    return dict(_running)
