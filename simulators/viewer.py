"""A WHEP viewer (the live-view side of WebRTC), for tests, load and a quick look at a camera."""

from __future__ import annotations

import asyncio
import contextlib

import av
import httpx
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from simulators.camera import WhipError, delete_session, reason


class WhepViewer:
    """Watches one camera: POST the offer, then count (and keep the newest of) the frames."""

    def __init__(self, endpoint: str, token: str) -> None:
        self.endpoint = endpoint
        self._token = token
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._location: str | None = None
        self._pull: asyncio.Task[None] | None = None
        self.frames = 0
        self.latest: av.VideoFrame | None = None
        self.arrived = asyncio.Condition()

    @property
    def location(self) -> str | None:
        """The session's URL (DELETE ends it), once connected."""
        return self._location

    async def connect(self) -> None:
        self._pc.addTransceiver("video", direction="recvonly")

        @self._pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            self._pull = asyncio.ensure_future(self._consume(track))

        await self._pc.setLocalDescription(await self._pc.createOffer())
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(
                self.endpoint,
                content=self._pc.localDescription.sdp,
                headers={
                    "Content-Type": "application/sdp",
                    "Authorization": f"Bearer {self._token}",
                },
            )
        if response.status_code != 201:
            await self._pc.close()
            raise WhipError(response.status_code, reason(response))
        self._location = str(httpx.URL(self.endpoint).join(response.headers["location"]))
        await self._pc.setRemoteDescription(RTCSessionDescription(response.text, "answer"))

    async def _consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                async with self.arrived:
                    self.frames += 1
                    if isinstance(frame, av.VideoFrame):
                        self.latest = frame
                    self.arrived.notify_all()

    async def wait_frames(self, count: int, timeout: float) -> None:
        """Wait until `count` frames in all have arrived."""
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: self.frames >= count), timeout)

    async def close(self) -> None:
        location, self._location = self._location, None
        await delete_session(location, self._token)
        await self._pc.close()
        if self._pull is not None:
            self._pull.cancel()
