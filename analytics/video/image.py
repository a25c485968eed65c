"""Cheap picture arithmetic shared by the detectors.

OpenCV's area resize is fast for whole factors and slow for the rest (0.37 ms to take a
640x360 picture to 178x100, 0.01 ms to halve it): `shrink` halves while it can and does the
last, small step by area. `percentiles` reads a uint8 picture's histogram instead of sorting
it, several times faster than numpy's.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]


def shrink(image: Image, width: int, height: int) -> Image:
    """`image` at (width, height) by area averaging, as cv2.INTER_AREA gives it (within a
    grey level or two)."""
    while image.shape[1] >= 2 * width and image.shape[0] >= 2 * height:
        half = (image.shape[1] // 2, image.shape[0] // 2)
        image = np.asarray(cv2.resize(image, half, interpolation=cv2.INTER_AREA), np.uint8)
    if (image.shape[1], image.shape[0]) == (width, height):
        return image
    return np.asarray(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA), np.uint8)


def percentiles(image: Image, *shares: float) -> list[int]:
    """The grey levels below which these shares (0..1) of the pixels lie."""
    counts = np.cumsum(np.bincount(image.ravel(), minlength=256))
    total = int(counts[-1])
    # The first level at which that many pixels are counted (at least one: share 0 is the
    # darkest level present, not 0).
    return [int(np.searchsorted(counts, max(1, math.ceil(share * total)))) for share in shares]
