"""The measuring side of the item tracks' answers (tools/accuracy/answers_with_items.py) on hand-made
rows: shares of "not seen", the reader with its cut moved to as many present ones, R@1x per cell."""
from __future__ import annotations

from tools.accuracy.answers_with_items import matched_reader, recall, shares


def test_not_seen_shares_per_type_and_overall():
    rows = [("time", True, True), ("time", True, False), ("time", False, True), ("time", False, False),
            ("object", False, False)]
    got = shares(rows)
    assert got["time"] == {"absent": 2, "present": 2, "absent_not_seen": 0.5, "present_not_seen": 0.5}
    assert got["all"]["present_not_seen"] == round(1 / 3, 4) and got["activity"]["absent_not_seen"] is None


def test_the_matched_reader_moves_its_cut_to_as_many_present_ones_called_not_seen():
    # (type, absent, the reader said not seen, p_seen): the reader's cut is 0.5
    reader = [("activity", False, True, 0.2), ("activity", False, False, 0.9), ("activity", True, True, 0.1),
              ("activity", True, True, 0.3), ("activity", True, False, 0.6)]
    # the item tracks took back the present one: none is called not seen
    judged = [("activity", False, False), ("activity", False, False), ("activity", True, True),
              ("activity", True, True), ("activity", True, False)]
    got = matched_reader(reader, judged)["activity"]
    assert got["present_not_seen"] == 0.0 and got["absent_not_seen"] == round(1 / 3, 4)  # cut under 0.2: only 0.1
    # as many present ones as the reader itself: the cut goes up to the next present p_seen (0.9)
    same = matched_reader(reader, [(t, a, ns) for t, a, ns, _ in reader])["activity"]
    assert same["present_not_seen"] == 0.5 and same["absent_not_seen"] == 1.0


def test_recall_per_type_and_window():
    got = recall([("object", "short", 1.0), ("object", "short", 0.0), ("time", "long", 1.0)])
    assert got == {"object": {"short": {"n": 2, "r@1x": 50.0}}, "time": {"long": {"n": 1, "r@1x": 100.0}}}
