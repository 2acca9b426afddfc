"""Uploads and their limits: read as they stream in (refused once over the limit), checked to be PNG
or JPEG of a bounded canvas before anything decodes them; base64 images in JSON; repeatable form lists."""

# no ``from __future__ import annotations``: FastAPI reads these signatures at runtime

import base64
import binascii
import math
import re

from fastapi import UploadFile

from ..errors import Refused, TooLarge
from ..images import declared_size, too_many_pixels
from .errors import invalid
from .models import MAX_LIST

_CHUNK = 64 * 1024
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"

def label(field: str, upload: UploadFile) -> str:
    name = (upload.filename or "")[:100]
    return f"the {field} upload {name!r}" if name else f"the {field} upload"


async def read_upload(upload: UploadFile, field: str, limit: int) -> bytes:
    """The upload's bytes, refused as soon as it passes ``limit`` (nothing decodes it before)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await upload.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"{label(field, upload)} is over the {limit}-byte upload limit")
        chunks.append(chunk)
    return b"".join(chunks)


def require_image(data: bytes, what: str, max_pixels: int) -> None:
    """PNG or JPEG by signature, and a canvas of at most ``max_pixels`` (read from the header,
    before anything is decoded)."""
    if not data:
        raise Refused(f"{what} is empty")
    if not (data.startswith(_PNG) or data.startswith(_JPEG)):
        raise Refused(f"{what} is not a PNG or JPEG image (it starts with {data[:8].hex() or 'nothing'})")
    size = declared_size(data)
    if size is None:
        return  # an unreadable header: the registry's decoder refuses it with its own words
    width, height = size
    if width * height > max_pixels:
        raise too_many_pixels(what, width, height, max_pixels)


def base64_length(limit: int) -> int:
    return 4 * math.ceil(limit / 3)


def decode_base64(text: str, limit: int) -> bytes:
    if len(text) > base64_length(limit):
        raise TooLarge(f"image_base64 is over the {limit}-byte upload limit")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(("body", "image_base64"), "is not valid base64") from None
    if len(data) > limit:
        raise TooLarge(f"image_base64 is over the {limit}-byte upload limit")
    return data


def form_list(values: list[str] | None, field: str, *, pattern: str, upper: bool = False) -> tuple[str, ...]:
    """A repeatable form field whose values may also be comma lists."""
    check = re.compile(pattern)
    items: list[str] = []
    for value in values or []:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            item = item.upper() if upper else item
            if not check.fullmatch(item):
                raise invalid(("body", field), f"{item[:80]!r} does not match {pattern}")
            if item not in items:
                items.append(item)
    if len(items) > MAX_LIST:
        raise invalid(("body", field), f"at most {MAX_LIST} values")
    return tuple(items)
