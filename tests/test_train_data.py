"""Training from a dataset folder: decoding files like the runtime, crops, the token cache, per-frame
targets from annotations, lvm-train --data / --init-from, and bad datasets."""
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from edge_runtime.checkout import BASE_ACTIVITIES as ACTIVITIES, PRODUCTS, CheckoutVideo  # videos without shrink

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "models" / "lvm-tiny.yaml"
SHIPPED = REPO / "checkpoints" / "lvm-tiny.safetensors"
# two generator videos of different lengths (6 and 5 clips of 16 s at lvm-tiny's 1 fps)
VIDEOS = {"a": (1, 96.0), "b": (2, 80.0)}
CROP_FILE_INSTANCE = ("b", 3)  # this instance is given a crop file; the others are cut from the video


def _write_dataset(root: Path, videos: dict = VIDEOS) -> Path:
    (root / "videos").mkdir(parents=True)
    (root / "annotations").mkdir()
    (root / "crops").mkdir()
    (root / "labels.yaml").write_text(yaml.safe_dump({"version": 1, "activities": list(ACTIVITIES),
                                                      "objects": list(PRODUCTS)}))
    for stem, (seed, dur) in videos.items():
        v = CheckoutVideo(seed=seed, duration_s=dur, size=112, look=0)
        w = cv2.VideoWriter(str(root / "videos" / f"{stem}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 1.0, (112, 112))
        for _, img in v.frames(1.0):
            w.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        w.release()
        ann = v.annotations()
        ann.pop("video_id")  # the stem
        if stem == CROP_FILE_INSTANCE[0]:
            iid = CROP_FILE_INSTANCE[1]
            cv2.imwrite(str(root / "crops" / f"{stem}-{iid}.png"),
                        cv2.cvtColor(v.object_crop(iid, size=80), cv2.COLOR_RGB2BGR))
            next(i for i in ann["instances"] if i["instance_id"] == iid)["crop"] = f"crops/{stem}-{iid}.png"
        (root / "annotations" / f"{stem}.json").write_text(json.dumps(ann))
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _write_dataset(tmp_path_factory.mktemp("ds") / "shop")


def _item(root, stem):
    from export.dataset import open_dataset

    return next(it for it in open_dataset(root).items if it.stem == stem)


def test_load_dataset_video_matches_the_rendering(dataset):
    from edge_runtime.sources.frames import resize_square
    from export.dataset.video_data import best_box, load_dataset_video, render_video, square_crop

    for stem, (seed, dur) in VIDEOS.items():
        item = _item(dataset, stem)
        d = load_dataset_video(item, 112, 1.0)
        r = render_video(seed, dur, 112, 1.0, look=0)
        assert d.video is None and d.size == 112
        np.testing.assert_array_equal(d.times, r.times)
        mse = np.mean((d.frames.astype(np.float64) - r.frames.astype(np.float64)) ** 2)
        assert 10 * np.log10(255**2 / mse) > 25  # mp4v at its default quality: ~28-30 dB
        boxed = [i for i in d.crop_ids if (stem, i) != CROP_FILE_INSTANCE]
        assert boxed == sorted(int(k) for k in item.annotations["boxes"] if (stem, int(k)) != CROP_FILE_INSTANCE)
        for iid in boxed:  # a 112-px video: the crop comes from the decoded frame nearest the best box
            b = best_box(item.annotations["boxes"][str(iid)])
            j = int(np.abs(d.times - b[0]).argmin())
            np.testing.assert_array_equal(d.object_crop(iid, 64), resize_square(square_crop(d.frames[j], b[1:]), 64))
        if stem == CROP_FILE_INSTANCE[0]:
            iid = CROP_FILE_INSTANCE[1]
            img = cv2.cvtColor(cv2.imread(str(item.crop_files[iid])), cv2.COLOR_BGR2RGB)
            np.testing.assert_array_equal(d.object_crop(iid, 112), resize_square(img, 112))


def test_square_crop_pads_outside_the_frame_with_grey():
    from export.dataset.video_data import CROP_GREY, square_crop

    frame = np.full((100, 200, 3), 7, np.uint8)
    c = square_crop(frame, [0.9, 0.4, 1.0, 0.6])  # 20 x 20 px at the right edge -> a ~26 px square
    assert c.shape[0] == c.shape[1] == round(20 / 0.78)
    assert (c[:, :23] == 7).all() and (c[:, 23:] == CROP_GREY).all()  # x 177..203 of a 200-px frame


def test_dataset_token_cache_hits_and_misses_on_the_file_bytes(dataset, tmp_path, monkeypatch):
    import export.dataset.video_data as data_mod
    from edge_runtime.config import resolve_model_config
    from export.dataset.video_data import backbone_digest, encode_video, load_dataset_video
    from export.model.lvmnet import LVMNet

    root = tmp_path / "copy"
    shutil.copytree(dataset, root)
    torch.manual_seed(0)
    net = LVMNet(resolve_model_config("lvm-tiny")).eval()
    sha = backbone_digest(net.backbone)
    cache = tmp_path / "cache"
    first = encode_video(net.backbone, load_dataset_video(_item(root, "b"), 112, 1.0), cache=cache, backbone_sha=sha)
    assert len(list(cache.glob("*.safetensors"))) == 1 and first.crop_tokens
    real = data_mod.frame_encoder
    monkeypatch.setattr(data_mod, "frame_encoder", lambda *a, **k: pytest.fail("cache hit expected"))
    again = encode_video(net.backbone, load_dataset_video(_item(root, "b"), 112, 1.0), cache=cache, backbone_sha=sha)
    assert torch.equal(again.tokens, first.tokens) and again.crop_tokens.keys() == first.crop_tokens.keys()
    monkeypatch.setattr(data_mod, "frame_encoder", real)
    with open(root / "videos" / "b.mp4", "ab") as fh:  # other bytes (trailing junk decodes the same)
        fh.write(b"\0" * 64)
    encode_video(net.backbone, load_dataset_video(_item(root, "b"), 112, 1.0), cache=cache, backbone_sha=sha)
    assert len(list(cache.glob("*.safetensors"))) == 2


def test_frame_targets_from_annotations_agree_with_the_generator(dataset):
    from export.dataset.video_data import load_dataset_video, render_video
    from export.train.pretrain import frame_targets

    d = load_dataset_video(_item(dataset, "a"), 112, 1.0)
    r = render_video(1, 96.0, 112, 1.0, look=0)
    files, gen = frame_targets(d, 7), frame_targets(r, 7)
    assert (files["hand"] == -1).all()  # not known from annotations
    np.testing.assert_array_equal(files["activity"], gen["activity"])
    np.testing.assert_array_equal(files["patches"], gen["patches"])
    np.testing.assert_array_equal(files["patch_class"], gen["patch_class"])
    np.testing.assert_array_equal(files["patch_activity"], gen["patch_activity"])
    assert (files["products"] == gen["products"]).mean() > 0.99


def test_patch_classes_name_the_product_under_each_box_centre():
    from edge_runtime.checkout import PRODUCTS
    from export.dataset.video_data import render_video
    from export.train.pretrain import frame_targets

    r = render_video(3, 120.0, 112, 1.0, look=1)
    pc = frame_targets(r, 7)["patch_class"]
    assert pc.shape == (len(r.times), 49)
    none = len(PRODUCTS)
    assert 0.01 < (pc < none).mean() < 0.5  # products show in some patches, most show none
    class_of = {int(i["instance_id"]): int(i["class_id"]) for i in r.annotations["instances"]}
    checked = 0
    for key, track in r.annotations["boxes"].items():
        for t, x1, y1, x2, y2 in np.asarray(track).reshape(-1, 5):
            f = np.flatnonzero(np.isclose(r.times, t))
            if len(f) == 0:
                continue
            p = min(int((y1 + y2) / 2 * 7), 6) * 7 + min(int((x1 + x2) / 2 * 7), 6)
            # another product's box may cover this patch in front of it, never "none"
            assert pc[f[0], p] != none
            checked += pc[f[0], p] == class_of[int(key)]
    assert checked > 50


def test_patch_activities_name_the_event_on_the_product_each_patch_shows():
    from edge_runtime.checkout import BASE_ACTIVITIES, PRODUCTS
    from export.dataset.video_data import render_video
    from export.train.pretrain import frame_targets

    r = render_video(3, 120.0, 112, 1.0, look=1)
    tg = frame_targets(r, 7)
    pa, pc = tg["patch_activity"], tg["patch_class"]
    none = len(BASE_ACTIVITIES)
    # a label exactly where a product shows; patches of no product are left out
    np.testing.assert_array_equal(pa >= 0, pc < len(PRODUCTS))
    assert (pa == none).any() and ((pa >= 0) & (pa < none)).any()
    # frames inside an event carry its activity on the patches of its product
    checked = 0
    for e in r.annotations["events"]:
        f = np.flatnonzero((r.times >= e["start"]) & (r.times < e["end"]))
        for i in f:
            checked += int(e["activity_id"]) in set(pa[i].tolist())
    assert checked > 10


def _main(argv, capsys):
    from export.cli.train import main

    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr()


def _bad(tmp_path, dataset, edit):
    root = tmp_path / "bad"
    shutil.copytree(dataset, root)
    edit(root)
    return root


def _split_val(root):
    for f in (root / "annotations").glob("*.json"):
        f.write_text(json.dumps({**json.loads(f.read_text()), "split": "val"}))


def _short(root):
    shutil.rmtree(root)
    _write_dataset(root, {"a": (1, 96.0), "b": (2, 20.0)})  # b: 20 s, not two 16-s clips


@pytest.mark.parametrize("case,expect", [
    ("broken", "problem"), ("val_only", "no videos in split 'train'"), ("short", "shorter than two clips"),
    ("videos", "drop them"), ("other_arch", "another architecture")])
def test_lvm_train_data_bad_input_is_one_line(case, expect, dataset, tmp_path, capsys):
    argv = ["--config", TINY, "--out", tmp_path / "run", "--no-progress"]
    if case == "broken":
        (tmp_path / "broken").mkdir()
        (tmp_path / "broken" / "labels.yaml").write_text("not: [a, mapping")
        argv += ["--data", tmp_path / "broken"]
    elif case == "val_only":
        argv += ["--data", _bad(tmp_path, dataset, _split_val)]
    elif case == "short":
        argv += ["--data", _bad(tmp_path, dataset, _short)]
    elif case == "videos":
        argv += ["--data", dataset, "--videos", "3"]
    else:
        argv = ["--config", REPO / "configs" / "models" / "lvm-edge.yaml", "--out", tmp_path / "run",
                "--data", dataset, "--init-from", SHIPPED]
    rc, io = _main(argv, capsys)
    assert rc == 2
    lines = io.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lvm-train: error:") and expect in lines[0], io.err
