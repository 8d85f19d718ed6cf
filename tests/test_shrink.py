"""Scan-avoidance behaviours in the checkout generator (edge_runtime/checkout/shrink.py).

The shipped model and every accuracy figure in docs/ were made on the generator's videos without
shrink, so those must never move: the pinned hashes below were computed on the generator before
shrink existed (frames, annotations and sampled queries of two short videos)."""
from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest

from edge_runtime.checkout import CheckoutVideo, sample_queries

# (seed, look, duration) -> (frames at 0.5 fps and 64 px, annotations as sorted JSON, 30 queries from rng 0)
PINNED = {
    (3, None, 300.0): ("68fa40d350f926bce6d4035c53746c5f9412dc17834434a952f6963a1688fffb",
                       "f5619a30903104b18a1a3b9e76d8006b572a881145dcdc343e5fed8f73c73325",
                       "cb1648c5085f613226565fcf2e37ce5f1450dbcab3408d1a7df5ecd5ecb27d8a"),
    (1_000_004, 4, 240.0): ("ea7ad3759f443be618e0ad23dfa15b339a7861ce63225c09d7ce2664113273df",
                            "33a2a0b21780c0f5360cf76342ebadaf11537e1f943d91aea1a16a05dfca44dd",
                            "69665447ba71934f6a7065c7f0aa3d21b4d73031abe320bda6c484c57aa837f3"),
}
# frames are OpenCV's anti-aliased polygons: the pixel hashes hold for the OpenCV they were made with
PINNED_OPENCV = "5.0.0"


def _hashes(video: CheckoutVideo) -> tuple[str, str, str]:
    h = hashlib.sha256()
    for _, img in video.frames(fps=0.5):
        h.update(img.tobytes())
    ann = video.annotations()
    qs = sample_queries(ann, 30, np.random.default_rng(0))
    return (h.hexdigest(), hashlib.sha256(json.dumps(ann, sort_keys=True).encode()).hexdigest(),
            hashlib.sha256(json.dumps([q.to_dict() for q in qs], sort_keys=True).encode()).hexdigest())


@pytest.mark.parametrize("key", list(PINNED), ids=lambda k: f"s{k[0]}")
def test_without_shrink_the_videos_are_the_pinned_ones(key):
    seed, look, dur = key
    frames, ann, queries = _hashes(CheckoutVideo(seed=seed, duration_s=dur, size=64, look=look))
    assert ann == PINNED[key][1], "annotations without shrink changed"
    assert queries == PINNED[key][2], "sampled queries without shrink changed"
    if cv2.__version__ == PINNED_OPENCV:
        assert frames == PINNED[key][0], "frames without shrink changed"
