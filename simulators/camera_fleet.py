"""Simulated WebRTC cameras: dozens of WHIP publishers of synthetic scenes from one event loop.

Each camera renders its scene (simulators/scenes.py) at its frame rate; aiortc encodes in its
executor threads. When a camera starts, the ground truth of its scripted happenings is appended
to the truth file in wall-clock milliseconds, so analytics can be scored against it. Scene time
runs on across reconnections, so the truth stays right when a session is re-established.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devices.models import Device
from simulators.camera import SceneClock, SceneTrack, WhipPublisher
from simulators.scenes import ONLY_IN, Happening, Scene, parse_script, write_ground_truth

SCENE_OF_TYPE = {"kitchen_camera": "kitchen", "street_camera": "street"}


@dataclass(frozen=True)
class CameraPlan:
    camera_id: str
    scene: str  # "kitchen" or "street"
    script: tuple[Happening, ...] = field(default=())

    @classmethod
    def for_device(cls, device: Device, script: str = "") -> CameraPlan:
        scene = SCENE_OF_TYPE.get(device.type)
        if scene is None:
            raise ValueError(f"{device.device_id} is a {device.type}, not a camera")
        happenings = parse_script(script)
        for happening in happenings:
            needed = ONLY_IN.get(happening.kind, scene)
            if needed != scene:
                raise ValueError(
                    f"{device.device_id}: {happening.kind} happens in {needed} scenes, "
                    f"not in a {scene}"
                )
        return cls(device.device_id, scene, happenings)


class CameraFleet:
    def __init__(
        self,
        base_url: str | Sequence[str],
        tokens: Mapping[str, str],
        plans: Sequence[CameraPlan],
        *,
        width: int = 640,
        height: int = 360,
        fps: float = 5.0,
        codec: str = "VP8",
        seed: int = 0,
        truth: Path | None = None,
    ) -> None:
        missing = [p.camera_id for p in plans if p.camera_id not in tokens]
        if missing:
            raise ValueError(f"no WHIP token for cameras {', '.join(missing)}")
        # Several service nodes: each camera tries them in turn when one cannot be reached.
        bases = [base_url] if isinstance(base_url, str) else list(base_url)
        self._bases = [base.rstrip("/") for base in bases]
        self._tokens = tokens
        self._plans = list(plans)
        self._fps = fps
        self._codec = codec
        self._truth = truth
        self.scenes = {
            p.camera_id: Scene(
                p.camera_id,
                p.scene,
                width=width,
                height=height,
                fps=fps,
                script=p.script,
                seed=seed,
            )
            for p in plans
        }
        self.publishers: dict[str, WhipPublisher] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Publish every camera until `stop` is set."""
        tasks = []
        for plan in self._plans:
            scene = self.scenes[plan.camera_id]
            clock = SceneClock.now()
            if self._truth is not None and plan.script:
                write_ground_truth(self._truth, scene.ground_truth(clock.wall_ms))

            def track(scene: Scene = scene, clock: SceneClock = clock) -> SceneTrack:
                return SceneTrack(scene.frame, self._fps, clock)

            publisher = WhipPublisher(
                [f"{base}/whip/{plan.camera_id}" for base in self._bases],
                self._tokens[plan.camera_id],
                track,
                codec=self._codec,
            )
            self.publishers[plan.camera_id] = publisher
            tasks.append(asyncio.create_task(publisher.run(stop)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)

    def connected(self) -> int:
        return sum(1 for p in self.publishers.values() if p.connected.is_set())
