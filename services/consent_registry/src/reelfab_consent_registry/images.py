"""Face images as the registry works on them: refused from the header when too big, decoded
reduced, checked (QC), embedded and perceptually hashed. CPU- and memory-heavy work, done off the
event loop a bounded number at a time (``FaceWork``) and never inside a database transaction."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import hashlib
import io
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import cv2
import imagehash
import numpy as np
from numpy.typing import NDArray
from PIL import Image, JpegImagePlugin, PngImagePlugin

from reelfab.faces.errors import FaceError
from reelfab.faces.qc import check_source
from reelfab.faces.types import Embedding, FaceEngine

from .errors import Refused, TooLarge

MAX_FACE_PIXELS = 16_000_000  # what face work needs: a larger canvas is refused before decoding
FACE_WORK_PIXELS = 4_194_304  # images above this decode reduced (1/2, 1/4, 1/8) where the codec can
T = TypeVar("T")


@dataclass(frozen=True)
class Examined:
    """An image accepted for enrolment: its hashes, embedding and QC metrics."""

    sha256: str
    phash: str
    embedding: Embedding
    qc_metrics: dict[str, Any]


class FaceWork:
    """The face engine (made on first use) and a bound on how many images are worked on at once;
    the memory the work took goes back to the system when the last one ends."""

    def __init__(self, engine_factory: Callable[[], FaceEngine], *, concurrency: int = 2,
                 max_pixels: int = MAX_FACE_PIXELS, work_pixels: int = FACE_WORK_PIXELS) -> None:
        self.engine_factory = engine_factory
        self.concurrency = max(1, concurrency)
        self.max_pixels = max_pixels
        self.work_pixels = work_pixels
        self._engine: FaceEngine | None = None
        self._slots: asyncio.Semaphore | None = None
        self._busy = 0

    @property
    def engine(self) -> FaceEngine:
        if self._engine is None:
            self._engine = self.engine_factory()
        return self._engine

    def identity_threshold(self, asset_kind: str) -> float:
        return self.engine.identity_threshold(asset_kind)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread, at most ``concurrency`` at once."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        async with self._slots:
            self._busy += 1
            try:
                return await asyncio.to_thread(fn, *args)
            finally:
                self._busy -= 1
                if self._busy == 0:
                    await asyncio.to_thread(release_memory)

    async def examine(self, image_bytes: bytes) -> Examined:
        """For enrolment: the image passes QC and has a usable face, or it is Refused."""
        return await self.run(self._examine, image_bytes)

    async def facts(self, image_bytes: bytes, want_embedding: bool) -> tuple[dict[str, Any], Embedding | None]:
        """For a check: the image's hashes and (when asked and found) its face's embedding."""
        return await self.run(self._facts, image_bytes, want_embedding)

    def decode(self, image_bytes: bytes) -> NDArray[Any]:
        return decode_image(image_bytes, max_pixels=self.max_pixels, work_pixels=self.work_pixels)

    def _examine(self, image_bytes: bytes) -> Examined:
        image = self.decode(image_bytes)
        qc = check_source(image, self.engine)
        if not qc.passed:
            raise Refused(f"the image fails the source-face check: {qc.summary()}")
        try:
            source = self.engine.prepare_source(image)
        except FaceError as exc:
            raise Refused(str(exc)) from None
        return Examined(hashlib.sha256(image_bytes).hexdigest(), perceptual_hash(image), source.embedding,
                        dict(qc.metrics))

    def _facts(self, image_bytes: bytes, want_embedding: bool) -> tuple[dict[str, Any], Embedding | None]:
        image = self.decode(image_bytes)
        facts = {"image_sha256": hashlib.sha256(image_bytes).hexdigest(), "image_phash": perceptual_hash(image)}
        if not want_embedding:
            return facts, None
        try:
            return facts, self.engine.prepare_source(image).embedding
        except FaceError:
            return facts, None  # no usable face: the image hashes decide


def perceptual_hash(image: NDArray[Any]) -> str:
    """64-bit DCT perceptual hash (imagehash.phash) of the image, as 16 hex digits."""
    return str(imagehash.phash(Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))))


_REDUCED = ((1, cv2.IMREAD_COLOR), (2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4),
            (8, cv2.IMREAD_REDUCED_COLOR_8))


def too_many_pixels(what: str, width: int, height: int, limit: int) -> TooLarge:
    return TooLarge(f"{what} is {width}x{height} pixels ({width * height:,}), over the {limit:,}-pixel limit "
                    "for face images: send a smaller picture of the face")


def decode_image(data: bytes, *, max_pixels: int = MAX_FACE_PIXELS, work_pixels: int = FACE_WORK_PIXELS,
                 what: str = "the image") -> NDArray[Any]:
    """The image for face work: refused from its header when its canvas is over ``max_pixels``;
    decoded reduced (1/2, 1/4 or 1/8 a side, JPEG's DCT scaling where it applies) down to about
    ``work_pixels``, which is plenty for detection, QC, embedding and the perceptual hash."""
    if not data:
        raise Refused("the upload is empty")
    declared = declared_size(data)
    factor, flag = 1, cv2.IMREAD_COLOR
    if declared is not None:
        width, height = declared
        if width * height > max_pixels:
            raise too_many_pixels(what, width, height, max_pixels)
        for factor, flag in _REDUCED:  # noqa: B007 - the last one that fits is kept
            if width * height <= work_pixels * factor * factor:
                break
    image: NDArray[Any] | None = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is None:
        head = data[:8].hex()
        raise Refused(f"the upload is not an image (first bytes {head}); send PNG or JPEG")
    return image


def declared_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the header, read before decoding (a small file can claim a huge canvas)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:  # reads the header only
                return int(img.width), int(img.height)
    except Image.DecompressionBombError:
        # PIL refuses to even open a canvas this big; its own plugins still read the header
        for plugin in (PngImagePlugin.PngImageFile, JpegImagePlugin.JpegImageFile):
            with contextlib.suppress(Exception), plugin(io.BytesIO(data)) as img:
                return int(img.width), int(img.height)
        return (2**31, 1)  # pragma: no cover - a format PIL opened but neither plugin reads
    except Exception:
        return None  # not an image PIL knows: cv2's decode says so next


_LIBC: Any = None
_TRIM = threading.Lock()


def release_memory() -> None:
    """Hand freed heap back to the system (glibc keeps it in its arenas otherwise: a few large
    decodes would leave the process hundreds of MiB bigger for good). A no-op elsewhere."""
    global _LIBC
    with _TRIM:
        if _LIBC is None:
            try:
                _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
            except (OSError, AttributeError):
                _LIBC = False
        if _LIBC:
            with contextlib.suppress(Exception):
                _LIBC.malloc_trim(0)
