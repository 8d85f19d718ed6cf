"""tools/accuracy/activity_ceiling.py: ideal readers scored on the generator's ground truth."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge_runtime.checkout import heldout_video
from export.evaluate.scoring import engine_videos
from tools.accuracy.activity_ceiling import READERS, main, video_records

REPO = Path(__file__).resolve().parent.parent
PRIOR = np.array([0.9, 0.68, 0.59, 0.28, 0.25, 0.24, 0.14, 0.34])


def test_class_readers_are_exact_where_the_class_has_one_item_and_the_queries_are_lvm_evals():
    s, look = heldout_video(0, 0)
    recs = video_records(s, look, 900.0, 300, PRIOR)
    assert recs and all(r["item"] == 1.0 for r in recs)
    alone = [r for r in recs if r["class_items"] == 1]
    crowded = [r for r in recs if r["class_items"] > 1]
    assert alone and crowded
    # one item of the class in the window: seeing the class is seeing the item
    assert all(r["class_union"] == r["class_share"] == r["class_and_label"] == 1.0 for r in alone)
    # several: the class-level readers lose some queries, never the item reader
    assert np.mean([r["class_union"] for r in crowded]) < 1.0
    # the same present activity queries lvm-eval asks of this video (cfg only sets frame size and rate)
    cfg = SimpleNamespace(backbone=SimpleNamespace(image_size=112), stream=SimpleNamespace(fps=1.0))
    v = engine_videos(cfg, 300, 0, videos=1, video_s=900.0)[0]
    assert len(recs) == sum(q.type == "activity" for q in v.queries)


def test_cli_writes_a_table_per_window_and_refuses_a_bundle_without_a_prior(tmp_path, capsys):
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(json.dumps({"answers": {"reader": {"prior": PRIOR.tolist()}}}))
    out = tmp_path / "ceiling.json"
    assert main(["--bundle", str(bundle), "--videos", "1", "--video-s", "900", "--json", str(out)]) == 0
    table = json.loads(out.read_text())["by_seed"]["0"]
    assert set(table) <= {"short", "medium", "long"} and "short" in table
    for row in table.values():
        assert set(READERS) <= set(row) and row["item"] == 100.0
        assert row["target"] == round(row["no_video"] + 12, 1)
    (bundle / "manifest.json").write_text("{}")
    with pytest.raises(SystemExit) as err:
        main(["--bundle", str(bundle), "--videos", "1"])
    assert err.value.code == 2
    assert "no reader class prior" in capsys.readouterr().err
