"""The event head: the module's outputs, the runtime's decoding of them, and bundles with and without
its graph (the shipped bundle carries it; the tests' bundle is exported with --no-events)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from edge_runtime.backends.bundle import BundleError, load_bundle
from edge_runtime.backends.bundle_runners import open_runners
from edge_runtime.items.detections import LIGHTS, ZONE_CLASSES
from edge_runtime.items.head_decode import OUTPUTS, decode, suppress
from export.model.event_head import (
    EventHead,
    EventHeadConfig,
    load_event_head,
    save_event_head,
)


def test_head_outputs_are_probabilities_and_boxes_in_the_frame():
    torch.manual_seed(0)
    head = EventHead(32, 3, 5, EventHeadConfig(d_model=16, layers=1)).eval()
    with torch.no_grad():
        out = head(torch.randn(4, 9, 32) * 3)
    assert tuple(out) == OUTPUTS
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "det_score": (4, 9), "det_box": (4, 9, 4), "det_class": (4, 9, 5), "det_held": (4, 9),
        "light": (4, len(LIGHTS)), "zone": (4, 9, len(ZONE_CLASSES))}
    for name in ("det_class", "light", "zone"):
        assert torch.allclose(out[name].sum(-1), torch.ones(()), atol=1e-5)
    box = out["det_box"]
    assert box.min() >= 0 and box.max() <= 1 and (box[..., 2:] >= box[..., :2]).all()


def test_config_is_checked_and_the_file_round_trips(tmp_path):
    with pytest.raises(ValueError, match="d_model"):
        EventHeadConfig(d_model=2)
    head = EventHead(32, 3, 2, EventHeadConfig(d_model=16, layers=1))
    save_event_head(tmp_path / "e.safetensors", head, {"classes": ["milk", "eggs"], "threshold": 0.4})
    back, meta = load_event_head(tmp_path / "e.safetensors", 32, 3)
    assert meta["classes"] == ["milk", "eggs"] and meta["threshold"] == 0.4 and back.ec == head.ec
    with pytest.raises(ValueError, match="do not fit a backbone of width 64"):
        load_event_head(tmp_path / "e.safetensors", 64, 3)


def _outputs(scores: np.ndarray, boxes: np.ndarray | None = None) -> dict[str, np.ndarray]:
    n, P = scores.shape
    if boxes is None:  # each cell its own box, far from the others'
        boxes = np.zeros((n, P, 4), np.float32)
        boxes[..., 0] = boxes[..., 1] = np.arange(P, dtype=np.float32)[None] / P
        boxes[..., 2:] = boxes[..., :2] + 0.5 / P
    cls = np.zeros((n, P, 3), np.float32)
    cls[..., 2] = 1.0
    light = np.array([[0.9, 0.05, 0.05], [0.2, 0.1, 0.7]], np.float32)[:n]
    zone = np.full((n, P, 5), 0.2, np.float32)
    return {"det_score": scores.astype(np.float32), "det_box": boxes, "det_class": cls,
            "det_held": np.full((n, P), 0.25, np.float32), "light": light, "zone": zone}


def test_suppress_keeps_the_best_of_overlapping_boxes_and_every_apart():
    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.11, 0.1, 0.31, 0.3], [0.3, 0.1, 0.5, 0.3], [0.12, 0.12, 0.3, 0.3]])
    assert suppress(boxes, 0.3).tolist() == [0, 2]       # 1 and 3 are the first box again; 2 touches it only
    assert suppress(boxes, 0.95).tolist() == [0, 1, 2, 3]
    assert suppress(boxes[:1], 0.3).tolist() == [0] and suppress(np.zeros((0, 4)), 0.3).tolist() == []


def test_decode_keeps_cells_above_the_threshold_and_suppresses_their_repeats():
    scores = np.array([[0.9, 0.8, 0.0,   # neighbours, apart boxes: both kept (two items side by side)
                        0.0, 0.0, 0.0,
                        0.0, 0.3, 0.6],  # 0.3 is below the threshold
                       [0.1, 0.0, 0.0,
                        0.0, 0.45, 0.0,  # below the threshold
                        0.0, 0.0, 0.0]], np.float32)
    out = _outputs(scores)
    first, second = decode(out, np.array([10.0, 10.2]), threshold=0.5)
    assert first.t == 10.0 and first.scores.tolist() == pytest.approx([0.9, 0.8, 0.6])
    assert first.boxes.tolist()[2] == pytest.approx(out["det_box"][0, 8].tolist())  # cell 8's box
    assert first.classes.tolist() == [2, 2, 2] and first.held.tolist() == [0.25, 0.25, 0.25]
    assert first.light is None and second.light == "red" and second.light_p.tolist() == pytest.approx([0.2, 0.1, 0.7])
    assert len(second) == 0 and second.zone_p.shape == (9, 5)
    # cell 1 sees cell 0's item (nearly its box): one detection, the higher score's
    out["det_box"][0, 1] = out["det_box"][0, 0] + 0.001
    first, _ = decode(out, np.array([10.0, 10.2]), threshold=0.5)
    assert first.scores.tolist() == pytest.approx([0.9, 0.6])
    with pytest.raises(ValueError, match="square grid"):
        decode(_outputs(np.zeros((1, 8))), np.zeros(1), 0.5)


def test_the_shipped_bundle_carries_the_event_head_and_a_no_events_one_does_not(shipped_engine, tiny_bundle):
    b = shipped_engine.bundle
    assert list(b.graphs) == ["backbone", "sampler", "heads", "reader", "answer"] and b.event_head is not None
    ev = b.events
    assert ev["event_fps"] == 5.0 and 0 < ev["threshold"] < 1
    assert ev["zones"] == list(ZONE_CLASSES) and ev["light_states"] == list(LIGHTS)
    assert ev["classes"] == b.labels["products"]
    runners, _, _ = open_runners(b, "onnxruntime", 1)
    try:
        head = runners["event_head"]
        P, d = b.cfg.backbone.tokens_per_frame, b.cfg.backbone.dim
        out = head.infer({"tokens": np.zeros((3, P, d), np.float32)})
        assert out["det_class"].shape == (3, P, len(ev["classes"])) and out["light"].shape == (3, 3)
        assert len(decode(out, np.arange(3.0), ev["threshold"])) == 3
    finally:
        for r in runners.values():
            r.deactivate()
    # the tests' bundle is exported with --no-events: no graph, no section, and it opens without them
    plain = load_bundle(tiny_bundle)
    assert plain.event_head is None and plain.events is None
    assert not (tiny_bundle / "event_head.onnx").exists()
    runners, _, _ = open_runners(plain, "onnxruntime", 1)
    try:
        assert set(runners) == {"backbone", "sampler", "heads", "reader", "answer"}
    finally:
        for r in runners.values():
            r.deactivate()


def test_a_bundle_with_the_event_head_graph_but_no_events_section_is_refused(shipped_engine, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(shipped_engine.bundle.path, broken)
    m = json.loads((broken / "manifest.json").read_text())
    del m["events"]
    (broken / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="event_head graph but no 'events' section"):
        load_bundle(broken)


def test_the_shipped_event_head_carries_the_readers_identity(shipped_engine):
    """Exported with the memory reader: det_embed is the reader's token identity of each cell, crop_embed
    its crop embedding of the input, both unit rows of the reader's embedding width."""
    b = shipped_engine.bundle
    dim = b.events["identity"]["dim"]
    assert dim == b.manifest["answers"]["reader"]["config"]["embed"]
    assert b.events["identity"]["reader_sha256"] == b.manifest["answers"]["reader"]["file_sha256"]
    runners, _, _ = open_runners(b, "onnxruntime", 1)
    try:
        P, d = b.cfg.backbone.tokens_per_frame, b.cfg.backbone.dim
        tokens = np.random.default_rng(0).normal(size=(3, P, d)).astype(np.float32)
        out = runners["event_head"].infer({"tokens": tokens})
        assert out["det_embed"].shape == (3, P, dim) and out["crop_embed"].shape == (3, dim)
        assert np.allclose(np.linalg.norm(out["det_embed"], axis=-1), 1, atol=1e-4)
        assert np.allclose(np.linalg.norm(out["crop_embed"], axis=-1), 1, atol=1e-4)
        dets = decode(out, np.arange(3.0), 0.0)  # every cell a detection: each carries its cell's identity
        assert all(x.embed is not None and x.embed.shape == (len(x), dim) for x in dets)
    finally:
        for r in runners.values():
            r.deactivate()
    assert shipped_engine.events.identity and shipped_engine.events.embed_dim == dim


@pytest.mark.parametrize("edit,message", [
    (lambda m: m["graphs"]["event_head"]["outputs"].pop(), "only part of det_embed, crop_embed"),
    (lambda m: m["events"].pop("identity"), "events.identity.dim is not a whole number"),
    (lambda m: m["events"]["identity"].update(dim=16), "event head does not match its config"),
])
def test_an_event_head_whose_identity_does_not_fit_is_refused_in_one_line(shipped_engine, tmp_path, edit, message):
    broken = tmp_path / "broken"
    shutil.copytree(shipped_engine.bundle.path, broken)
    m = json.loads((broken / "manifest.json").read_text())
    edit(m)
    (broken / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=message) as err:
        load_bundle(broken)
    assert "\n" not in str(err.value)


def test_a_detection_is_named_by_its_identity_beside_its_class():
    """log p(class) + weight x the cosine with the class's best picture: a clear identity outweighs a class
    read a little better; weight 0 (or no identity) names by the class alone."""
    from edge_runtime.items.head_decode import name_by_identity

    P = 4
    out = {"det_score": np.array([[0.9, 0.1, 0.1, 0.1]], np.float32),
           "det_box": np.tile(np.array([0.1, 0.1, 0.3, 0.3], np.float32), (1, P, 1)),
           "det_class": np.tile(np.array([0.6, 0.4], np.float32), (1, P, 1)),
           "det_held": np.zeros((1, P), np.float32), "light": np.array([[1, 0, 0]], np.float32),
           "zone": np.tile(np.eye(5, dtype=np.float32)[0], (1, P, 1)),
           "det_embed": np.tile(np.array([0, 1], np.float32), (1, P, 1))}
    protos = np.array([[[1, 0], [0.8, 0.6]], [[0, 1], [0.6, 0.8]]], np.float32)  # (K=2, Q=2, E=2): class 1 looks like it
    assert decode(out, np.zeros(1), 0.5)[0].classes.tolist() == [0]
    assert decode(out, np.zeros(1), 0.5, prototypes=protos, weight=0.0)[0].classes.tolist() == [0]
    named = decode(out, np.zeros(1), 0.5, prototypes=protos, weight=8.0)[0]
    assert named.classes.tolist() == [1] and named.embed.shape == (1, 2)
    assert name_by_identity(np.array([[0.99, 0.01]]), np.array([[0, 1.0]]), protos, 0.5).tolist() == [0]  # a sure class stays
