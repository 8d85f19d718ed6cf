"""tools/accuracy/seen_evidence.py --bundle: a bundle's own p_seen, scored against lvm-eval's "not seen" table."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "engines" / "lvm-tiny-fp32"


@pytest.mark.slow
@pytest.mark.skipif(not (BUNDLE / "manifest.json").is_file(), reason="the shipped bundle is not in this checkout")
def test_bundle_mode_agrees_with_the_runtime_evaluation(tmp_path, monkeypatch):
    from edge_runtime.backends.bundle import load_bundle
    from edge_runtime.engine.engine import Engine
    from export.evaluate.scoring import engine_videos, evaluate_engine
    from tools.accuracy.seen_evidence import PRESENT_WRONG_BUNDLE, main

    monkeypatch.chdir(REPO)
    out = tmp_path / "seen.json"
    assert main(["--bundle", str(BUNDLE), "--videos", "1", "--video-s", "600", "--seed", "2", "--threads", "1",
                 "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    # the same videos and queries through lvm-eval's path: its "not seen" shares are the bundle's own cut
    b = load_bundle(BUNDLE)
    ref = evaluate_engine(lambda: Engine(b, threads=1, answers="reader"),
                          engine_videos(b.cfg, 300, 2, videos=1, video_s=600.0, absent_share=0.2),
                          progress=False)["not_seen"]
    assert set(got["types"]) == {"activity", "object", "time"}
    for qt, r in got["types"].items():
        assert (r["present"], r["absent"]) == (ref[qt]["present"], ref[qt]["absent"])
        assert r["bundle_cut"]["absent_not_seen"] == pytest.approx(ref[qt]["absent_not_seen"], abs=1e-3)
        assert r["bundle_cut"]["present_not_seen"] == pytest.approx(ref[qt]["present_not_seen"], abs=1e-3)
        assert 0.0 <= r["auc_p_seen"] <= 1.0
        caught = [r["absent_not_seen_at_present_wrong"][f"{w:.3f}"] for w in PRESENT_WRONG_BUNDLE]
        assert caught == sorted(caught)  # a higher cut catches no fewer absent queries
