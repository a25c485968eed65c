"""Rendezvous (highest random weight) hashing: which member owns a key.

Every node computes the same owner from the same member list, with no table of assignments to
keep. When a member leaves, only its own keys move, spread over the others; when one joins,
it takes about 1/n of the keys, from every other member alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def weight(key: str, member: str) -> int:
    digest = hashlib.blake2b(f"{member}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(key: str, members: Iterable[str]) -> str | None:
    """The member with the highest weight for `key`; None when there are no members."""
    return max(members, key=lambda member: (weight(key, member), member), default=None)


def shares(keys: Iterable[str], members: Iterable[str]) -> dict[str, list[str]]:
    """Each member's keys (members without any get an empty list)."""
    names = sorted(set(members))
    out: dict[str, list[str]] = {member: [] for member in names}
    if names:
        for key in keys:
            out[str(owner(key, names))].append(key)
    return out
