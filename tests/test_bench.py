"""tools/bench/cli.py: the quick run writes its outputs with the documented keys; helpers behave.

The end-to-end test runs ``--quick --only P4,P5`` (the whole quick run takes minutes on 2 cores
and builds bundles with lvm-export); set LVM_BENCH_FULL_QUICK=1 to run every part quickly.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench_mod():
    import tools.bench.common as bench_common

    return bench_common


def test_stats_and_figure_goals(bench_mod):
    s = bench_mod.stats([1.0, 2.0, 3.0, 4.0, float("nan")])
    assert s["median"] == 2.5 and s["n"] == 4 and s["min"] == 1.0 and s["max"] == 4.0
    assert bench_mod.stats([])["median"] is None
    f = bench_mod.figure(120.0, unit="x", samples=[100.0, 140.0], goal=(">=", 100.0))
    assert f["met"] is True and f["goal"] == ">= 100"
    assert (f["p10"], f["p90"], f["min"], f["max"], f["n"]) == (104.0, 136.0, 100.0, 140.0, 2)
    assert bench_mod.figure(12.0, unit="ms", goal=("<=", 10.0))["met"] is False
    assert bench_mod.figure(401408, unit="bytes", goal=("==", 401408.0))["met"] is True
    assert bench_mod.figure("skipped", unit="x", goal=(">=", 1.0))["met"] is None


def test_alternate_rotates_block_order(bench_mod):
    seen = []
    res = bench_mod.alternate({"a": lambda r: seen.append(("a", r)) or r, "b": lambda r: seen.append(("b", r)) or -r}, 3)
    assert res == {"a": [0, 1, 2], "b": [0, -1, -2]}
    assert [n for n, _ in seen] == ["a", "b", "b", "a", "a", "b"]


def test_cpu_monitor_and_rss(bench_mod, monkeypatch):
    clock = iter([100.0, 100.25])  # the monitor's start and stop
    monkeypatch.setattr(bench_mod, "pc", lambda: next(clock))
    mon = bench_mod.CpuMonitor()
    ld = mon.stop()
    assert ld["wall_s"] == 0.25  # the stretch between start and stop, by the module's clock
    assert "loadavg_start" in ld and "loadavg_end" in ld
    if "foreign_busy_frac" in ld:
        assert 0.0 <= ld["foreign_busy_frac"] <= 1.0
    assert bench_mod.rss_bytes() > 10 * 2**20


def test_accel_stream_path_runs_on_cpu(bench_mod):
    """The CUDA FP16 streaming path, exercised on CPU with bfloat16 autocast and the tiny config."""
    torch = pytest.importorskip("torch")
    import tools.bench.speed as bench_speed

    from edge_runtime.config import resolve_model_config
    from export.model.lvmnet import LVMNet

    torch.manual_seed(0)
    net = LVMNet(resolve_model_config("lvm-tiny")).eval()
    r = bench_speed.accel_stream_rate(net, "cpu", torch.bfloat16, clips=1, warmup=1)
    assert r["rtf"]["median"] > 0 and r["frames_per_clip"] == net.cfg.stream.clip_frames


def test_bad_arguments():
    res = subprocess.run([sys.executable, "-m", "tools.bench", "--only", "P10", "--quick"],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.returncode == 2 and "unknown part" in res.stderr
    res = subprocess.run([sys.executable, "-m", "tools.bench", "--only", "P8", "--quick", "--bundle", str(REPO / "configs")],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "--bundle" in res.stderr, res.stderr


@pytest.mark.slow
def test_quick_run_writes_results(tmp_path, tiny_bundle):
    """``tiny_bundle``: the parts run the tests' lvm-tiny fp32 bundle instead of exporting their own."""
    full = os.environ.get("LVM_BENCH_FULL_QUICK") == "1"
    cmd = [sys.executable, "-m", "tools.bench", "--quick", "--out", str(tmp_path), "--bundle", str(tiny_bundle)]
    if not full:
        cmd += ["--only", "P4,P5"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=1800)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["schema"] == "lvm-edge-bench/1" and r["quick"] is True
    assert not r["errors"]
    assert r["load"]["per_part"] and "loadavg_at_start" in r["load"]
    assert "lvm-tiny" in r["weights"]
    f = r["figures"]
    want = ["P4.rss_growth_pct", "P4.state_bytes", "P5.update_vs_recompute_speedup", "P5.online_residual_ratio",
            "P5.ipca_partial_fit_ms"]
    if full:
        want += ["P1.activity_speedup", "P1.object_speedup", "P2.lvm-tiny.onnxruntime_rtf",
                 "P2.lvm-edge.onnxruntime_rtf", "P2.lvm-tiny.torch_rtf", "P3.p50_ms", "P3.p99_ms",
                 "P3.latency_ratio_10h_vs_1min", "P6.backbone.int8_speedup", "P6.int8_accuracy_delta_points",
                 "P7.backbone_fraction_of_peak", "GPU.lvm-paper.fp16_rtf"]
    for key in want:
        assert key in f, key
        assert "value" in f[key] and "unit" in f[key]
    from edge_runtime.config import resolve_model_config

    cfg = resolve_model_config("lvm-tiny")
    expect = cfg.stream.memory_tokens * cfg.backbone.dim * 4
    assert f["P4.state_bytes"]["value"] == r["parts"]["P3_P4"]["p4"]["state_bytes_expected"] == expect
    assert f["P4.state_bytes"]["met"] is True
    assert f["P5.update_vs_recompute_speedup"]["goal"] == ">= 20"
    assert np.isfinite(f["P5.update_vs_recompute_speedup"]["value"])
    md = (tmp_path / "results.md").read_text()
    assert "QUICK RUN" in md and "P5.update_vs_recompute_speedup" in md
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert "P4_memory.png" in pngs and "P5_svd.png" in pngs


def _fake_parts(monkeypatch, keep: tuple[str, ...] = ()):
    """Every part (but those in ``keep``) replaced by one that records a figure and a detail dict, so
    a merge of runs is checked without measuring anything."""
    import tools.bench.answers
    import tools.bench.memory
    import tools.bench.precision
    import tools.bench.speed
    import tools.bench.streams
    import tools.bench.svd

    def fake(name):
        def part(ctx):
            ctx.fig(f"{name}.value", value=float(len(ctx.figures) + 1), unit="x")
            return {"what": f"{name} of {ctx.out.name}"}
        return part

    def p3_p4(ctx, want):
        detail = {}
        for p in sorted(want & {"P3", "P4"}):
            ctx.fig(f"{p}.value", value=1.0, unit="x")
            detail[p.lower()] = {"run_with": sorted(want)}  # tells the two runs' details apart
        return detail

    for mod, names in ((tools.bench.speed, ("p1", "p2", "gpu")), (tools.bench.svd, ("p5",)),
                       (tools.bench.precision, ("p6", "p7")), (tools.bench.streams, ("p8",)),
                       (tools.bench.answers, ("p9",))):
        for n in names:
            if n.upper() not in keep:
                monkeypatch.setattr(mod, n, fake(n.upper()))
    monkeypatch.setattr(tools.bench.memory, "p3_p4", p3_p4)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS"):
        monkeypatch.setenv(var, os.environ.get(var, "2"))  # main() pins them; monkeypatch puts them back


def test_only_keeps_every_earlier_part(tmp_path, monkeypatch):
    """--only P8 twice after a run of P1..P7: the second run must still hold P1..P7 (a merge that
    kept only the last file's parts_run erased them), and results.md names the run they came from."""
    from tools.bench.cli import main

    _fake_parts(monkeypatch)
    base = ["--quick", "--no-plots", "--out", str(tmp_path)]
    earlier = ("P1", "P2", "P3", "P4", "P5", "P6", "P7")
    assert main(["--only", ",".join(earlier)] + base) == 0
    first = json.loads((tmp_path / "results.json").read_text())
    assert sorted({k.split(".")[0] for k in first["figures"]}) == list(earlier)
    for _ in range(2):
        assert main(["--only", "P8"] + base) == 0
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["parts_run"] == ["P8"]
    for p in earlier:
        assert r["figures"][f"{p}.value"] == first["figures"][f"{p}.value"], p
    assert "P8.value" in r["figures"]
    assert set(r["parts"]) == {"P1", "P2", "P3_P4", "P5", "P6", "P7", "P8"}
    assert r["parts"]["P3_P4"] == first["parts"]["P3_P4"]
    assert set(r["load"]["per_part"]) == {"P1", "P2", "P3+P4", "P5", "P6", "P7", "P8"}
    (kept,) = r["kept_from_earlier_runs"]
    assert kept["parts"] == sorted(earlier) and kept["started_utc"] == first["started_utc"]
    assert "--only P1,P2,P3,P4,P5,P6,P7" in kept["command"]
    md = (tmp_path / "results.md").read_text()
    assert f"Parts {', '.join(sorted(earlier))} are kept from an earlier run" in md
    assert "| P2.value | not run" not in md and "| P2.lvm-tiny.onnxruntime_rtf | not run" in md

    # one of the two parts that share a stream: the other's detail stays
    assert main(["--only", "P4"] + base) == 0
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["parts"]["P3_P4"]["p3"] == first["parts"]["P3_P4"]["p3"]
    assert r["parts"]["P3_P4"]["p4"] != first["parts"]["P3_P4"]["p4"]
    assert {k.split(".")[0] for k in r["figures"]} == set(earlier) | {"P8"}
    assert [k["parts"] for k in r["kept_from_earlier_runs"]] == [["P8"], ["P1", "P2", "P3", "P5", "P6", "P7"]]


def test_only_replaces_results_of_another_kind(tmp_path, monkeypatch, capsys):
    """A full run's results are not mixed with a --quick run's: the file is replaced, and the log says so."""
    from tools.bench.cli import main

    _fake_parts(monkeypatch)
    assert main(["--only", "P1,P2", "--no-plots", "--out", str(tmp_path)]) == 0
    assert main(["--only", "P8", "--quick", "--no-plots", "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "results.json").read_text())
    assert set(r["figures"]) == {"P8.value"} and "kept_from_earlier_runs" not in r
    assert "it is replaced, not merged" in capsys.readouterr().out


@pytest.mark.slow
def test_p9_heads_vs_reader_quick(tmp_path, monkeypatch, tiny_bundle):
    """P9 on the test bundle (the shipped checkpoint with its reader): both engines answer, each
    with its own kind, per-query medians for batches of 1 and 32; a run of P9 alone keeps the parts
    already in results.json."""
    from tools.bench.cli import main

    if json.loads((tiny_bundle / "manifest.json").read_text())["answers"].get("kind") != "reader":
        pytest.fail("the test bundle has no reader: lvm-export should bundle checkpoints/lvm-tiny-reader.safetensors")
    _fake_parts(monkeypatch, keep=("P9",))
    base = ["--quick", "--no-plots", "--threads", "1", "--out", str(tmp_path)]
    assert main(["--only", "P5"] + base) == 0
    assert main(["--only", "P9", "--p9-bundle", str(tiny_bundle), "--p9-models", "lvm-tiny"] + base) == 0
    r = json.loads((tmp_path / "results.json").read_text())
    assert not r["errors"] and "P5.value" in r["figures"]  # the earlier part is kept
    f = r["figures"]
    for b in (1, 32):
        for kind in ("heads", "reader"):
            x = f[f"P9.{kind}_ms_per_query_b{b}"]
            assert x["unit"] == "ms" and x["value"] > 0 and x["p10"] <= x["value"] <= x["p90"]
        assert f[f"P9.heads_over_reader_b{b}"]["value"] > 0
    assert f["P9.reader_facts_ms_per_commit"]["value"] > 0
    d = r["parts"]["P9"]["models"]["lvm-tiny"]
    assert d["answered_by"] == {"heads": ["heads"], "reader": ["reader"]}
    assert "reader" in d["commit_stages_s"]["reader"] and "reader" not in d["commit_stages_s"]["heads"]
    assert "P9.reader_ms_per_query_b32" in (tmp_path / "results.md").read_text()
    # a bundle without the reader pair is the part's error, in one line, the run goes on
    plain = tmp_path / "plain"
    plain.mkdir()
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    m["answers"] = {"object_extent": True, "kind": "heads"}
    (plain / "manifest.json").write_text(json.dumps(m))
    assert main(["--only", "P9", "--p9-bundle", str(plain), "--p9-models", "lvm-tiny"] + base) == 1
    r = json.loads((tmp_path / "results.json").read_text())
    assert "has no reader" in r["errors"]["P9"] and "\n" not in r["errors"]["P9"]


def test_fresh_reader_beside_a_fresh_checkpoint(tmp_path):
    """A freshly initialised checkpoint gets a fresh reader where lvm-export looks for a trained one, so
    its bundle carries the graphs the runtime answers with by default (P9's lvm-edge row): the export's
    own reader check accepts it for that model, it is written once, and a model whose activities the
    shipped calibration does not have gets one line, not a reader."""
    from edge_runtime.config import resolve_model_config
    from export.onnx.reader_graphs import default_reader_path, open_reader
    from tools.bench.common import fresh_reader_beside

    cfg = resolve_model_config("lvm-tiny")
    ckpt = tmp_path / "lvm-tiny-init.safetensors"
    path = fresh_reader_beside(ckpt, cfg)
    assert path == default_reader_path(ckpt) and path.is_file()
    rf = open_reader(None, ckpt, cfg, disabled=False)
    assert rf is not None and rf.meta["config_sha256"] == cfg.digest() and rf.timeline is not None
    assert "speed only" in rf.meta["train"]["note"]
    before = path.stat().st_mtime_ns
    assert fresh_reader_beside(ckpt, cfg) == path and path.stat().st_mtime_ns == before
    other = cfg.model_copy(update={"heads": cfg.heads.model_copy(update={"num_activities": 9})})
    with pytest.raises(RuntimeError, match="9 activities"):
        fresh_reader_beside(tmp_path / "other.safetensors", other)


@pytest.mark.slow
def test_timeline_cost_runs_both_bundles(tmp_path, tiny_bundle):
    """tools.bench.timeline_cost runs `lvm-edge demo` on each bundle per round and reads the rate it
    printed (here the same bundle twice: the structure, not the figure); a folder without a bundle is
    refused in one line."""
    from tools.bench.timeline_cost import main

    out = tmp_path / "cost.json"
    assert main(["--with", str(tiny_bundle), "--without", str(tiny_bundle), "--rounds", "1", "--threads", "1",
                 "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert len(r["video_s_per_s"]["with"]) == len(r["video_s_per_s"]["without"]) == 1
    assert r["median"]["with"] > 0 and r["ratio_with_over_without"]["median"] > 0
    with pytest.raises(SystemExit) as err:
        main(["--with", str(tmp_path), "--without", str(tiny_bundle)])
    assert err.value.code == 2
