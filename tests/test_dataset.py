"""Dataset folders (export/dataset): a rendered tiny dataset round-trips through open_dataset and
passes lvm-data's checks; each kind of broken dataset gives the problem line naming file and field."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.checkout import ACTIVITIES, BASE_ACTIVITIES, PRODUCTS, CheckoutVideo, heldout_video, training_video
from export.dataset import DatasetError, LabelSet, check_dataset, load_labels, open_dataset
from export.dataset.render import like_eval, like_train, plain, render_dataset
from export.dataset.stats import dataset_stats, format_stats

DUR = 60.0
A, B = "train-0000-s0-l0", "train-0001-s1-l1"   # like_train([0, 1]) stems
ANN_A = f"annotations/{A}.json"


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """Two 60 s videos at 1 fps, 112 px: lvm-train's first two training videos, as files."""
    root = tmp_path_factory.mktemp("ds") / "good"
    render_dataset(root, like_train([0, 1]), duration_s=DUR, size=112, fps=1.0, crops=False, progress=False,
                   say=lambda s: None)
    return root


@pytest.fixture
def ds(good, tmp_path) -> Path:
    """A fresh copy of the good dataset to break."""
    return Path(shutil.copytree(good, tmp_path / "ds"))


def edit(root: Path, stem: str, fn) -> None:
    p = root / "annotations" / f"{stem}.json"
    ann = json.loads(p.read_text())
    fn(ann)
    p.write_text(json.dumps(ann))


def write_video(path: Path, n: int, fps: float = 1.0, size: int = 112) -> None:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    for i in range(n):
        w.write(np.full((size, size, 3), (i * 7) % 255, np.uint8))
    w.release()


def lines(root: Path, **kw) -> list[str]:
    return [str(p) for p in check_dataset(root, **kw)]


# ---- the good dataset ----------------------------------------------------------------------------

def test_rendered_dataset_round_trips(good):
    assert check_dataset(good) == []
    d = open_dataset(good)
    assert d.labels == LabelSet.generator()
    assert [it.stem for it in d.items] == [A, B]
    for it, i in zip(d.items, (0, 1)):
        seed, look = training_video(0, i)
        truth = CheckoutVideo(seed=seed, duration_s=DUR, size=112, look=look).annotations()
        assert it.split == "train" and it.video.suffix == ".mp4" and it.video.is_file()
        # files without shrink are annotation version 1: the reader derives the per-item checkout fields
        scanned = {e["instance_id"] for e in truth["events"] if e["activity"] == "scan"}
        truth["instances"] = [{**i, "scanned": i["instance_id"] in scanned, "transaction": i["session"], "shrink": None}
                              for i in truth["instances"]]
        assert it.annotations == {**truth, "split": "train"}
        assert it.crop_files == {}
    assert len(d.split("train")) == 2
    rep = json.loads((good / "render.json").read_text())
    assert rep["videos"][A]["frames"] == 60 and rep["videos"][A]["seed"] == 0
    assert 20.0 < rep["psnr_min_db"] <= rep["psnr_mean_db"] < 100.0   # lossy mp4v, but the same pictures


def test_render_writes_the_generator_crops(tmp_path):
    """With crops, a rendered dataset differs from the generator only by video compression."""
    root = tmp_path / "c"
    render_dataset(root, like_train([0]), duration_s=DUR, size=112, fps=1.0, progress=False, say=lambda s: None)
    assert check_dataset(root) == []
    item = open_dataset(root).items[0]
    seed, look = training_video(0, 0)
    video = CheckoutVideo(seed=seed, duration_s=DUR, size=112, look=look)
    ids = [i["instance_id"] for i in video.annotations()["instances"]]
    assert ids and sorted(item.crop_files) == ids
    for iid, path in item.crop_files.items():
        crop = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        assert np.array_equal(crop, video.object_crop(iid, size=112))   # PNG: lossless


def test_render_like_eval_and_plain(tmp_path):
    eval_specs = like_eval([0, 1], run_seed=2)
    assert [(s.seed, s.look, s.split) for s in eval_specs] == [(*heldout_video(2, i), "test") for i in (0, 1)]
    assert [(s.seed, s.look) for s in plain([3], "teal")] == [(3, 4)]
    render_dataset(tmp_path, eval_specs[:1] + plain([3], "teal", split="val"), duration_s=4, progress=False,
                   say=lambda s: None, codec="ffv1")
    d = open_dataset(tmp_path)
    assert {it.split for it in d.items} == {"test", "val"}
    assert json.loads((tmp_path / "render.json").read_text())["psnr_min_db"] == 100.0   # ffv1 is lossless


def test_stats(good):
    st = dataset_stats(open_dataset(good))
    a = st["all"]
    assert a["videos"] == 2 and a["duration_s"] == 120.0 and a["mean_duration_s"] == 60.0
    assert a["events"] == sum(a["activities"].values()) > 0
    assert a["events_per_hour"] == pytest.approx(a["events"] * 30.0)
    assert list(a["objects"]) == list(PRODUCTS) and st["splits"]["train"] == a
    assert "activity pick_up" in format_stats(st)


# ---- names, ids, defaults --------------------------------------------------------------------------

def test_names_and_ids_resolve_through_labels(ds):
    (ds / "labels.yaml").write_text("version: 1\nactivities: [scan, pick_up, bag, put_back, hold, inspect, "
                                    "hand_over, browse]\nobjects: [" + ", ".join(PRODUCTS) + "]\n")

    def ids_only(ann):     # ids through the file's own lists (the generator's order), names dropped
        for e in ann["events"]:
            del e["activity"]
        for i in ann["instances"]:
            del i["product"]
        del ann["duration_s"], ann["video_id"], ann["fps_boxes"], ann["split"]
    edit(ds, A, ids_only)

    def bare_ids(ann):     # no own lists: ids are positions in labels.yaml
        for key in ("activities", "products", "split"):
            del ann[key]
        for e in ann["events"]:
            del e["activity"]
    edit(ds, B, bare_ids)
    d = open_dataset(ds)
    a, b = d.items
    truth = CheckoutVideo(seed=0, duration_s=DUR, size=112, look=0).annotations()
    assert [e["activity"] for e in a.annotations["events"]] == [e["activity"] for e in truth["events"]]
    assert [e["activity_id"] for e in a.annotations["events"]] == [
        d.labels.activities.index(e["activity"]) for e in truth["events"]]
    assert a.annotations["duration_s"] == DUR     # from the video's frame count / fps
    assert a.annotations["video_id"] == A and a.annotations["fps_boxes"] == 5.0 and a.split == "train"
    assert [e["activity"] for e in b.annotations["events"]] == [d.labels.activities[e["activity_id"]]
                                                              for e in b.annotations["events"]]
    assert b.annotations["activities"] == list(d.labels.activities)


def test_splits_yaml_wins_and_missing_split_names_the_others(ds):
    (ds / "splits.yaml").write_text(f"train: [{A}]\ntest: [{B}]\n")
    d = open_dataset(ds)
    assert [it.split for it in d.items] == ["train", "test"]
    with pytest.raises(DatasetError, match=r"no videos in split 'val' \(splits here: test \(1\), train \(1\)\)"):
        d.split("val")


def test_labelset_dicts_and_load_errors(tmp_path):
    ls = LabelSet.generator()
    assert ls.activities == tuple(BASE_ACTIVITIES) and LabelSet.generator(shrink=True).activities == tuple(ACTIVITIES)
    assert LabelSet.from_dict(ls.to_dict()) == ls == LabelSet.from_dict({"activities": BASE_ACTIVITIES, "objects": PRODUCTS})
    with pytest.raises(DatasetError, match=r"activities\[1\]: 'a' repeats \[0\]"):
        LabelSet.from_dict({"activities": ["a", "a"], "products": ["x"]})
    # ask and the catalog read "Milk" and "milk " as one name
    with pytest.raises(DatasetError, match=r"products\[1\]: 'milk ' is \[0\] 'Milk' but for case or spacing"):
        LabelSet.from_dict({"activities": ["a"], "products": ["Milk", "milk "]})
    p = tmp_path / "labels.yaml"
    p.write_text("version: 1\nactivities: [a]\nobjects: []\n")
    with pytest.raises(DatasetError, match=r"labels.yaml: objects: must be a non-empty list"):
        load_labels(p)


def test_crops_are_items_crop_files(ds):
    (ds / "crops").mkdir()
    cv2.imwrite(str(ds / "crops" / "i0.png"), np.zeros((16, 16, 3), np.uint8))
    edit(ds, A, lambda ann: ann["instances"][0].update(crop="crops/i0.png"))
    item = open_dataset(ds).items[0]
    iid = item.annotations["instances"][0]["instance_id"]
    assert item.crop_files == {iid: ds / "crops" / "i0.png"}
    assert check_dataset(ds) == []


# ---- broken datasets: one kind of problem each ----------------------------------------------------

def _end_before_start(ann):
    ann["events"][2]["end"] = ann["events"][2]["start"] - 1.0


def _video_too_short(root):
    (root / "videos" / f"{A}.mp4").unlink()
    write_video(root / "videos" / f"{A}.mp4", 20)


def _video_too_short_no_duration(root):
    _video_too_short(root)
    edit(root, A, lambda ann: ann.pop("duration_s"))


BROKEN = {
    "labels_missing": (lambda r: (r / "labels.yaml").unlink(), r"^labels\.yaml: missing"),
    "labels_bad_yaml": (lambda r: (r / "labels.yaml").write_text("activities: [a, b\n"),
                        r"^labels\.yaml: not valid YAML at line \d+"),
    "labels_duplicate": (lambda r: (r / "labels.yaml").write_text("version: 1\nactivities: [a, b, a]\nobjects: [x]\n"),
                         r"^labels\.yaml: activities\[2\]: 'a' repeats \[0\]$"),
    "video_missing": (lambda r: (r / "videos" / f"{A}.mp4").unlink(),
                      rf"^{ANN_A}: no video videos/{A}\.\* for it$"),
    "video_undecodable": (lambda r: (r / "videos" / f"{A}.mp4").write_bytes(b"not a video at all" * 50),
                          rf"^videos/{A}\.mp4: (OpenCV cannot open it|no decodable video frames)"),
    "bad_json": (lambda r: (r / ANN_A).write_text('{"events": [1, 2,'), rf"^{ANN_A}: not valid JSON \(line 1 column"),
    "unknown_activity": (lambda r: edit(r, A, lambda a: a["events"][2].update(activity="bagg")),
                         rf"^{ANN_A}: events\[2\]\.activity: 'bagg' not in labels\.yaml activities$"),
    "activity_id_out_of_range": (lambda r: edit(r, A, lambda a: (a["events"][1].pop("activity"),
                                                                 a["events"][1].update(activity_id=42))),
                                 rf"^{ANN_A}: events\[1\]\.activity_id: 42 out of range"),
    "unknown_object": (lambda r: edit(r, A, lambda a: a["instances"][0].update(product="kumquat")),
                       rf"^{ANN_A}: instances\[0\]\.product: 'kumquat' not in labels\.yaml objects$"),
    "box_outside": (lambda r: edit(r, A, lambda a: next(iter(a["boxes"].values()))[3].__setitem__(3, 1.25)),
                    rf"^{ANN_A}: boxes\.\d+\[3\]: x2 1\.25 outside \[0, 1\]"),
    "box_inverted": (lambda r: edit(r, A, lambda a: next(iter(a["boxes"].values()))[0].__setitem__(3, 0.0)),
                     rf"^{ANN_A}: boxes\.\d+\[0\]: x2 0\.0 <= x1 "),
    "event_end_before_start": (lambda r: edit(r, A, _end_before_start),
                               rf"^{ANN_A}: events\[2\]\.end: [\d.]+ <= start [\d.]+$"),
    "event_past_end": (lambda r: edit(r, A, lambda a: a["events"][-1].update(end=75.0)),
                       rf"^{ANN_A}: events\[\d+\]\.end: 75\.0 past the video's end \(duration_s 60\.0\)$"),
    "instance_id_reused": (lambda r: edit(r, A, lambda a: a["instances"][1].update(
                               instance_id=a["instances"][0]["instance_id"])),
                           rf"^{ANN_A}: instances\[1\]\.instance_id: \d+ already used by instances\[0\]$"),
    "boxes_of_unknown_instance": (lambda r: edit(r, A, lambda a: a["boxes"].update({"99": [[1.0, .1, .1, .2, .2]]})),
                                  rf"^{ANN_A}: boxes\.99: boxes of an unknown instance 99"),
    "events_of_unknown_instance": (lambda r: edit(r, A, lambda a: a["events"][0].update(instance_id=99)),
                                   rf"^{ANN_A}: events\[0\]\.instance_id: 99 is not an instance in instances$"),
    "video_shorter_than_duration": (_video_too_short,
                                    rf"^{ANN_A}: duration_s: 60\.0 s but the video is shorter \(videos/{A}\.mp4: "
                                    r"20 frames at 1 fps = 20\.00 s\)$"),
    "video_shorter_than_events": (_video_too_short_no_duration,
                                  rf"^{ANN_A}: (events\[\d+\]\.end|boxes\.\d+\[\d+\]): [\d.]+ past the video's end "
                                  rf"\(videos/{A}\.mp4: 20 frames"),
    "duration_mismatch": (lambda r: write_video(r / "videos" / f"{A}.mp4", 64),
                          rf"^{ANN_A}: duration_s: 60\.0 s but the video is longer \(videos/{A}\.mp4: 64 frames at "
                          r"1 fps = 64\.00 s\)$"),
    "splits_unknown_stem": (lambda r: (r / "splits.yaml").write_text(f"train: [{A}, nosuch]\ntest: [{B}]\n"),
                            r"^splits\.yaml: train\[1\]: 'nosuch' is no stem of this dataset"),
    "splits_stem_twice": (lambda r: (r / "splits.yaml").write_text(f"train: [{A}, {B}]\ntest: [{B}]\n"),
                          rf"^splits\.yaml: test\[0\]: '{B}' is also in split 'train'$"),
    "crop_missing": (lambda r: edit(r, A, lambda a: a["instances"][0].update(crop="crops/gone.png")),
                     rf"^{ANN_A}: instances\[0\]\.crop: crops/gone\.png: no such file$"),
    "crop_undecodable": (lambda r: ((r / "crops").mkdir(), (r / "crops" / "x.png").write_bytes(b"junk"),
                                    edit(r, A, lambda a: a["instances"][0].update(crop="crops/x.png"))),
                         rf"^{ANN_A}: instances\[0\]\.crop: crops/x\.png: cannot be decoded as an image$"),
    "instance_without_picture": (lambda r: edit(r, A, lambda a: a["boxes"].pop(str(a["events"][0]["instance_id"]))),
                                 rf"^{ANN_A}: instances\[\d+\]: instance \d+ has events but neither boxes nor a crop"),
    "annotation_without_video": (lambda r: (r / "annotations" / "lonely.json").write_text(
                                     (r / ANN_A).read_text()),
                                 r"^annotations/lonely\.json: no video videos/lonely\.\* for it$"),
}


NEEDS_DECODING = {"video_undecodable", "video_shorter_than_duration", "video_shorter_than_events", "duration_mismatch"}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_each_broken_dataset_names_file_and_field(ds, kind):
    breaker, pattern = BROKEN[kind]
    breaker(ds)
    found = lines(ds)
    assert any(re.search(pattern, s) for s in found), found
    assert all("\n" not in s for s in found)
    if kind in NEEDS_DECODING:
        open_dataset(ds)   # open_dataset decodes nothing: these are lvm-data check's to find
    else:
        with pytest.raises(DatasetError, match=r"problems? \(first: .*\); run lvm-data check"):
            open_dataset(ds)


def test_video_without_annotation_is_a_warning(ds):
    (ds / ANN_A).unlink()
    probs = check_dataset(ds)
    assert [(str(p), p.level) for p in probs] == [(f"videos/{A}.mp4: no annotations/{A}.json: left out (warning)",
                                                    "warning")]
    assert [it.stem for it in open_dataset(ds).items] == [B]


def test_several_problems_are_all_listed(ds):
    edit(ds, A, lambda a: (a["events"][2].update(activity="bagg"), a["events"][0].update(instance_id=99)))
    edit(ds, B, lambda a: a["events"][1].update(end=a["events"][1]["start"]))
    (ds / "videos" / f"{B}.mp4").write_bytes(b"junk" * 100)
    (ds / "splits.yaml").write_text("train: [nosuch]\n")
    found = lines(ds)
    for pat in (f"{ANN_A}: events[2].activity: 'bagg'", f"{ANN_A}: events[0].instance_id: 99",
                f"annotations/{B}.json: events[1].end: ", f"videos/{B}.mp4: ",
                "splits.yaml: train[0]: 'nosuch'"):
        assert sum(s.startswith(pat) for s in found) == 1, (pat, found)
    assert len(found) == 5
    with pytest.raises(DatasetError, match=r": 4 problems \(first: "):   # the undecodable video needs decoding
        open_dataset(ds)


def test_full_decode_finds_a_truncated_file(tmp_path):
    render_dataset(tmp_path, plain([1]), duration_s=20, codec="mjpg", progress=False, say=lambda s: None)
    video = tmp_path / "videos" / "s1-l1.avi"
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    assert check_dataset(tmp_path) == []          # header and first frame are fine
    found = [str(p) for p in check_dataset(tmp_path, full=True)]
    assert len(found) == 1 and re.match(r"videos/s1-l1\.avi: decoding stopped at frame \d+ of 20: .*"
                                        r"\(the file is truncated or damaged\)$", found[0]), found


def test_attach_queries_adds_absent_queries_without_changing_the_present_ones():
    import numpy as np

    from edge_runtime.checkout import CheckoutVideo
    from edge_runtime.checkout.absent_queries import is_absent
    from export.dataset.video_data import VideoData, attach_queries

    ann = CheckoutVideo(seed=11, duration_s=900.0, size=64).annotations()
    ids = [i["instance_id"] for i in ann["instances"]][:4]  # only these have a picture

    def video():
        return VideoData(annotations=ann, times=np.arange(900.0), crop=lambda i, s: None, crop_ids=ids,
                         key="k", size=64)

    plain = attach_queries(video(), 40, 3).queries
    mixed = attach_queries(video(), 40, 3, absent_share=0.2).queries
    assert mixed[: len(plain)] == plain
    absent = mixed[len(plain):]
    assert len(absent) == round(len(plain) * 0.25) and all(q.absent and is_absent(q) for q in absent)
    assert all(q.instance_id in ids for q in absent if q.instance_id is not None)
    assert not any(is_absent(q) for q in plain)
    with pytest.raises(ValueError, match="absent_share"):
        attach_queries(video(), 4, 3, absent_share=1.0)


def test_an_annotation_without_duration_is_checked_against_the_decoded_video(ds):
    """Without duration_s only decoding the file tells its length: lvm-train refuses an event past it, as
    lvm-data check does."""
    from export.dataset.video_data import load_dataset_video

    def past(ann):
        ann.pop("duration_s")
        ann["events"][0]["end"] = 500.0

    edit(ds, A, past)
    item = next(it for it in open_dataset(ds).items if it.stem == A)
    with pytest.raises(DatasetError, match=rf"^annotations/{A}\.json: events\[0\]\.end: 500 past the video's end"):
        load_dataset_video(item, 112, 1.0)
