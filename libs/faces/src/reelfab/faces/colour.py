"""Temporal smoothing of the swap's colour transfer, so the swapped face follows a light swing without
flickering.

The classical backend matches the swapped face's colour to the target's each frame: per LAB channel a
gain and an offset, from the two faces' statistics over the same pixels (so what varies with the mask
from frame to frame cancels out). Those six numbers still carry measurement noise (grain, a blink, the
mouth opening, an edge of hair); ``TransferFilter`` passes them through a One-Euro filter: heavy
smoothing while they hold still, little lag while they move (the light changes). The tracker gives
each track its own filter (``Face.colour``), reset when the track starts again; the engine applies it
in the order the frames come."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray


class TransferFilter:
    """One-Euro filter over a transfer vector (3 gains, then 3 offsets in LAB levels). ``min_cutoff``
    (Hz): lower is steadier when still; ``beta``: how fast the cutoff rises with the speed of the
    offsets (per level per second)."""

    def __init__(self, fps: float = 25.0, *, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0) -> None:
        self.period = 1.0 / fps
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self.reset()

    def reset(self) -> None:
        self._value: NDArray[Any] | None = None
        self._rate = np.zeros(6)  # filtered rate of change, per second (signed: noise averages out)

    def __call__(self, transfer: NDArray[Any]) -> NDArray[Any]:
        value = np.asarray(transfer, np.float64).reshape(6)
        if self._value is None:
            self._value = value
            return value.copy()
        step = value - self._value
        self._rate += _alpha(self.d_cutoff, self.period) * (step / self.period - self._rate)
        speed = float(np.abs(self._rate[3:]).max())
        self._value = self._value + _alpha(self.min_cutoff + self.beta * speed, self.period) * step
        return self._value.copy()


def _alpha(cutoff: float, period: float) -> float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / period)
