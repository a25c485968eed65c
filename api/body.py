"""Request bodies read with a cap: a body larger than allowed is refused before it is read
(by its Content-Length) or as soon as it grows past the cap (sent in chunks), never whole."""

from __future__ import annotations

from starlette.requests import Request


class BodyTooLarge(Exception):
    """The message says how large the body is (or that it is larger than) and the limit."""


async def read_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"{int(declared)} bytes; at most {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"more than {limit} bytes; at most {limit}")
        chunks.append(chunk)
    return b"".join(chunks)
