"""The model plug-in with a model the test builds itself (no weights are shipped or fetched):
a tiny ONNX classifier whose class 1 means "red" and class 2 "blue"."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnx
import pytest
from onnx import TensorProto, helper

from analytics.events import Raise, Source
from analytics.video.camera import CameraAnalytics
from analytics.video.model import ModelError, onnx_classifier
from analytics.video.profile import CameraProfile, ModelSpec
from analytics.video.profiles import ProfileBook, ProfileError
from devices.registry import Registry


def tiny_model(path: Path) -> Path:
    """image [1, 3, 32, 32] (RGB, 0..1) -> mean colour -> 3 scores: fine, red, blue."""
    weights = np.array([[0, 20, -10], [0, -10, -10], [0, -10, 20]], np.float32)  # rows: R, G, B
    bias = np.array([2, -4, -4], np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image"], ["colour"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["colour", "weights"], ["raw"]),
            helper.make_node("Add", ["raw", "bias"], ["scores"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3])],
        [
            helper.make_tensor("weights", TensorProto.FLOAT, [3, 3], weights.flatten()),
            helper.make_tensor("bias", TensorProto.FLOAT, [3], bias),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def spec(path: Path) -> ModelSpec:
    return ModelSpec(
        name="ppe",
        path=path,
        input_width=32,
        input_height=32,
        classes={"1": "no_hat", "2": "smoking"},
        min_area=0.005,
    )


def block(colour: tuple[int, int, int], x: int) -> npt.NDArray[np.uint8]:
    picture = np.full((180, 320, 3), 128, np.uint8)
    picture[60:140, x : x + 40] = colour
    return picture


def watch(analytics: CameraAnalytics, colour: tuple[int, int, int]) -> list[Raise]:
    signals = []
    for n in range(40):  # 20 s, the block moving to and fro
        bgr = block(colour, 60 + (n % 10) * 15)
        luma = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        signals += analytics.observe(luma, n * 500, lambda w, bgr=bgr: bgr)
    return [s for s in signals if isinstance(s, Raise)]


def test_a_models_class_raises_the_violation_it_is_mapped_to(tmp_path: Path) -> None:
    model = spec(tiny_model(tmp_path / "tiny.onnx"))
    scores = onnx_classifier(model, tmp_path)
    assert int(np.argmax(scores(block((30, 30, 220), 0)[60:140, 0:40]))) == 1  # red (BGR)
    profile = CameraProfile(models=(model,), health={"enabled": False})
    red = watch(
        CameraAnalytics(Source("s", "c"), profile, load_model=lambda m: scores), (30, 30, 220)
    )
    assert [(r.kind, r.rule) for r in red] == [("no_hat", "video.no_hat.ppe")]
    assert red[0].details["model"] == "ppe" and red[0].details["score"] >= 0.6
    blue = watch(
        CameraAnalytics(Source("s", "c"), profile, load_model=lambda m: scores), (220, 30, 30)
    )
    assert [r.kind for r in blue] == ["smoking"]
    grey = watch(
        CameraAnalytics(Source("s", "c"), profile, load_model=lambda m: scores), (90, 90, 90)
    )
    assert grey == []


def test_a_model_that_cannot_be_loaded_says_which(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="model 'ppe': cannot load"):
        onnx_classifier(spec(broken), tmp_path)


def test_profiles_refuse_a_missing_model_file_and_unknown_kinds(
    tmp_path: Path, registry: Registry
) -> None:
    models = (
        '[[models]]\nname = "ppe"\npath = "models/ppe.onnx"\ninput_width = 32\n'
        'input_height = 32\nclasses = { "1" = "no_hat" }\n'
    )
    (tmp_path / "kitchen_camera.toml").write_text(models)
    with pytest.raises(ProfileError, match=r"kitchen_camera.toml: models: 'ppe': no model file"):
        ProfileBook(tmp_path, registry)
    (tmp_path / "models").mkdir()
    tiny_model(tmp_path / "models" / "ppe.onnx")
    book = ProfileBook(tmp_path, registry)
    assert book.profile("kitchen-0001-cam-1").models[0].classes == {"1": "no_hat"}
    (tmp_path / "kitchen_camera.toml").write_text(models.replace("no_hat", "no_helmet"))
    with pytest.raises(ProfileError, match="'no_helmet' is not a kind of the taxonomy"):
        ProfileBook(tmp_path, registry)
