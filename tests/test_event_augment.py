"""The event stage's augmentation moves the labels with the frame, and its sampling weights balance the flash colours."""
import numpy as np
import torch

from edge_runtime.items.detections import LIGHTS
from export.train.event_augment import move_box
from export.train.event_data import EventFrames


def test_move_box_follows_the_affine_and_drops_boxes_mostly_out_of_view():
    box = np.array([0.2, 0.3, 0.4, 0.5])
    assert np.allclose(move_box(box, np.eye(3)), box)
    shift = np.array([[1, 0, 0.1], [0, 1, -0.05], [0, 0, 1.0]])
    assert np.allclose(move_box(box, shift), [0.3, 0.25, 0.5, 0.45])
    half_zoom = np.diag([0.5, 0.5, 1.0])  # about the origin: x1y1x2y2 halve
    assert np.allclose(move_box(box, half_zoom), box / 2)
    out = np.array([[1, 0, 0.7], [0, 1, 0], [0, 0, 1.0]])  # 0.9..1.1: half of it leaves the frame
    assert move_box(np.array([0.2, 0.3, 0.45, 0.5]), out) is None


def test_weights_give_the_flash_share_split_evenly_between_green_and_red():
    light = torch.tensor([0] * 90 + [LIGHTS.index("green")] * 8 + [LIGHTS.index("red")] * 2)
    n = len(light)
    fr = EventFrames(torch.zeros(n, 1, 1), *(torch.zeros(n, 1) for _ in range(5)), light, [], [])
    w = fr.weights(0.2)
    assert torch.isclose(w.sum(), torch.tensor(1.0))
    for name, share in (("off", 0.8), ("green", 0.1), ("red", 0.1)):
        assert torch.isclose(w[light == LIGHTS.index(name)].sum(), torch.tensor(share))
