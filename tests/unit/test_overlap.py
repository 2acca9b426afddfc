"""Decoder and encoder kept busy beside the swap (reelfab.media.overlap): order kept, memory bounded,
errors raised where the caller can see them, nothing left running when a job stops early."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from reelfab.media.overlap import WriteBehind, read_ahead


def _threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


def test_read_ahead_keeps_order_and_stays_a_bounded_distance_ahead() -> None:
    produced: list[int] = []

    def items() -> Iterator[int]:
        for i in range(50):
            produced.append(i)
            yield i

    got = []
    for item in read_ahead(items(), depth=3):
        time.sleep(0.002)
        got.append(item)
        assert len(produced) - len(got) <= 3 + 1  # the queue, plus the one waiting to go in
    assert got == list(range(50))
    with pytest.raises(ValueError, match="depth"):
        read_ahead(iter([1]), depth=0)


def test_an_error_while_reading_reaches_the_consumer_at_that_point() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise OSError("decoder died at frame 3")

    got = []
    with pytest.raises(OSError, match="frame 3"):
        for item in read_ahead(items()):
            got.append(item)
    assert got == [1, 2]


def test_leaving_early_stops_the_reader_and_closes_its_source() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    reader = read_ahead(endless(), depth=2)
    assert [next(reader) for _ in range(5)] == [0, 1, 2, 3, 4]
    reader.close()
    assert closed.wait(2) and _threads("read-ahead") == []
    with pytest.raises(StopIteration):
        next(reader)


def test_a_reader_never_iterated_is_stopped_by_close() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            while True:
                yield 0
        finally:
            closed.set()

    reader = read_ahead(endless(), depth=2)
    time.sleep(0.05)  # it has filled its queue and waits
    reader.close()
    assert closed.wait(2) and _threads("read-ahead") == []


class Recorder:
    def __init__(self, *, fail_at: int | None = None, delay: float = 0.0) -> None:
        self.frames: list[Any] = []
        self.fail_at, self.delay = fail_at, delay
        self.closed = self.aborted = False
        self.blocked = threading.Event()
        self.release = threading.Event()

    def write(self, frame: Any) -> None:
        if self.delay:
            time.sleep(self.delay)
        if frame == "block":
            self.blocked.set()
            if not self.release.wait(5):
                raise AssertionError("never released")
            raise BrokenPipeError("the encoder was killed")
        if self.fail_at is not None and len(self.frames) == self.fail_at:
            raise OSError(f"encoder failed at frame {self.fail_at}")
        self.frames.append(frame)

    def close(self) -> str:
        self.closed = True
        return "result"

    def abort(self) -> None:
        self.aborted = True
        self.release.set()  # as killing ffmpeg fails the write it is blocked in


def test_write_behind_writes_everything_in_order_before_close_returns() -> None:
    sink = Recorder(delay=0.001)
    behind = WriteBehind(sink, depth=2)
    for i in range(30):
        behind.write(i)
    assert behind.close() == "result"
    assert sink.frames == list(range(30)) and sink.closed and _threads("write-behind") == []


def test_an_encoder_error_surfaces_on_a_later_write_or_on_close() -> None:
    sink = Recorder(fail_at=3)
    behind = WriteBehind(sink, depth=2)
    with pytest.raises(OSError, match="frame 3"):
        for i in range(100):
            behind.write(i)
            time.sleep(0.005)
    behind.abort()
    assert sink.aborted and not sink.closed
    sink2 = Recorder(fail_at=1)
    behind2 = WriteBehind(sink2, depth=4)
    behind2.write(0)
    behind2.write(1)
    with pytest.raises(OSError, match="frame 1"):
        behind2.close()
    assert not sink2.closed


def test_abort_frees_a_writer_blocked_on_a_stalled_encoder() -> None:
    sink = Recorder()
    behind = WriteBehind(sink, depth=1)
    behind.write("block")
    assert sink.blocked.wait(2)
    behind.write("queued")  # fills the queue behind the stalled write
    started = time.monotonic()
    behind.abort()
    assert sink.aborted and time.monotonic() - started < 2 and _threads("write-behind") == []
