"""How a video is cut into chunks for TikTok's FILE_UPLOAD transfer (the Content Posting API's media
transfer guide), as pure arithmetic so the plan can be checked without a network.

TikTok's rules:

- ``total_chunk_count`` is ``video_size // chunk_size`` (rounded down); between 1 and 1000 chunks;
- every chunk is 5 to 64 MB, except the last, which absorbs the trailing bytes and may reach 128 MB;
- a video under 5 MB goes whole (``chunk_size == video_size``); a video over 64 MB must be chunked;
- chunks are sent in order, and the server refuses one that does not continue where the last ended.

Our choice within those rules: a video no larger than the preferred chunk size goes whole (one request);
anything larger is cut at the preferred size (10 MB by default), so a broken transfer loses at most one
chunk and can resume at a chunk boundary. The chunk size grows (in whole MiB) only when a big file would
otherwise need more than 1000 chunks. A whole video larger than 64 MB is never planned."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024
MIN_CHUNK = 5 * MiB
MAX_CHUNK = 64 * MiB
MAX_LAST_CHUNK = 128 * MiB
MAX_CHUNKS = 1000
DEFAULT_CHUNK = 10 * MiB
# TikTok's video size limit (media transfer guide: "Maximum of 4GB"). Not enforced by chunk_plan, which
# only knows the chunking rules; the platform refuses larger videos at init.
MAX_VIDEO_SIZE = 4 * 1024 * MiB
# the largest video the chunking rules allow at all: 999 chunks of 64 MB and a last one under 128 MB
MAX_PLANNABLE = (MAX_CHUNKS + 1) * MAX_CHUNK - 1


@dataclass(frozen=True)
class ChunkPlan:
    """A FILE_UPLOAD plan: the three numbers sent in ``source_info`` and the byte ranges they imply."""

    video_size: int
    chunk_size: int
    total_chunk_count: int

    def __post_init__(self) -> None:
        problem = plan_problem(self.video_size, self.chunk_size, self.total_chunk_count)
        if problem:
            raise ValueError(problem)

    def ranges(self) -> list[tuple[int, int]]:
        """(first_byte, last_byte), inclusive, per chunk in sending order; the last takes the remainder."""
        out = []
        for i in range(self.total_chunk_count):
            first = i * self.chunk_size
            last = self.video_size - 1 if i == self.total_chunk_count - 1 else first + self.chunk_size - 1
            out.append((first, last))
        return out

    def resume_index(self, uploaded_bytes: int) -> int:
        """The index of the next chunk to send after ``uploaded_bytes`` arrived (``total_chunk_count``
        when all did). TikTok accepts only the chunk that starts where the received bytes end, so a
        count that is not a chunk boundary means the plan and the upload disagree: ValueError."""
        if uploaded_bytes == self.video_size:
            return self.total_chunk_count
        for i, (first, _last) in enumerate(self.ranges()):
            if first == uploaded_bytes:
                return i
        raise ValueError(f"{uploaded_bytes} bytes uploaded is not a chunk boundary of this plan "
                         f"(video_size {self.video_size}, chunk_size {self.chunk_size})")


def plan_problem(video_size: int, chunk_size: int, total_chunk_count: int) -> str | None:
    """Why these numbers break TikTok's chunk rules, or None when they keep them."""
    for name, value in (("video_size", video_size), ("chunk_size", chunk_size),
                        ("total_chunk_count", total_chunk_count)):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{name} must be an integer, got {type(value).__name__}"
        if value <= 0:
            return f"{name} must be positive, got {value}"
    if video_size < MIN_CHUNK:
        if chunk_size != video_size or total_chunk_count != 1:
            return (f"a video under {MIN_CHUNK} bytes goes whole: chunk_size must equal video_size "
                    f"({video_size}) and total_chunk_count be 1")
        return None
    if chunk_size < MIN_CHUNK or chunk_size > MAX_CHUNK:
        return f"chunk_size {chunk_size} is outside {MIN_CHUNK}..{MAX_CHUNK} bytes"
    if total_chunk_count != video_size // chunk_size:
        return (f"total_chunk_count must be video_size // chunk_size = {video_size // chunk_size}, "
                f"got {total_chunk_count}")
    if total_chunk_count > MAX_CHUNKS:
        return f"{total_chunk_count} chunks is more than {MAX_CHUNKS}"
    if video_size > MAX_CHUNK and total_chunk_count < 2:
        return f"a video over {MAX_CHUNK} bytes must go in several chunks"
    last = video_size - (total_chunk_count - 1) * chunk_size
    if last > MAX_LAST_CHUNK:
        return f"the last chunk would be {last} bytes, over {MAX_LAST_CHUNK}"
    return None


def chunk_plan(video_size: int, *, preferred_chunk_size: int = DEFAULT_CHUNK) -> ChunkPlan:
    """The plan for a video of ``video_size`` bytes (see the module docstring for the choice made).

    ValueError names the problem: a size that is not positive, a preferred size outside 5..64 MB, or a
    video too large for 1000 chunks of 64 MB (with a last chunk under 128 MB)."""
    if isinstance(video_size, bool) or not isinstance(video_size, int) or video_size <= 0:
        raise ValueError(f"video_size must be a positive integer, got {video_size!r}")
    if not MIN_CHUNK <= preferred_chunk_size <= MAX_CHUNK:
        raise ValueError(f"preferred_chunk_size {preferred_chunk_size} is outside {MIN_CHUNK}..{MAX_CHUNK} bytes")
    if video_size > MAX_PLANNABLE:
        raise ValueError(f"a video of {video_size} bytes is too large for TikTok's chunk rules "
                         f"(at most {MAX_PLANNABLE} bytes: {MAX_CHUNKS} chunks of {MAX_CHUNK})")
    if video_size < MIN_CHUNK or video_size <= preferred_chunk_size:
        return ChunkPlan(video_size, video_size, 1)
    chunk = preferred_chunk_size
    if video_size // chunk > MAX_CHUNKS:
        needed = video_size // (MAX_CHUNKS + 1) + 1  # the smallest size giving at most 1000 chunks
        chunk = min(MAX_CHUNK, -(-needed // MiB) * MiB)  # rounded up to whole MiB, for readable plans
    if video_size > MAX_CHUNK and video_size // chunk < 2:
        chunk = video_size // 2  # over 64 MB must be several chunks; half of > 64 MB is still >= 32 MB
    return ChunkPlan(video_size, chunk, video_size // chunk)
