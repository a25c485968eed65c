"""The cheap picture arithmetic gives what the slow, exact forms give."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from analytics.video.image import percentiles, shrink


@pytest.mark.parametrize("size", [(320, 180), (160, 90), (178, 100), (640, 360), (100, 56)])
def test_shrink_is_an_area_resize(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(7)
    picture = cv2.GaussianBlur(rng.integers(0, 256, (360, 640), np.uint8), (7, 7), 0)
    exact = cv2.resize(picture, size, interpolation=cv2.INTER_AREA).astype(int)
    fast = shrink(picture, *size)
    assert fast.shape == (size[1], size[0]) and fast.dtype == np.uint8
    assert np.abs(fast.astype(int) - exact).mean() < 2.0  # even on noise: a grey level or two


def test_percentiles_read_from_the_histogram() -> None:
    rng = np.random.default_rng(3)
    picture = rng.integers(0, 256, (90, 160), np.uint8)
    low, high = percentiles(picture, 0.04, 0.96)
    assert abs(low - np.percentile(picture, 4)) <= 1
    assert abs(high - np.percentile(picture, 96)) <= 1
    assert percentiles(np.full((4, 4), 9, np.uint8), 0.0, 1.0) == [9, 9]
