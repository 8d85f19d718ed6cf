"""Own footage end to end: real video + a hand-made annotation in its own labels (tests/data/vtest) ->
dataset folder -> a few training steps -> an FP32 bundle -> `lvm-edge run` on the video, answering over
HTTP in those labels. A smoke path with tiny budgets: it checks that the labels travel and the pieces
fit, not accuracy (the test split is the training video). Skipped when the footage cannot be fetched."""
import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
import yaml

from tests.test_e2e import Proc, _footage

REPO = Path(__file__).resolve().parent.parent
LABELS = yaml.safe_load((REPO / "tests" / "data" / "vtest" / "labels.yaml").read_text())


def _cli(name: str, *args: str, timeout: float) -> str:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    res = subprocess.run([str(Path(sys.executable).parent / name), *args], check=False, capture_output=True,
                         text=True, cwd=REPO, env=env, timeout=timeout)
    assert res.returncode == 0, f"{name} {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    return res.stdout + res.stderr


def _person_crop(video: Path, ann: dict, instance_id: int) -> str:
    """PNG (base64) of one annotated person, cut from the video at the middle of the instance's track."""
    rows = ann["boxes"][str(instance_id)]
    t, x1, y1, x2, y2 = rows[len(rows) // 2]
    cap = cv2.VideoCapture(str(video))
    cap.set(cv2.CAP_PROP_POS_MSEC, t * 1000)
    ok, frame = cap.read()
    cap.release()
    assert ok, f"cannot read {video} at {t} s"
    h, w = frame.shape[:2]
    crop = frame[int(y1 * h):int(y2 * h), int(x1 * w):int(x2 * w)]
    return base64.b64encode(cv2.imencode(".png", crop)[1].tobytes()).decode()


def _trained_in_the_footages_labels(run: Path, said: str) -> None:
    """lvm-train --data --init-from on a folder with other activities: only the activity outputs start
    fresh, the shipped backbone is taken as it is, and every checkpoint names the folder's labels."""
    import torch

    from export.model.checkpoint import checkpoint_labels, load_checkpoint, read_metadata

    assert "heads.num_activities 8 -> 3" in said and "heads stage: 1 steps" in said, said[-3000:]
    reinit = [ln for ln in said.splitlines() if "re-initialised" in ln]
    assert len(reinit) == 1 and "heads.activity_mlp.weight" in reinit[0] and "sampler." not in reinit[0], reinit
    ckpt = run / "lvm-tiny.safetensors"
    meta = read_metadata(ckpt)
    mine = {"activities": LABELS["activities"], "products": LABELS["objects"]}
    assert checkpoint_labels(meta) == mine and checkpoint_labels(read_metadata(run / "checkpoint.safetensors")) == mine
    assert json.loads(meta["data"])["train_videos"] == 1 and meta["init_from"] == "checkpoints/lvm-tiny.safetensors"
    assert meta["heads_steps"] == "1"
    net, _ = load_checkpoint(ckpt)
    shipped, _ = load_checkpoint(REPO / "checkpoints" / "lvm-tiny.safetensors")
    assert net.cfg.heads.num_activities == 3
    theirs = shipped.backbone.state_dict()
    assert all(torch.equal(net.backbone.state_dict()[k], v) for k, v in theirs.items())  # no pre-training


@pytest.mark.slow
def test_own_footage_dataset_train_export_and_serve(tmp_path):
    data = _footage()
    if data is None:
        pytest.skip("real footage unavailable (tools/fetch_footage.sh could not fetch Debian's opencv-doc)")
    t0 = time.monotonic()
    took = {}
    ds = tmp_path / "vtest"
    subprocess.run([sys.executable, "-m", "tools.data.vtest_dataset", "--out", str(ds),
                    "--video", str(data / "vtest.avi")], check=True, capture_output=True, timeout=60, cwd=REPO)
    assert "ok" in _cli("lvm-data", "check", str(ds), timeout=120)

    took["dataset"] = time.monotonic() - t0
    run = tmp_path / "run"
    out = _cli("lvm-train", "--config", "configs/models/lvm-tiny.yaml", "--out", str(run), "--data", str(ds),
               "--init-from", "checkpoints/lvm-tiny.safetensors", "--epochs", "1", "--max-steps", "2",
               "--heads-steps", "1", "--reader-steps", "2", "--workers", "1", "--no-progress", "--no-token-cache",
               timeout=300)
    _trained_in_the_footages_labels(run, out)

    ckpt = run / "lvm-tiny.safetensors"
    took["train"] = time.monotonic() - t0 - sum(took.values())
    bundle = tmp_path / "bundle"
    _cli("lvm-export", "--precision", "fp32", "--checkpoint", str(ckpt), "--out", str(bundle), "--data", str(ds),
         "--skip-gate", "--bench-runs", "2", "--no-progress", timeout=300)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["labels"] == {"activities": LABELS["activities"], "products": LABELS["objects"]}
    # the reader trained on the folder reads its timeline track, as the shipped one does
    assert manifest["answers"]["kind"] == "reader" and "timeline" in manifest["answers"]["reader"]

    took["export"] = time.monotonic() - t0 - sum(took.values())
    video = ds / "videos" / "vtest.avi"
    ann = json.loads((ds / "annotations" / "vtest.json").read_text())
    p = Proc(["--source", str(video), "--bundle", str(bundle), "--state-dir", str(tmp_path / "state")],
             tmp_path / "run.log")
    try:
        p.wait_ready()
        st = p.wait_for(lambda s: s["state"] in ("ended", "failed"))
        assert st["state"] == "ended", st
        end = st["coverage"]["end"]
        assert end >= 70
        labels = p.get("/v1/labels").json()
        assert (labels["activities"], labels["products"]) == (LABELS["activities"], LABELS["objects"])

        # when did the man in the dark coat (instance 1) meet someone? Asked by the label's name.
        r = p.post("/v1/query/time", json={"activity": "meet", "object_image": _person_crop(video, ann, 1),
                                           "start": 0, "end": end})
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["activity"] == "meet" and answer["coverage"]["covered_fraction"] > 0, answer
        assert "timeline" in answer["read_from"], answer
        # which of this label set's activities did the man standing on the right (instance 2) do?
        r = p.post("/v1/query/activity", json={"object_image": _person_crop(video, ann, 2), "start": 0,
                                               "end": end})
        assert r.status_code == 200, r.text
        assert set(r.json()["scores"]) == set(LABELS["activities"]), r.json()
        print(f"\n'when did instance 1 meet?' (annotated 3-14.5 s; two training steps): "
              f"{answer['intervals'][:1]}")
        assert p.stop(signal.SIGTERM) == 0
    finally:
        p.stop(signal.SIGKILL)
    took["serve"] = time.monotonic() - t0 - sum(took.values())
    print("own footage: " + ", ".join(f"{k} {v:.0f} s" for k, v in took.items())
          + f"; total {time.monotonic() - t0:.0f} s")
