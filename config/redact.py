"""Secrets out of messages: the passwords in URLs (RTSP cameras, databases, InfluxDB) and the
values of secret settings never reach a log line or an error message."""

from __future__ import annotations

import re
from collections.abc import Iterable

HIDDEN = "***"
# scheme://user:password@  (the user name stays: it tells which account to check)
_USERINFO = re.compile(r"([a-z][a-z0-9+.-]*://)([^\s:/@'\"]*):([^\s@'\"]*)@", re.IGNORECASE)
SECRET_KEYS = frozenset({"password", "token", "secret", "key"})


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with the password of every URL in it hidden, and each of `secrets` too (a
    password may also appear on its own, percent-decoded, in a library's message)."""
    text = _USERINFO.sub(rf"\1\2:{HIDDEN}@", text)
    for secret in secrets:
        if secret and len(secret) >= 3:  # hiding "a" everywhere would garble the message
            text = text.replace(secret, HIDDEN)
    return text


def is_secret_key(key: str) -> bool:
    """A setting whose value is never shown: `password`, `token` and the like."""
    last = key.rsplit(".", 1)[-1].lower()
    return last in SECRET_KEYS or any(last.endswith(f"_{word}") for word in SECRET_KEYS)
