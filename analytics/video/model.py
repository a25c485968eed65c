"""The model plug-in: a district's own trained model for what the classic detectors cannot see
(no hat, no mask, no gloves, no work clothes, smoking, phone use, a bin lid open).

No model ships with Mingliang, and none is downloaded: no package in the registries ships a
hat, mask, PPE, smoking or rodent model. A district supplies an ONNX classifier and says in the
camera's profile how to feed it and which of its classes is which violation:

    [[models]]
    name = "ppe"
    path = "models/ppe.onnx"          # relative to the profiles folder
    input_width = 64
    input_height = 128
    scale = 0.00392156862745098       # 1/255
    mean = [0.0, 0.0, 0.0]
    rgb = true
    threshold = 0.6
    classes = { "1" = "no_hat", "2" = "smoking" }

The model takes one picture (N=1, 3 channels, input_height x input_width) and gives one score
per class (probabilities, or scores a softmax turns into them). It runs only on the regions
where the motion gate saw something of a person's size (`min_area`), so its cost follows
activity, not the frame rate. OpenCV's DNN module runs it; no other runtime is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from analytics.video.health import Observation
from analytics.video.motion import Motion
from analytics.video.profile import ModelSpec

Bgr = npt.NDArray[np.uint8]
Scores = Callable[[Bgr], npt.NDArray[np.float32]]  # one crop in, one score per class out
_CROP_W = 640  # crops are cut from the picture at up to this width


class ModelError(Exception):
    """A model cannot be loaded or does not fit its description."""


def onnx_classifier(spec: ModelSpec, folder: Path) -> Scores:
    """The model file of `spec` (relative to `folder`), loaded with OpenCV's DNN module."""
    path = spec.path if spec.path.is_absolute() else folder / spec.path
    try:
        net = cv2.dnn.readNetFromONNX(str(path))
    except cv2.error as exc:
        raise ModelError(f"model {spec.name!r}: cannot load {path}: {exc.msg}") from exc

    def scores(crop: Bgr) -> npt.NDArray[np.float32]:
        blob = cv2.dnn.blobFromImage(
            crop,
            scalefactor=spec.scale,
            size=(spec.input_width, spec.input_height),
            mean=tuple(spec.mean),
            swapRB=spec.rgb,
            crop=False,
        )
        net.setInput(blob)
        out = np.asarray(net.forward(), np.float32).reshape(-1)
        if out.min() < 0 or out.max() > 1 or abs(float(out.sum()) - 1) > 0.05:
            shifted = np.exp(out - out.max())
            out = shifted / shifted.sum()
        return out

    return scores


class ModelWatch:
    def __init__(self, spec: ModelSpec, scores: Scores) -> None:
        self.spec = spec
        self._scores = scores
        self._classes = {int(index): kind for index, kind in spec.classes.items()}

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted(set(self._classes.values())))

    def observe(self, motion: Motion, colour: Callable[[int], Bgr]) -> dict[str, Observation]:
        spec = self.spec
        boxes = [b for b in motion.boxes if b[2] * b[3] >= spec.min_area][: spec.max_regions]
        best: dict[str, tuple[float, list[float]]] = {}
        if boxes:
            picture = colour(_CROP_W)
            h, w = picture.shape[:2]
            for box in boxes:
                x0, y0 = int(box[0] * w), int(box[1] * h)
                x1, y1 = int((box[0] + box[2]) * w) + 1, int((box[1] + box[3]) * h) + 1
                crop = picture[y0:y1, x0:x1]
                if crop.size == 0:
                    continue
                scores = self._scores(crop)
                for index, kind in self._classes.items():
                    if index < len(scores) and float(scores[index]) > best.get(kind, (0.0, []))[0]:
                        best[kind] = (float(scores[index]), list(box))
        out: dict[str, Observation] = {}
        for kind in self.kinds:
            score, where = best.get(kind, (0.0, []))
            details: dict[str, object] = {"model": spec.name, "score": round(score, 3)}
            if where:
                details["box"] = where
            out[kind] = Observation(score >= spec.threshold, details)
        return out
