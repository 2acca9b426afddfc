"""What the synthetic person, clip and music modules share: the colour type and two small helpers."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

Vec3 = tuple[float, float, float]


def _arr(values: Any) -> NDArray[Any]:
    """Colours and small vectors as float32 arrays."""
    return np.asarray(values, dtype=np.float32)


def _hsv(h: Any, s: Any, v: Any) -> Vec3:
    bgr = cv2.cvtColor(np.array([[[int(h), int(s), int(v)]]], np.uint8), cv2.COLOR_HSV2BGR)[0, 0] / 255.0
    return float(bgr[0]), float(bgr[1]), float(bgr[2])
