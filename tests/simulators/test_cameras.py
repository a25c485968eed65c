"""The camera simulator's choices: which cameras push, which are served, what is scripted."""

from __future__ import annotations

import pytest

from devices.models import Stream
from devices.registry import Registry
from simulators.camera_fleet import CameraPlan
from simulators.cameras import main, pushed_cameras, served_cameras


def test_pushed_cameras_are_kitchen_cameras_not_pulled(registry: Registry) -> None:
    pulled = registry.with_streams(
        [Stream(camera_id="kitchen-0001-cam-1", url="rtsp://10.0.0.9/ch1")]
    )
    pushed = pushed_cameras(pulled, 3)
    assert len(pushed) == 3 and "kitchen-0001-cam-1" not in pushed
    assert all(registry.devices[c].type == "kitchen_camera" for c in pushed)


def test_served_cameras_are_those_pointing_at_the_local_port(registry: Registry) -> None:
    assert served_cameras(registry, 8554) == {f"street-cam-0000{n}": "street" for n in (1, 2, 3, 4)}
    assert served_cameras(registry, 9554) == {}


def test_plans_are_for_cameras_only(registry: Registry) -> None:
    plan = CameraPlan.for_device(registry.devices["kitchen-0001-cam-1"], "frozen@5+5")
    assert plan.scene == "kitchen" and plan.script[0].kind == "frozen"
    with pytest.raises(ValueError, match="not a camera"):
        CameraPlan.for_device(registry.devices["kitchen-0001-fridge-1"])
    with pytest.raises(ValueError, match="vendor_stopping"):
        CameraPlan.for_device(registry.devices["kitchen-0001-cam-1"], "vendor_stopping@1+1")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--script", "kitchen-0001-cam-1"], "expected CAMERA=KIND@START+DURATION"),
        (["--script", "nobody=frozen@1+1"], "not in the inventory"),
        (["--script", "street-cam-00001=vendor_stopping@1+1"], "pulled over RTSP; add --rtsp"),
        (["--script", "kitchen-0001-cam-1=melting@1+1"], "unknown kind"),
    ],
)
def test_bad_options_are_refused_with_the_reason(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err
