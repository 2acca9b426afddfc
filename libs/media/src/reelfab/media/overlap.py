"""Keeping a decoder and an encoder busy while the caller works on frames.

A pipe holds 64 KiB: an ffmpeg decoding into one stops after a fraction of a frame until the reader
takes it, and an ffmpeg encoding from one waits for every write. A swap loop that decodes, swaps and
encodes in turn therefore runs the three one after the other. ``read_ahead`` reads frames in a thread
of its own into a short queue, and ``WriteBehind`` writes them from another, so the decoder, the swap
and the encoder run at the same time; each queue is a few frames deep, so memory stays bounded.

Errors are never lost: an exception in the reading thread is raised by the consumer at that point of
the stream, one in the writing thread by the next ``write`` or by ``close``."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any, Protocol

_END = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def read_ahead(items: Iterator[Any], depth: int = 4) -> ReadAhead:
    """``items``, produced up to ``depth`` ahead of the consumer by a thread started at once."""
    return ReadAhead(items, depth)


class ReadAhead:
    """An iterator over ``items`` that a thread of its own fills up to ``depth`` ahead. ``close`` (also
    when it was never iterated, and after an error) stops the thread and closes ``items``."""

    def __init__(self, items: Iterator[Any], depth: int = 4) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        self._items = items
        self._ready: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._produce, name="read-ahead", daemon=True)
        self._thread.start()  # now, not at the first next(): the reading starts while the caller gets ready

    def _produce(self) -> None:
        try:
            for item in self._items:
                while not self._stop.is_set():
                    try:
                        self._ready.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._ready.put(_END)
        except BaseException as exc:  # handed to the consumer
            self._ready.put(_Failed(exc))
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> ReadAhead:
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        item = self._ready.get()
        if item is _END:
            self.close()
            raise StopIteration
        if isinstance(item, _Failed):
            self.close()
            raise item.error
        return item

    def close(self) -> None:
        self._done = True
        self._stop.set()
        while self._thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                self._ready.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()


class Sink(Protocol):
    def write(self, frame: Any) -> None: ...

    def close(self) -> Any: ...

    def abort(self) -> None: ...


class WriteBehind:
    """Writes to ``sink`` from a thread of its own, up to ``depth`` frames behind the caller. ``close``
    waits for every frame to be written, then closes ``sink`` (in the caller's thread: an ffmpeg
    started by that thread is closed by it) and returns what it returned; ``abort`` drops what is
    queued and aborts ``sink``."""

    def __init__(self, sink: Sink, depth: int = 4) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        self.sink = sink
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._aborted = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="write-behind", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            frame = self._queue.get()
            if frame is _END:
                return
            if self._error is not None or self._aborted.is_set():
                continue  # keep taking frames so the caller never blocks on a dead sink
            try:
                self.sink.write(frame)
            except BaseException as exc:
                self._error = exc

    def write(self, frame: Any) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(frame)

    def close(self) -> Any:
        self._queue.put(_END)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.sink.close()

    def abort(self) -> None:
        self._aborted.set()
        self.sink.abort()  # first: a write blocked on a stalled encoder fails now and the thread moves on
        if self._thread.is_alive():
            self._queue.put(_END)
            self._thread.join()
