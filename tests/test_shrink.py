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

from edge_runtime.checkout import ACTIVITIES, CheckoutVideo, ShrinkRates, sample_queries
from edge_runtime.checkout.shrink import BEHAVIOURS

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


def test_shrink_off_in_every_spelling_is_the_video_without():
    base = CheckoutVideo(seed=3, duration_s=300.0, size=64)
    for off in (None, "0", "off", ShrinkRates(), {"bagged_unscanned": 0.0}):
        v = CheckoutVideo(seed=3, duration_s=300.0, size=64, shrink=off)
        assert v.shrink is None and v.video_id == base.video_id and v.annotations() == base.annotations()
        assert np.array_equal(v.frame(123.0), base.frame(123.0))


def test_rates_are_validated_and_parsed():
    assert ShrinkRates.default() == ShrinkRates(0.03, 0.02, 0.02) == ShrinkRates.parse("default")
    assert ShrinkRates.parse(" 0.1, 0 ,0.05 ") == ShrinkRates(0.1, 0.0, 0.05)
    assert ShrinkRates.parse("0.1,0,0.05").tag() == "0.1,0,0.05" and not ShrinkRates.parse("off").on
    for bad, msg in (("lots", "expected 0, default, or three rates"), ("1,2", "expected 0, default"),
                     ("a,b,c", "are not all numbers"), ("0.5,0.5,0.5", "sum to 1.5"), ("-0.1,0,0", "must be a number in 0..1"),
                     ("nan,0,0", "must be a number in 0..1")):
        with pytest.raises(ValueError, match=msg) as err:
            ShrinkRates.parse(bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="unknown behaviour 'stolen'"):
        CheckoutVideo(seed=1, duration_s=60.0, shrink={"stolen": 0.1})


@pytest.fixture(scope="module")
def heavy():
    """A 30-minute video with a third of the bought items given each behaviour (so all occur)."""
    return CheckoutVideo(seed=5, duration_s=1800.0, size=64, shrink="0.3,0.3,0.3")


def test_behaviours_and_their_ground_truth(heavy):
    ann = heavy.annotations()
    assert ann["version"] == 2 and ann["activities"] == list(ACTIVITIES) and ann["shrink"]["pass_around"] == 0.3
    assert heavy.video_id.endswith("-shrink0.3-0.3-0.3")
    assert json.loads(json.dumps(ann)) == ann
    by_inst: dict[int, list[dict]] = {}
    for e in ann["events"]:
        by_inst.setdefault(e["instance_id"], []).append(e)
    sessions = {s["session"]: s for s in ann["sessions"]}
    got = {b: 0 for b in BEHAVIOURS}
    for inst in ann["instances"]:
        acts = [e["activity"] for e in sorted(by_inst.get(inst["instance_id"], []), key=lambda e: e["start"])
                if e["activity"] != "browse"]  # a glance over the basket can come before anything
        assert inst["transaction"] == inst["session"]
        assert inst["scanned"] == ("scan" in acts)
        b = inst["shrink"]
        if b is None:  # one the shrink stream chose but the video ends first is no ground truth yet
            assert "pass_around" not in acts or acts[-1] == "pass_around"
            continue
        got[b] += 1
        assert not inst["scanned"]
        if b == "bagged_unscanned":
            assert acts[-1] == "bag" and acts[0] in ("bag", "pick_up")
        elif b == "pass_around":
            assert acts[0] == "pick_up" and "pass_around" in acts and acts[-1] == "bag"
        else:  # never taken out (perhaps browsed): visible until the shopper leaves with the basket
            assert acts == [] and inst["vanish"] == min(sessions[inst["session"]]["end"], ann["duration_s"])
    assert all(n >= 3 for n in got.values()), got


def test_a_pass_around_never_flashes_the_scanner(heavy):
    ann = heavy.annotations()
    passes = [e for e in ann["events"] if e["activity"] == "pass_around"]
    assert passes
    session_flashes = heavy.script.flashes  # spurious blinks aside, every flash is a scan's
    for e in passes:
        assert not any(f0 < e["end"] and f1 > e["start"] for f0, f1, _ in session_flashes), e
        labels = heavy.frame_labels((e["start"] + e["end"]) / 2)
        assert labels["activity"] == ACTIVITIES.index("pass_around") and labels["scanner_flash"] is None


def test_bagged_from_the_basket_is_drawn_from_the_basket(heavy):
    ann = heavy.annotations()
    first = {}
    for e in sorted(ann["events"], key=lambda e: e["start"]):
        first.setdefault(e["instance_id"], e)
    from_basket = [i for i in ann["instances"] if i["shrink"] == "bagged_unscanned" and first[i["instance_id"]]["activity"] == "bag"]
    assert from_basket
    for inst in from_basket:
        e = first[inst["instance_id"]]
        before = heavy.frame_labels(e["start"] - 0.05)
        assert any(x["instance_id"] == inst["instance_id"] and x["zone"] == "basket" for x in before["instances"])
        assert not any(x["instance_id"] == inst["instance_id"] for x in heavy.frame_labels(e["end"] + 0.05)["instances"])


def test_same_rates_same_items_and_the_rest_of_the_world_is_kept(heavy):
    again = CheckoutVideo(seed=5, duration_s=1800.0, size=64, shrink=ShrinkRates(0.3, 0.3, 0.3))
    assert again.annotations() == heavy.annotations()
    plain = CheckoutVideo(seed=5, duration_s=1800.0, size=64).annotations()
    shrunk = heavy.annotations()
    # the same customers with the same items: only what they do with them (and so when) changes
    n = min(len(plain["sessions"]), len(shrunk["sessions"]))
    for a, b in zip(plain["sessions"][:n], shrunk["sessions"][:n]):
        assert a["instance_ids"] == b["instance_ids"]
    assert plain["sessions"][0]["start"] == shrunk["sessions"][0]["start"]
    pa = {i["instance_id"]: i["product"] for i in plain["instances"]}
    assert all(pa.get(i["instance_id"], i["product"]) == i["product"] for i in shrunk["instances"])


def test_demo_source_streams_the_shrink_video():
    from edge_runtime.sources import open_source

    want = CheckoutVideo(seed=5, duration_s=30.0, size=32, shrink="default")
    with open_source("demo://checkout?seed=5&duration=30&shrink=default", target_fps=1, size=32) as src:
        assert src.video.video_id == want.video_id
    with open_source("demo://checkout?seed=5&duration=30&shrink=0", target_fps=1, size=32) as src:
        assert src.video.shrink is None


def test_a_rendered_shrink_dataset_checks_clean_and_reads_per_item_fields(tmp_path):
    from export.cli.data import main as lvm_data
    from export.dataset import check_dataset, open_dataset
    from export.dataset.labels import LabelSet
    from export.dataset.render import plain, render_dataset

    # seed 5's first customer (from 8 s) has items passed around and left in the basket at these rates
    render_dataset(tmp_path, plain([5]), duration_s=150.0, size=32, fps=0.2, crops=False, progress=False,
                   say=lambda s: None, shrink="0.3,0.3,0.3")
    render_dataset(tmp_path, plain([3]), duration_s=20.0, size=32, fps=0.2, crops=False, progress=False,
                   say=lambda s: None)  # a video without shrink added to the folder: labels stay the longer list
    assert check_dataset(tmp_path) == []
    d = open_dataset(tmp_path)
    assert d.labels == LabelSet.generator(shrink=True)
    insts = {it.stem: it.annotations["instances"] for it in d.items}
    assert {i["shrink"] for i in insts["s5-l1"]} > {None}
    assert all(set(i) >= {"scanned", "transaction", "shrink"} for v in insts.values() for i in v)
    assert all(i["shrink"] is None for i in insts["s3-l3"])
    assert lvm_data(["render", "--seeds", "1", "--out", str(tmp_path / "x"), "--shrink", "lots"]) == 2
