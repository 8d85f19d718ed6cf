"""One resize for every path: a video read by the runtime (source -> Engine.encode) and by export's
calibration reaches the backbone as the same pixels."""
import cv2
import numpy as np
import pytest

from edge_runtime.config import resolve_model_config
from edge_runtime.engine.engine import Engine
from edge_runtime.sources.frames import resize_square
from edge_runtime.sources import open_source
from export.onnx.calibration import read_frames


def _write_avi(path, n=12, fps=2.0, w=150, h=90):
    # one side above the model's 112 and one below: the case where resize rules can disagree
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for _ in range(n):
        writer.write(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
    writer.release()
    return path


class _Backbone:
    """Records the frames the engine would feed its backbone graph."""

    def __init__(self, P, d):
        self.P, self.d, self.seen = P, d, []

    def infer(self, feed):
        self.seen.append(feed["frames"].copy())
        return {"tokens": np.zeros((len(feed["frames"]), self.P, self.d), np.float32)}


def _engine_frames(cfg, frames):
    eng = Engine.__new__(Engine)  # only the frame path: no bundle, no graphs
    eng.frame_size, eng.tokens_per_frame, eng.token_dim = (cfg.backbone.image_size, cfg.backbone.tokens_per_frame,
                                                           cfg.backbone.dim)
    eng.batch_size = 4
    eng.backbone = _Backbone(eng.tokens_per_frame, eng.token_dim)
    eng.encode(frames)
    return np.concatenate(eng.backbone.seen)


def test_runtime_and_calibration_feed_identical_frames(tmp_path):
    cfg = resolve_model_config("lvm-tiny")
    size, fps = cfg.backbone.image_size, cfg.stream.fps
    avi = str(_write_avi(tmp_path / "mixed.avi"))

    with open_source(avi, target_fps=fps, size=size) as src:  # as the pipeline opens it
        frames = list(src)
    runtime = _engine_frames(cfg, np.stack([f.image for f in frames]))
    cal = read_frames(avi, cfg, max_frames=100)
    assert runtime.shape == (len(frames), size, size, 3)
    np.testing.assert_array_equal(cal.frames, runtime)
    np.testing.assert_array_equal(cal.times, [f.t for f in frames])

    # frames handed to the engine at their own size are resized by the same rule
    raw = []
    cap = cv2.VideoCapture(avi)
    ok, bgr = cap.read()
    while ok:
        raw.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        ok, bgr = cap.read()
    cap.release()
    picked = np.stack([raw[f.index] for f in frames])
    np.testing.assert_array_equal(_engine_frames(cfg, picked), runtime)


@pytest.mark.parametrize("shape, interp", [((224, 300), cv2.INTER_AREA), ((112, 300), cv2.INTER_AREA),
                                           ((90, 150), cv2.INTER_LINEAR), ((60, 80), cv2.INTER_LINEAR)])
def test_resize_rule(shape, interp):
    img = np.random.default_rng(1).integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_square(img, 112), cv2.resize(img, (112, 112), interpolation=interp))


def test_right_size_is_not_copied():
    img = np.zeros((112, 112, 3), np.uint8)
    assert resize_square(img, 112) is img
