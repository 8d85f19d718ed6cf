"""tools/accuracy/track_identity.py's scoring: a track's owner by box overlap, and the summary (no video)."""
from __future__ import annotations

import numpy as np

from tools.accuracy.track_identity import owner, summary


def test_a_track_belongs_to_the_instance_its_boxes_overlap_most():
    truth = {1: np.array([[0.0, 0.1, 0.1, 0.3, 0.3], [0.2, 0.1, 0.1, 0.3, 0.3]]),
             2: np.array([[0.0, 0.5, 0.5, 0.7, 0.7], [0.2, 0.52, 0.5, 0.72, 0.7]])}
    history = [(0.0, 0.5, 0.5, 0.7, 0.7), (0.2, 0.5, 0.5, 0.7, 0.7), (9.0, 0.5, 0.5, 0.7, 0.7)]  # last: no truth then
    iid, fit = owner(history, truth, fps=5.0)
    assert iid == 2 and 0.6 < fit < 2 / 3


def test_the_summary_counts_names_and_matches_per_cut():
    rows = [{"truth": "a", "vote": "a", "identity": "b", "own_picture": 0.8, "classes": {"a": 0.65, "b": 0.7}},
            {"truth": "b", "vote": "a", "identity": "b", "own_picture": 0.2, "classes": {"a": 0.1, "b": 0.35}}]
    s = summary(rows)
    assert s["tracks"] == 2 and s["named_right"] == {"vote": 0.5, "identity": 0.5}
    at = {c["cut"]: c for c in s["cuts"]}
    assert at[0.3] == {"cut": 0.3, "own_product_pictures": 1.0, "own_picture": 0.5, "other_products": 0.5}
    assert at[0.7] == {"cut": 0.7, "own_product_pictures": 0.0, "own_picture": 0.5, "other_products": 0.5}
