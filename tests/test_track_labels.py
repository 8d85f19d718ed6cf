"""The track labeler: its numpy model against PyTorch's, the events it labels from a stream's tracks,
its rows in a snapshot, the queries reading its events, its training rows, and the bundle's checks."""
from __future__ import annotations

import json
import shutil
from argparse import Namespace

import numpy as np
import pytest
from safetensors.numpy import save_file

from edge_runtime.backends.bundle import BundleError, load_bundle
from edge_runtime.engine.event_path import track_labeler
from edge_runtime.items.detections import Detections
from edge_runtime.items.item_events import GeometricLabeler, ItemEvent
from edge_runtime.items.item_state import LONG_BAG_S, ItemState
from edge_runtime.items.sequence_model import FORMAT, SequenceModel
from edge_runtime.items.track_labels import MAX_ROWS
from edge_runtime.items.track_rows import FEATURES
from edge_runtime.items.zones import Zones

FPS = 5.0
CLASSES = ("none", *GeometricLabeler.activities)
COUNTER_BAG = {"counter": [[0, 0.3], [0.6, 0.3], [0.6, 0.9], [0, 0.9]], "bag": [[0.6, 0.3], [1, 0.3], [1, 0.9], [0.6, 0.9]]}


def bag_zone_model(path, hidden=4, feature="in_bag", **info):
    """A labeler that calls every frame whose box centre lies in the bag zone "bag", every other "none":
    the feature in_bag (or another ``feature``) passes through one unit of each layer's forward
    direction (its update gate shut)."""
    F, H, C = len(FEATURES), hidden, len(CLASSES)
    w = {"inp.weight": np.zeros((H, F)), "inp.bias": np.zeros(H), "out.weight": np.zeros((C, 2 * H)),
         "out.bias": np.zeros(C), "feature_mean": np.zeros(F), "feature_sd": np.ones(F)}
    w["inp.weight"][0, FEATURES.index(feature)] = 1.0
    for k, width in ((0, H), (1, 2 * H)):
        for s in ("", "_reverse"):
            w[f"gru.weight_ih_l{k}{s}"], w[f"gru.weight_hh_l{k}{s}"] = np.zeros((3 * H, width)), np.zeros((3 * H, H))
            w[f"gru.bias_ih_l{k}{s}"], w[f"gru.bias_hh_l{k}{s}"] = np.zeros(3 * H), np.zeros(3 * H)
            w[f"gru.bias_ih_l{k}{s}"][H:2 * H] = -20.0          # z ~ 0: the state is the candidate
        w[f"gru.weight_ih_l{k}"][2 * H, 0] = 5.0                 # candidate of unit 0 reads input unit 0
    w["out.weight"][CLASSES.index("bag"), 0] = 10.0
    w["out.bias"][0] = 5.0
    meta = {"format": FORMAT, "classes": json.dumps(list(CLASSES)), "layers": "2", "info": json.dumps({"fps": FPS, **info})}
    save_file({k: v.astype(np.float32) for k, v in w.items()}, str(path), metadata=meta)
    return SequenceModel.load(path)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return bag_zone_model(tmp_path_factory.mktemp("tl") / "bag.safetensors")


def square(k, x, cls=3, held=1.0, score=0.8, y=0.5):
    return Detections(k / FPS, np.array([[x, y, x + 0.1, y + 0.1]], np.float32), np.array([score]), np.array([cls]),
                      np.full(1, held, np.float32))


def carry(state, frames, x_of, cls_of=lambda k: 3, y=0.5):
    out = []
    for k in frames:
        x = x_of(k)
        out += state.update(square(k, x, cls_of(k), y=y) if x is not None else Detections(k / FPS, np.zeros((0, 4)),
                                                                                            [], [], []))
    return out


def test_the_numpy_model_gives_pytorchs_probabilities(tmp_path):
    torch = pytest.importorskip("torch")
    from export.onnx.track_labels_file import parity
    from export.train.track_labels import GRULabeler, save

    torch.manual_seed(0)
    net = GRULabeler(len(FEATURES), 8, 2, len(CLASSES))
    path = save(tmp_path / "tl.safetensors", net, np.full(len(FEATURES), 0.1, np.float32),
                np.full(len(FEATURES), 2.0, np.float32), {"fps": FPS})
    m = SequenceModel.load(path)
    assert m.activities == GeometricLabeler.activities and m.meta["fps"] == FPS
    assert parity(m) < 1e-5   # tracks of 1, 7 and 60 frames in one batch


def test_a_file_that_is_not_a_track_labeler_is_refused_in_one_line(tmp_path, model):
    bad = tmp_path / "x.safetensors"
    save_file({"a": np.zeros(2, np.float32)}, str(bad), metadata={"format": "lvm-events/1"})
    with pytest.raises(ValueError, match="not track labeler weights"):
        SequenceModel.load(bad)
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not readable as track labeler weights"):
        SequenceModel.load(tmp_path / "junk.safetensors")


def test_a_track_is_labelled_whole_when_it_ends(model):
    state = ItemState(Zones.from_dict(COUNTER_BAG), bundle_id="b", sequence=model)
    # carried across the counter into the bag (its centre past x = 0.6 from frame 13; the last two frames
    # read as another product), then gone: the track ends after 2 s unseen
    decided = carry(state, range(30), lambda k: 0.21 + 0.05 * max(0, k - 6) if k < 18 else None,
                    cls_of=lambda k: 5 if k >= 16 else 3)
    labelled = list(state.recent)
    assert [e.activity for e in labelled] == ["bag"]
    bag = labelled[0]
    # an event runs half a frame either side of its frames; a tie of votes goes to the lower class id
    assert bag.start == pytest.approx(13 / FPS - 0.1) and bag.end == pytest.approx(17 / FPS + 0.1)
    assert bag.class_id == 3
    assert bag.confidence == pytest.approx(float(model.probs([np.ones((1, len(FEATURES)))])[0][0, 3]), abs=0.05)
    assert state.activities == GeometricLabeler.activities and state.status()["labelled_by"] == "track_labels"
    # the rules read the geometric labeler's events, decided as they happen (a bag as it settles), kept apart
    assert [e.activity for e in decided] == ["bag"] and list(state.rule_events()) == decided
    plain = ItemState(Zones.from_dict(COUNTER_BAG), bundle_id="b")   # no track labeler: the rules read the same
    carry(plain, range(30), lambda k: 0.21 + 0.05 * max(0, k - 6) if k < 18 else None, cls_of=lambda k: 5 if k >= 16 else 3)
    assert plain.rule_events() == state.rule_events() == tuple(plain.recent)
    sd = state.state_dict()
    again = ItemState(Zones.from_dict(COUNTER_BAG), bundle_id="b", sequence=model)
    again.load_state_dict(sd, "b")
    assert again.rule_events() == state.rule_events() and list(again.recent) == labelled


def test_a_bag_seen_only_on_the_store_floor_across_the_counter_is_not_one(tmp_path):
    every_frame_bagged = bag_zone_model(tmp_path / "c.safetensors", feature="seen")

    def walk(state, y):   # carried left to right for 2 s, then gone
        carry(state, range(25), lambda k: 0.1 + 0.04 * k if k < 10 else None, y=y)
        return [e.activity for e in state.recent]

    # above every zone (the zones' top is y 0.3): someone walking by on the store floor, not a bag here
    assert walk(ItemState(Zones.from_dict(COUNTER_BAG), bundle_id="b", sequence=every_frame_bagged), 0.05) == []
    # the same over the counter, and on a stream without zones, is the labeler's bag
    assert walk(ItemState(Zones.from_dict(COUNTER_BAG), bundle_id="b", sequence=every_frame_bagged), 0.5) == ["bag"]
    assert walk(ItemState(Zones.from_dict({}), bundle_id="b", sequence=every_frame_bagged), 0.05) == ["bag"]


def test_a_long_bag_is_left_to_the_track_labeler_which_reads_it_before_the_track_ends(model):
    # held on the counter from 1.2 s and moved slowly into the bag zone (frame 40), then gone: the
    # geometric labeler decides a bag of 7.8 s, longer than LONG_BAG_S (a hold over the bag, as often)
    def slow(k):
        return 0.21 + 0.01 * max(0, k - 6) if k < 46 else None

    state = ItemState(Zones.from_dict(COUNTER_BAG), bundle_id="b", sequence=model)
    decided, k = [], 0
    while not decided:
        decided, k = carry(state, [k], slow), k + 1
    assert [e.activity for e in decided] == ["bag"] and decided[0].end - decided[0].start > LONG_BAG_S
    # the rules read it marked as left to the track labeler, whose bag of the live track comes at once
    assert list(state.rule_events()) == decided and state.left_to_labels(decided[0]) and not state.recent
    early = state.second_look()
    assert [(e.activity, e.track_id) for e in early] == [("bag", decided[0].track_id)]
    carry(state, range(k, 70), slow)   # the track ends: its labelling says the same
    assert not state.early and [(e.start, e.end, e.class_id) for e in state.second_look()] == \
        [(e.start, e.end, e.class_id) for e in early]
    # without the track labeler the rules read the bag as decided, not left to anything
    plain = ItemState(Zones.from_dict(COUNTER_BAG), bundle_id="b")
    carry(plain, range(70), slow)
    assert [e.activity for e in plain.rule_events()] == ["bag"] and plain.second_look() == ()
    assert not plain.left_to_labels(plain.rule_events()[0])


def test_live_tracks_are_labelled_for_a_query_and_rows_survive_a_snapshot(model):
    zones = Zones.from_dict(COUNTER_BAG)
    a = ItemState(zones, bundle_id="b", sequence=model)
    carry(a, range(12), lambda k: 0.21 + 0.05 * k)   # in the bag zone from frame 7, the track live
    assert not a.recent
    live = [e for e in a.query_events() if e.activity == "bag"]
    assert len(live) == 1 and live[0].start == pytest.approx(7 / FPS - 0.1)
    sd = a.state_dict()
    b = ItemState(zones, bundle_id="b", sequence=model)
    b.load_state_dict(sd, "b")
    assert np.array_equal(b.state_dict()["items.label_rows"], sd["items.label_rows"])
    for s in (a, b):  # the same frames after it: the same events
        carry(s, range(12, 30), lambda k: 0.21 + 0.05 * k if k < 14 else None)
    assert [(e.start, e.end) for e in a.recent] == [(e.start, e.end) for e in b.recent]
    assert a.nbytes() <= a.max_nbytes()
    # a snapshot without the labeler's rows (an older one) loads: its live tracks start them again
    old = {k: v for k, v in a.state_dict().items() if "label" not in k and "scanned" not in k and "decided" not in k}
    older = ItemState(zones, bundle_id="b", sequence=model)
    older.load_state_dict(old, "b")
    # a snapshot of a bundle without the track labeler: its one ring was what the rules read
    assert a.recent and older.rule_events() == tuple(a.recent) and not older.labels.rows


def test_a_long_track_is_labelled_as_its_rows_fill_and_nothing_twice(model):
    state = ItemState(Zones.from_dict(COUNTER_BAG), bundle_id="b", sequence=model)
    n = MAX_ROWS + 400

    def x(k):  # to and fro across the bag zone's edge, 40 frames a round, out of it at the cut (frame 500)
        return 0.455 + 0.01 * abs(k % 40 - 20)

    carry(state, range(n), x)
    state.flush()
    inside = [k for k in range(n) if x(k) + 0.05 > 0.6]
    want, run = [], [inside[0]]
    for k in inside[1:]:
        if k != run[-1] + 1:
            want.append(run)
            run = []
        run.append(k)
    want.append(run)
    want = [(round(r[0] / FPS - 0.1, 1), round(r[-1] / FPS + 0.1, 1)) for r in want if len(r) >= 2]
    runs = [(round(e.start, 1), round(e.end, 1)) for e in state.recent]
    assert len({e.track_id for e in state.recent}) == 1 and len(runs) == len(want) > 20
    assert runs == want
    assert len(state.labels.rows) == 0


def test_the_ring_is_kept_in_order_of_ends_and_its_horizon_holds():
    state = ItemState(Zones.from_dict(COUNTER_BAG), bundle_id="b", max_events=3)
    ev = lambda s, e: ItemEvent("bag", 2, 3, 1, s, e, 0.9, (0, 0, 1, 1), None)
    state._add([ev(0, 5), ev(0, 9), ev(0, 2), ev(0, 7)])
    assert [e.end for e in state.recent] == [5, 7, 9]          # 2 ended first: dropped first
    state._add([ev(0, 1)])                                     # before the ring's horizon: not kept
    assert [e.end for e in state.recent] == [5, 7, 9]
    state._add([ev(0, 6)])
    assert [e.end for e in state.recent] == [6, 7, 9]


def test_training_rows_are_the_runtimes_and_labelled_from_the_annotations():
    from edge_runtime.checkout import CheckoutVideo, heldout_video
    from edge_runtime.items.detections import from_frame_labels
    from edge_runtime.items.zones import scene_zones
    from export.train.track_labels import CLASSES as TRAINED, examples

    assert TRAINED == CLASSES
    seed, look = heldout_video(0, 0)
    video = CheckoutVideo(seed, 60, look=look, shrink="0.3,0.3,0.1")
    dets = [from_frame_labels(video.frame_labels(k / FPS)) for k in range(int(60 * FPS))]
    data = examples(dets, video.annotations(), FPS, scene_zones(video))
    labels = np.concatenate([y for _, y in data])
    assert all(x.shape == (len(y), len(FEATURES)) for x, y in data)
    found = {CLASSES[c] for c in np.unique(labels)}
    # item 0 is bagged straight from the basket (27.5-31.5 s), item 1 picked up and passed around the scanner
    assert {"none", "bag", "pick_up", "pass_around"} <= found


def test_the_bundles_track_labeler_is_checked(shipped_engine, tmp_path, model):
    src = shipped_engine.bundle.path
    copy = tmp_path / "b"
    shutil.copytree(src, copy)
    m = json.loads((copy / "manifest.json").read_text())
    save_to = copy / "track_labels.safetensors"
    bag_zone_model(save_to)
    m["events"]["track_labels"] = {"file": "track_labels.safetensors"}
    (copy / "manifest.json").write_text(json.dumps(m))
    assert track_labeler(load_bundle(copy)).activities == GeometricLabeler.activities
    m["events"]["track_labels"]["sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="does not match its sha256"):
        track_labeler(load_bundle(copy))
    m["events"]["track_labels"] = {"file": "gone.safetensors"}
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="gone.safetensors is missing"):
        track_labeler(load_bundle(copy))
    m["events"]["track_labels"] = {"file": "track_labels.safetensors"}
    m["events"]["event_fps"] = 10.0
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="trained at 5.0 fps"):
        track_labeler(load_bundle(copy))


def test_lvm_export_takes_the_file_beside_the_checkpoint_or_notes_its_absence(tmp_path, model):
    pytest.importorskip("torch")
    from export.cli.common import UsageError
    from edge_runtime.file_hash import sha256_file
    from export.onnx.track_labels_file import (
        BUNDLE_FILE,
        check_track_labels,
        copy_track_labels,
        default_track_labels_path,
    )

    ckpt, bundle, notes = tmp_path / "m.safetensors", tmp_path / "bundle", []
    bundle.mkdir()
    assert check_track_labels(ckpt, 5.0, notes) is None and "no track labeler" in notes[0]
    bag_zone_model(default_track_labels_path(ckpt))
    section = copy_track_labels(bundle, check_track_labels(ckpt, 5.0, notes))
    assert section["file"] == BUNDLE_FILE and section["sha256"] == sha256_file(bundle / BUNDLE_FILE)
    assert section["parity_max_abs"] < 1e-5 and "_path" not in section
    with pytest.raises(UsageError, match="trained at 5 fps, the event head runs at 10"):
        check_track_labels(ckpt, 10.0, notes)
    # one that learnt another event head's tracks is refused; the head it names is taken
    bag_zone_model(default_track_labels_path(ckpt), events_sha256="a" * 64)
    assert check_track_labels(ckpt, 5.0, notes, "a" * 64)["trained"]["events_sha256"] == "a" * 64
    with pytest.raises(UsageError, match="learnt the item tracks of another event head \\(sha256 aaaaaaaaaaaa\\)"):
        check_track_labels(ckpt, 5.0, notes, "b" * 64)


def test_the_training_command_refuses_bad_input_in_one_line(tmp_path, capsys):
    pytest.importorskip("torch")
    from export.train.track_labels import main

    assert main(["--out", str(tmp_path / "x.safetensors"), "--videos", "0"]) == 2
    assert main(["--out", str(tmp_path / "x.safetensors"), "--bundle", str(tmp_path)]) == 2
    assert main(["--out", str(tmp_path / "x.safetensors"), "--saved", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["track_labels: --videos, --video-s and --epochs must be positive",
                   f"track_labels: --bundle {tmp_path}: no manifest.json (an exported bundle folder)",
                   f"track_labels: --saved {tmp_path}: no meta.json (a folder tools/accuracy/head_replay.py save wrote)"]


def test_lvm_trains_stage_learns_the_tracks_the_bundle_gives(shipped_engine, tmp_path):
    """lvm-train's stage reads its own checkpoint's backbone and event head in PyTorch; the bundle's
    graphs in ONNX Runtime must give it the same detections, so the labeler learns the runtime's tracks."""
    pytest.importorskip("torch")
    from edge_runtime.file_hash import sha256_file
    from export.cli.train_resume import finished_stage
    from export.cli.train_track_labels import read_track_label_meta, track_labels_wanted
    from export.model.checkpoint import load_checkpoint
    from export.model.event_head import load_event_head
    from export.train.track_label_stage import head_detections, train_track_labels
    from export.train.track_labels import _bundle_detections, label_videos

    repo = shipped_engine.bundle.path.parent.parent
    net, _ = load_checkpoint(repo / "checkpoints" / "lvm-tiny.safetensors")
    events = repo / "checkpoints" / "lvm-tiny-events.safetensors"
    cfg = net.cfg.backbone
    head, meta = load_event_head(events, cfg.dim, cfg.grid)
    videos = label_videos(0, 49, 1, 60.0, cfg.image_size)  # one video: the second half's, more scans avoided
    assert [v.shrink.tag() for v in videos] == ["0.25,0.25,0.1"]
    from export.model.reader import load_reader

    reader = load_reader(repo / "checkpoints" / "lvm-tiny-reader.safetensors", net.cfg)[0]  # the bundle's identity
    ours = [d for _, dets in head_detections(net.backbone, head, meta["threshold"], videos, 5.0, progress=False,
                                             log=lambda m: None, reader=reader, classes=list(meta["classes"]))
            for d in dets]
    theirs = [d for dets in _bundle_detections(shipped_engine, videos, lambda m: None) for d in dets]
    assert len(ours) == len(theirs) == 300 and sum(len(d) for d in ours) > 50
    for a, b in zip(ours, theirs):
        assert len(a) == len(b) and np.array_equal(a.classes, b.classes)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
    out = tmp_path / "m-track-labels.safetensors"
    info = train_track_labels(net.backbone, events, out, dim=cfg.dim, grid=cfg.grid, size=cfg.image_size, seed=0,
                              first=49, videos=1, video_s=60.0, epochs=1, threads=1, progress=False,
                              log=lambda m: None)
    read = read_track_label_meta(out)
    assert info["tracks"] > 0 and SequenceModel.load(out).fits(5.0)
    assert read["checkpoint_sha256"] == sha256_file(events)
    assert read["train"] == {"videos": 1, "epochs": 1, "seed": 0, "first": 49, "video_s": 60.0, "reader_sha256": None}
    # lvm-train --resume keeps it on this event head with these settings, not on another head or other settings
    args = Namespace(track_label_videos=1, track_label_epochs=1, event_videos=48)
    assert finished_stage(out, events, read_track_label_meta, track_labels_wanted(args, 0, 60.0))
    assert not finished_stage(out, events, read_track_label_meta, track_labels_wanted(args, 0, 1800.0))
    # nor once a reader beside the checkpoint names the items (the tracks it learnt were named by class alone)
    reader_file = repo / "checkpoints" / "lvm-tiny-reader.safetensors"
    assert not finished_stage(out, events, read_track_label_meta, track_labels_wanted(args, 0, 60.0, reader_file))
    other = tmp_path / "other-events.safetensors"
    other.write_bytes(events.read_bytes() + b" ")
    assert not finished_stage(out, other, read_track_label_meta, track_labels_wanted(args, 0, 60.0))
