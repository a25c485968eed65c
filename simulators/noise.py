"""Deterministic randomness: the same (seed, device, instant) always gives the same number.

Python's `hash()` is salted per process, so keys come from BLAKE2b. Per-sample noise uses the
splitmix64 finaliser: a few integer operations per value, where creating a numpy generator per
call would cost tens of microseconds. numpy generators are used for what is drawn once (device
parameters, a day's event schedule).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_TO_UNIT = 2.0**-53


def stable_key(*parts: object) -> int:
    """A 64-bit key from the parts' text, equal across processes and runs."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def mix(x: int) -> int:
    """splitmix64: a bijection on 64-bit ints whose output bits all depend on every input bit."""
    x = (x + _GOLDEN) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def uniform(key: int, i: int) -> float:
    """Uniform in [0, 1), a pure function of (key, i)."""
    return (mix(key ^ ((i * _GOLDEN) & _MASK)) >> 11) * _TO_UNIT


def signed(key: int, i: int) -> float:
    """Uniform in [-1, 1)."""
    return 2.0 * uniform(key, i) - 1.0


def white(key: int, t: float, resolution_s: float = 1.0) -> float:
    """Independent noise in [-1, 1) for each `resolution_s` slice of time."""
    return signed(key, math.floor(t / resolution_s))


def smooth(key: int, t: float, scale_s: float) -> float:
    """Value noise in [-1, 1]: random knots every `scale_s`, eased in between (slow drifts)."""
    x = t / scale_s
    i = math.floor(x)
    f = x - i
    f = f * f * (3.0 - 2.0 * f)
    a = signed(key, i)
    return a + (signed(key, i + 1) - a) * f


def generator(seed: int, *parts: object) -> np.random.Generator:
    """A numpy generator seeded by the simulator seed and the parts (device id, day...)."""
    return np.random.default_rng([seed & _MASK, stable_key(*parts)])
