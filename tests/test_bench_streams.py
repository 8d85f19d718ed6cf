"""tools/bench/cli.py P8 (many streams in one process): the quick run writes every figure with sane
values. Timings are not checked — the quick run is a smoke test, not a measurement."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_p8_quick_run(tmp_path, tiny_bundle):
    """``tiny_bundle``: the parts run the tests' lvm-tiny fp32 bundle instead of exporting their own."""
    cmd = [sys.executable, "-m", "tools.bench", "--quick", "--only", "P8", "--no-plots", "--out", str(tmp_path),
           "--bundle", str(tiny_bundle)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=1800)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["quick"] is True and r["parts_run"] == ["P8"] and not r["errors"]
    assert r["bundles"]["lvm-tiny-fp32"]["built_by"] == "given (--bundle)"
    f, d = r["figures"], r["parts"]["P8"]
    for model in ("lvm-tiny",):  # the quick plan runs lvm-tiny only
        best = f[f"P8.{model}.streams_realtime"]
        assert best["unit"] == "streams" and best["value"] in [0] + d["plan"]["levels"][model]
        levels = d["realtime"][model]["levels"]
        assert levels and all(lv["dropped"] == 0 for lv in levels)
        assert all(lv["frames_in_memory"] > 0 and lv["max_commit_delay_s"] is not None for lv in levels)
        assert f[f"P8.{model}.state_bytes_per_stream"]["value"] > 0
        assert f[f"P8.{model}.rss_bytes_per_stream"]["unit"] == "bytes"
        assert d["render"][model]["demo_render_ms_per_frame"] > 0
    # lvm-tiny's quick levels reach a committed clip, so queries ran and were timed
    q = d["realtime"]["lvm-tiny"]["levels"][0]["query_ms"]
    assert q["n"] > 0 and 0 < q["median"] <= q["p99"]
    assert f["P8.lvm-tiny.query_p99_ms"]["goal"] == "<= 50"
    sep = d["batched_vs_separate"]["lvm-tiny"]
    assert f["P8.lvm-tiny.batched_vs_separate"]["goal"] == ">= 1.5"
    assert math.isfinite(f["P8.lvm-tiny.batched_vs_separate"]["value"]) and sep["hub"] and sep["separate"]
    long = d["long_run"]
    assert len(long["marks"]) == 10 and long["frames"] >= long["streams"] * long["stream_s_each"] * 0.99
    assert math.isfinite(f["P8.rss_growth_pct"]["value"])
    md = (tmp_path / "results.md").read_text()
    assert "P8.lvm-tiny.streams_realtime" in md and "QUICK RUN" in md
