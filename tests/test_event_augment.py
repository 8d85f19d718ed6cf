"""The event stage's data: augmentation moves the labels with the frame, sampling weights balance the
flash colours, more frames come from handling periods, and recall is counted per item state."""
import numpy as np
import torch

from edge_runtime.checkout import CheckoutVideo, training_video
from edge_runtime.items.detections import LIGHTS, Detections
from export.train.event_augment import move_box
from export.train.event_data import EventFrames, frame_times, handling
from export.train.event_stage import detection_counts


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


def test_held_frames_come_from_handling_periods_beside_the_random_ones():
    seed, look = training_video(0, 0)
    video = CheckoutVideo(seed, 300.0, size=112, look=look)
    plain = frame_times(video, 5.0, 20, np.random.default_rng(1))
    more = frame_times(video, 5.0, 20, np.random.default_rng(1), held=15)
    assert set(plain) <= set(more) and len(more) == len(plain) + 15
    extra = sorted(set(more) - set(plain))
    assert all(handling(video.frame_labels(t)) for t in extra)


def test_detection_counts_split_recall_by_item_state():
    box = np.array([[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.7, 0.7], [0.6, 0.1, 0.9, 0.3]], np.float32)
    fr = EventFrames(torch.zeros(1, 1, 1), *(torch.zeros(1, 1) for _ in range(5)), torch.zeros(1), [box],
                     [np.array([0, 1, 2])], [np.array(["held", "basket", "held"], dtype=object)])
    found = Detections(0.0, box[:2] + 0.01, np.array([0.9, 0.8], np.float32), np.array([0, 2]),
                       np.zeros(2, np.float32), None, np.zeros(3, np.float32), None)
    c = detection_counts([found], fr)
    assert (c["items"], c["detections"], c["matched"], c["class_right"]) == (3, 2, 2, 1)
    assert c["per_state"]["held"] == [2, 1] and c["per_state"]["basket"] == [1, 1]
