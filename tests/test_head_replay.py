"""tools/accuracy/head_replay: the rules over saved event-head outputs give the streamed run's alerts."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edge_runtime.engine.engine import Engine
from tools.accuracy import alerts_eval as ae
from tools.accuracy import head_replay
from tools.repo_paths import REPO

SHIPPED = REPO / "engines" / "lvm-tiny-fp32"


@pytest.mark.slow  # the accuracy tool (head_replay) streams a video three times
def test_a_replay_raises_what_the_streamed_run_raised_and_bad_folders_get_one_line(tmp_path, capsys):
    out = tmp_path / "heads"
    assert head_replay.main(["save", "--eval-seed", "0", "--videos", "1", "--video-s", "60", "--shrink",
                             "0.45,0.45,0.1", "--threads", "1", "--out", str(out)]) == 0
    meta = json.loads((out / "meta.json").read_text())
    video = head_replay.saved_video(meta, 0)
    rules = {r: th for r, th in ae.parse_sets([]).items() if r in head_replay.ITEM_RULES}
    ann = video.annotations()
    with np.load(out / "video0.npz") as z:
        outputs = {k: z[k] for k in z.files}
    with Engine(SHIPPED, threads=1) as eng:
        for scans in ("vision", "pos"):  # with the scanner light alone, and with the till's reads
            till = (ae.till_events(ann), ae.transactions(ann)) if scans == "pos" else ((), ())
            streamed, _ = ae.model(eng, video, rules, None, scans, *till)
            replayed = head_replay.replay_video(meta, outputs, video, rules, scans, meta["threshold"])
            key = [(d["rule"], d["product"], d["start"], d["end"], at) for d, at in streamed]
            assert key and [(d["rule"], d["product"], d["start"], d["end"], at) for d, at in replayed] == key, scans
    capsys.readouterr()
    assert head_replay.main(["replay", str(out), "--json", str(tmp_path / "r.json")]) == 0
    results = json.loads((tmp_path / "r.json").read_text())["results"]
    bags = [d for d, _ in streamed if d["rule"] == "bagged_without_scan"]
    assert results["item tracks (replayed)"]["bagged_without_scan"]["alerts"] == sum(not d.get("early") for d in bags)
    # the early nudges are scored apart: as the kiosk's screen gets them
    assert results["nudges: early, else the alert's"]["bagged_without_scan"]["alerts"] == sum(bool(d.get("early"))
                                                                                             for d in bags)
    # --list: a line for each alert, right or false, and for each target missed
    capsys.readouterr()
    assert head_replay.main(["replay", str(out), "--list"]) == 0
    listed = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("video 0 ")]
    want = ae.targets(ann)
    alerts = [d for d, _ in streamed if d["rule"] in want and not d.get("early")]
    found = {r: results["item tracks (replayed)"][r]["found"] for r in want if r in results["item tracks (replayed)"]}
    assert len(listed) == len(alerts) + sum(len(want[r]) - found[r] for r in found)
    assert sum(ln.endswith(": right") for ln in listed) == sum(found.values())
    # a folder it did not write, or a bad threshold setting: one line, exit 2
    capsys.readouterr()
    assert head_replay.main(["replay", str(tmp_path)]) == 2
    assert head_replay.main(["replay", str(out), "--set", "bagged_without_scan.item_min_confidence=3"]) == 2
    assert head_replay.main(["replay", str(out), "--handover-s", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("head_replay: ") for line in err), err
