"""The FP32 bundle shipped in engines/lvm-tiny-fp32 is the export of the shipped checkpoint, loads in the
runtime, and is what `lvm-edge demo` uses without ever calling lvm-export (a runtime-only install has no
torch to export with)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from edge_runtime.backends.bundle import load_bundle
from edge_runtime.file_hash import sha256_file
from edge_runtime.cli import demo

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "engines" / "lvm-tiny-fp32"
CHECKPOINT = REPO / "checkpoints" / "lvm-tiny.safetensors"


def test_manifest_names_the_shipped_checkpoint_by_hash():
    ck = json.loads((BUNDLE / "manifest.json").read_text())["checkpoint"]
    assert Path(ck["path"]).name == CHECKPOINT.name
    assert ck["sha256"] == sha256_file(CHECKPOINT), (
        "engines/lvm-tiny-fp32 was exported from another checkpoint than checkpoints/lvm-tiny.safetensors: "
        "re-export it with `lvm-export --precision fp32`")


def test_manifest_names_the_shipped_reader_by_hash():
    """The shipped bundle answers with the reader trained for the shipped checkpoint."""
    reader = json.loads((BUNDLE / "manifest.json").read_text())["answers"]["reader"]
    assert reader["file_sha256"] == sha256_file(CHECKPOINT.with_name("lvm-tiny-reader.safetensors")), (
        "engines/lvm-tiny-fp32 carries another reader than checkpoints/lvm-tiny-reader.safetensors: "
        "re-export it with `lvm-export --precision fp32`")


def test_a_time_answer_with_a_close_runner_up_is_less_confident():
    """The shipped calibration's time confidence reads the next ranked answer's support: the same best
    support with a runner-up almost as strong (either event may be the asked one) is trusted less, and a
    what-happened event keeps the support's own p(right) whatever the runner-up."""
    import numpy as np

    from edge_runtime.query.happened import event_confidence
    from edge_runtime.query.reader_query import judge

    sec = load_bundle(BUNDLE, verify=False).reader
    assert sec["calibration"]["time"].get("right_model"), "the shipped reader has no right_model: recalibrate it"
    clear = np.array([[100.0, 104.0, 0.8], [300.0, 304.0, 0.05], [500.0, 504.0, 0.02]])
    close = clear.copy()
    close[1, 2] = 0.75
    sure, doubtful = (judge({}, "time", 0.8, iv, sec, activity=1)["confidence"] for iv in (clear, close))
    assert doubtful < sure
    engine = type("E", (), {"reader_section": sec})()
    assert event_confidence(engine, 0.8) == pytest.approx(
        float(np.interp(0.8, *sec["calibration"]["time"]["right"])), abs=1e-9)


def test_not_seen_reads_the_asked_activity():
    """The shipped calibration judges an object or time answer's evidence on its asked activity's own
    line: the same evidence may be "not seen" for one activity and seen for another."""
    from edge_runtime.query.reader_query import judge, not_seen_below

    sec = load_bundle(BUNDLE, verify=False).reader
    n = len(sec["calibration"]["time"]["seen_model"]["by_activity"])
    for qtype in ("object", "time"):
        cut = not_seen_below(sec, qtype)
        split = [e for e in (0.05 * i for i in range(1, 20))
                 if len({judge({}, qtype, e, [[0.0, 4.0, e]] * 3, sec, activity=a)["p_seen"] < cut for a in range(n)}) == 2]
        assert split, f"{qtype}: every activity says 'not seen' below the same evidence"


def test_bundle_loads_with_every_file_matching_its_hash():
    bundle = load_bundle(BUNDLE, verify=True)
    assert (bundle.model, bundle.precision) == ("lvm-tiny", "fp32")
    ood = bundle.manifest.get("ood") or {}
    assert ood.get("file") and sha256_file(BUNDLE / ood["file"]) == ood["sha256"]
    size = sum(f.stat().st_size for f in BUNDLE.iterdir())
    assert size < 16e6, f"the shipped bundle is {size / 1e6:.1f} MB: only the FP32 graphs belong in git"


def test_demo_uses_the_shipped_bundle_without_exporting(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real_find_spec(name, *a))

    def no_export(*args, **kwargs):
        raise AssertionError(f"lvm-edge demo ran {args[0] if args else kwargs}")

    monkeypatch.setattr(demo.subprocess, "run", no_export)
    assert demo._stale_reason(BUNDLE) is None
    demo.ensure_bundle(BUNDLE)


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="not a git checkout")
def test_bundle_is_not_ignored_by_git():
    for f in sorted(BUNDLE.iterdir()):
        res = subprocess.run(["git", "check-ignore", "-q", str(f.relative_to(REPO))], cwd=REPO)
        assert res.returncode == 1, f"{f.relative_to(REPO)} is ignored by .gitignore: it would not ship"


def test_the_shipped_graphs_compute_what_the_exporter_writes_today(tiny_bundle):
    """engines/lvm-tiny-fp32 is what today's lvm-export writes from the shipped checkpoint and reader (the
    test bundle is that export, without the event head): on the exporter's example inputs every graph
    gives the same numbers. A change of the model or the exporter that changes a graph fails here until
    the shipped bundle is exported again (`lvm-export --precision fp32`)."""
    pytest.importorskip("torch", reason="the example inputs come from the PyTorch model (the export extra)")
    import numpy as np
    import onnxruntime as ort

    from edge_runtime.config import resolve_model_config
    from export.model.checkpoint import load_checkpoint
    from export.onnx import reader_graphs
    from export.onnx.graphs import example_feeds, graph_specs

    net, _ = load_checkpoint(CHECKPOINT)
    cfg = resolve_model_config("lvm-tiny")
    rf = reader_graphs.open_reader(None, CHECKPOINT, cfg, disabled=False, shown_root=REPO)
    feeds = {s.name: example_feeds(net, s, streams=2) if s.name == "sampler" else example_feeds(net, s)
             for s in graph_specs(net)}
    feeds.update({s.name: reader_graphs.example_feeds(rf, cfg, s) for s in reader_graphs.READER_SPECS})

    def run(folder: Path, name: str) -> list:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        return ort.InferenceSession(str(folder / f"{name}.onnx"), so, providers=["CPUExecutionProvider"]).run(None, feeds[name])

    for name in feeds:
        for want, got in zip(run(Path(tiny_bundle), name), run(BUNDLE, name)):
            assert np.allclose(got, want, rtol=1e-5, atol=1e-6), (
                f"engines/lvm-tiny-fp32/{name}.onnx differs from today's export: re-export it with `lvm-export --precision fp32`")
