"""lvm-edge query prints answers people can read: an object answer is a summary, not thousands of boxes."""
from edge_runtime.cli.answer_text import answer_text

COV = {"coverage": {"start": 0.0, "end": 1800.0, "covered_fraction": 1.0}, "gaps": [], "status": "answered"}


def test_object_summary_and_all_boxes():
    a = {"type": "object", "window": [0, 1800], "activity": "bag", "extent": [612.0, 618.4, 0.41],
         "times": [612.0 + 0.2 * i for i in range(33)], "boxes": [[0.1, 0.2, 0.3, 0.4]] * 33, **COV}
    text = answer_text(a)
    assert "seen 612.0–618.4 s (p 0.41), 33 box(es)" in text and "activity bag" in text
    assert text.count("[0.10 0.20 0.30 0.40]") == 3 and "--boxes" in text
    assert answer_text(a, all_boxes=True).count("[0.10 0.20 0.30 0.40]") == 33


def test_activity_time_and_no_memory():
    act = {"type": "activity", "window": [0, 300], "labels": ["scan", "bag"], "scores": {"bag": 0.2, "scan": 0.9},
           **COV}
    assert "scan 0.90, bag 0.20" in answer_text(act)
    t = {"type": "time", "window": [0, 300], "intervals": [[10.0, 20.0, 0.5]], **COV}
    assert "10.0–20.0 s (p 0.50)" in answer_text(t)
    none = {"type": "object", "window": [5000, 5100], "status": "no_memory", "message": "nothing in memory for this window",
            "coverage": {"start": None, "end": None, "covered_fraction": 0.0}, "gaps": []}
    text = answer_text(none)
    assert "no answer: nothing in memory" in text and "box" not in text
    part = {**t, "status": "partial", "coverage": {"start": 100.0, "end": 300.0, "covered_fraction": 0.5}}
    assert "answered from the covered part only" in answer_text(part)
