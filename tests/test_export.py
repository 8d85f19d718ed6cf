"""lvm-export end to end on the tiny config: parity, FP16 / INT8 bundles, the accuracy gate, bad
input, atomic bundle writes, the manifest. Bundles are built once per session (a seeded tiny model,
64 generator frames, 32 of them for INT8, 1 timed run) and shared by the tests that read
them; the tests that export again reuse their graphs (in-process) and OOD statistics (conftest)."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edge_runtime.config import resolve_model_config
from export.cli import export as cli_export
from export.onnx.bundle_writer import BundleWriteError, BundleWriter
from export.model.checkpoint import load_checkpoint
from export.model.lvmnet import LVMNet
from export.onnx.graphs import BACKBONE, GRAPHS, HEADS, SAMPLER, example_inputs
from tests.conftest import TEST_BUNDLE_CALIB

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("edge_runtime.checkout", reason="the checkout generator provides the calibration frames")

CALIB = TEST_BUNDLE_CALIB  # 32 generator frames: the test bundle's, so that it is this file's fp32 bundle
INT8_FRAMES = 32  # the INT8 bundle's calibration frames: the choice's cost grows with them
REPO = Path(__file__).resolve().parent.parent


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _metrics(shift: float = 0.0) -> dict:
    cells = {"short": 0.40, "medium": 0.30, "long": 0.20}
    r1 = {qt: dict(cells) for qt in ("activity", "object", "time")}
    r1["activity"]["short"] += shift
    return {"recall@1x": r1, "recall@3x": {qt: {w: v + 0.2 for w, v in cells.items()} for qt in r1}, "queries": 30,
            "memory_tokens": 784}


def _precision(bundle_dir: Path) -> str:
    return json.loads((Path(bundle_dir) / "manifest.json").read_text())["precision"]


def passing_evaluator(bundle_dir):
    return _metrics(0.0 if _precision(bundle_dir) == "fp32" else -0.005)  # -0.5 points: inside 1


def failing_evaluator(bundle_dir):
    return _metrics(0.0 if _precision(bundle_dir) == "fp32" else -0.05)   # -5 points on activity/short


def run(argv, capsys, evaluator=None):
    rc = cli_export.main([str(a) for a in argv], evaluator=evaluator)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="session")
def ckpt(tiny_bundle):
    """The shipped checkpoint (with its reader beside it), as users export it. The test bundle was
    exported from it first, so the in-process exports here take its OOD fit (conftest's
    ``_ood_once_per_backbone``)."""
    return REPO / "checkpoints" / "lvm-tiny.safetensors"


def _base(ckpt, frames=32):
    # the memory path's graphs, as the test bundle has them (the event head has its own tests)
    return ["--checkpoint", ckpt, "--calib", CALIB, "--calib-frames", frames, "--bench-runs", 1, "--no-progress",
            "--no-events"]


FP16_READER_DECIDED: dict = {}  # the real FP16 budget rule's verdict on the reader graphs of bundles["fp16"]


@pytest.fixture(scope="session")
def bundles(tmp_path_factory, ckpt, tiny_bundle):
    """fp32 (the test bundle), fp16 (through a passing gate) and int8 bundles of the same checkpoint.
    The fp16 export's answer graph is forced outside its FP16 budget (the conversion and parity being
    real): it stays FP32 and the manifest says why (test_fp16_reader_graphs_convert_...)."""
    from export.onnx import reader_graphs

    real = reader_graphs.fp16_failure

    def answer_fails(parity):
        graph = "answer" if "activity_scores" in parity["outputs"] else "reader"
        FP16_READER_DECIDED[graph] = real(parity)
        return "forced for the test" if graph == "answer" else FP16_READER_DECIDED[graph]

    root = tmp_path_factory.mktemp("engines")
    out = {"fp32": tiny_bundle}
    for precision, extra, ev in (("fp16", [], passing_evaluator),
                                 ("int8", ["--skip-gate", "--engine", "onnxruntime"], None)):
        target = root / f"lvm-tiny-{precision}"
        with pytest.MonkeyPatch.context() as mp:
            if precision == "fp16":
                mp.setattr(reader_graphs, "fp16_failure", answer_fails)
            rc = cli_export.main([str(a) for a in _base(ckpt) + ["--precision", precision, "--out", target]
                                  + extra], evaluator=ev)
        assert rc == 0, f"{precision} export failed"
        out[precision] = target
    return out


def _manifest(b):
    return json.loads((b / "manifest.json").read_text())


# -- parity ---------------------------------------------------------------------------------------

def test_fp32_graphs_match_pytorch(bundles, ckpt):
    """Checked here independently of the exporter's own parity numbers."""
    net, _ = load_checkpoint(ckpt)
    b = bundles["fp32"]
    for spec in (BACKBONE, HEADS):
        args = example_inputs(net, spec, batch=3, queries=5, window=11)
        with torch.no_grad():
            ref = (net.backbone if spec is BACKBONE else net.heads)(*args)
        ref = ref if isinstance(ref, tuple) else (ref,)
        sess = ort.InferenceSession(str(b / f"{spec.name}.onnx"), providers=["CPUExecutionProvider"])
        outs = sess.run(list(spec.outputs), {n: a.numpy() for n, a in zip(spec.inputs, args)})
        for r, o in zip(ref, outs):
            assert np.abs(r.numpy() - o).max() <= 1e-4, spec.name
    # sampler: the kept (time, patch) sets, never slot by slot
    args = example_inputs(net, SAMPLER)
    with torch.no_grad():
        ref = net.sampler(*args)
    sess = ort.InferenceSession(str(b / "sampler.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(list(SAMPLER.outputs), {n: a.numpy() for n, a in zip(SAMPLER.inputs, args)})
    keep_r = {(t, p) for t, p, v in zip(ref[1][0].tolist(), ref[2][0].tolist(), ref[3][0].tolist()) if v > 0.5}
    keep_o = {(t, p) for t, p, v in zip(out[1][0].tolist(), out[2][0].tolist(), out[3][0].tolist()) if v > 0.5}
    assert len(keep_r & keep_o) / len(keep_r) >= 0.99
    par = _manifest(b)["parity"]
    assert par["backbone"]["max_abs"] <= 1e-4 and par["heads"]["max_abs"] <= 1e-4
    assert par["sampler"]["topm_recall"] >= 0.99 and par["sampler"]["kept_feature_max_abs"] == 0.0
    assert par["sampler"]["calls"] > 1  # example inputs + calls on the generator stream
    sb = par["sampler"]["streams_batch"]  # every parity input as one row of a single batched call
    assert sb["streams"] == par["sampler"]["calls"] and sb["topm_recall"] == 1.0 and sb["kept_feature_max_abs"] == 0.0


# -- manifest -------------------------------------------------------------------------------------

def test_manifest_fields_and_hashes(bundles, ckpt):
    from edge_runtime.backends.bundle import load_bundle

    cfg = resolve_model_config("lvm-tiny")
    for precision, b in bundles.items():
        m = _manifest(b)
        for key in ("format", "model", "precision", "created", "config", "config_sha256", "checkpoint", "labels",
                    "answers", "ood", "graphs", "parity", "accuracy", "calibration", "tools", "host"):
            assert key in m, key
        assert m["format"] == 1 and m["model"] == "lvm-tiny" and m["precision"] == precision
        assert m["config_sha256"] == cfg.digest() and m["config"] == cfg.to_dict()
        assert m["checkpoint"]["sha256"] == _sha(ckpt)
        assert len(m["labels"]["activities"]) == cfg.heads.num_activities
        assert {"torch", "onnx", "onnxruntime", "tensorrt"} <= set(m["tools"])
        assert {"hostname", "machine", "cpu"} <= set(m["host"])
        for spec in GRAPHS:
            g = m["graphs"][spec.name]
            assert g["onnx"] == f"{spec.name}.onnx" and g["sha256"] == _sha(b / g["onnx"])
            assert [t["name"] for t in g["inputs"]] == list(spec.inputs)
            assert [t["name"] for t in g["outputs"]] == list(spec.outputs)
            assert g["plan"] is None  # no TensorRT here
            model = onnx.load(str(b / g["onnx"]))
            assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {18}
        assert m["graphs"]["backbone"]["inputs"][0] == {"name": "frames", "shape": ["n_frames", 112, 112, 3],
                                                        "dtype": "uint8"}
        heads_in = {t["name"]: t for t in m["graphs"]["heads"]["inputs"]}
        assert heads_in["q_times"]["shape"] == ["n_queries", "window"]
        sampler_io = m["graphs"]["sampler"]["inputs"] + m["graphs"]["sampler"]["outputs"]
        assert {t["shape"][0] for t in sampler_io} == {"n_streams"}  # one row per camera stream, at every precision
        assert all(t["dtype"] in ("float32", "int64", "uint8") for g in m["graphs"].values()
                   for t in g["inputs"] + g["outputs"])  # FP32 I/O at every precision
        assert m["parity"]["frames"]["source"] == CALIB and m["parity"]["frames"]["sha256"]
        assert (m["calibration"] is None) == (precision != "int8")
        assert set(m["latency_cpu"]) == {"backbone", "sampler", "heads", "reader", "answer"}  # the reader beside it
        load_bundle(b)  # the runtime's own checks: contract, shapes, hashes
        assert not [p for p in b.parent.iterdir() if p.name.startswith(".")]  # no temp folders left


# -- fp16 ------------------------------------------------------------------------------------------

def test_bundle_files_are_readable_by_the_runtime_user(bundles):
    """A bundle is copied to a kiosk and read by the runtime's own user: no file may be private
    (safetensors itself creates files 0600)."""
    import stat

    for b in bundles.values():
        for f in Path(b).iterdir():
            assert f.stat().st_mode & stat.S_IROTH, f"{f.name} is not readable by other users"


def test_fp16_bundle_runs_with_fp32_io_and_stays_close(bundles, ckpt):
    b16, b32 = bundles["fp16"], bundles["fp32"]
    net, _ = load_checkpoint(ckpt)
    for spec in GRAPHS:
        model = onnx.load(str(b16 / f"{spec.name}.onnx"))
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer), spec.name
        feeds = {n: a.numpy() for n, a in zip(spec.inputs, example_inputs(net, spec))}
        o16 = ort.InferenceSession(str(b16 / f"{spec.name}.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)
        o32 = ort.InferenceSession(str(b32 / f"{spec.name}.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)
        assert [o.dtype for o in o16] == [o.dtype for o in o32]
        if spec is SAMPLER:
            k16 = set(zip(o16[1][0].tolist(), o16[2][0].tolist()))
            k32 = set(zip(o32[1][0].tolist(), o32[2][0].tolist()))
            assert len(k16 & k32) / len(k32) >= 0.95
            assert np.all(np.isin(o16[1], np.concatenate([feeds["mem_t"], feeds["clip_t"]], 1)))  # exact times
        else:
            for a, c in zip(o16, o32):
                assert np.abs(a - c).max() <= 0.05 * max(1.0, np.abs(c).max())
    m = _manifest(b16)
    assert m["accuracy"]["passed"] is True and m["accuracy"]["threshold_points"] == 1.0
    assert m["accuracy"]["deltas"]["activity"]["short"] == pytest.approx(-0.5)
    pol = m["graphs"]["sampler"]["fp16"]
    assert {"LayerNormalization", "Softmax", "TopK"} <= set(pol["fp32_ops"])


def test_fp16_reader_graphs_convert_and_a_failing_one_stays_fp32(bundles):
    """lvm-tiny's reader and answer graphs are within the FP16 budget; an answer graph outside it (forced
    by the ``bundles`` fixture through the budget rule) is kept FP32 and the manifest says why."""
    from edge_runtime.backends.bundle import load_bundle

    assert FP16_READER_DECIDED == {"reader": None, "answer": None}  # both within budget by the real rule
    out = bundles["fp16"]
    b = load_bundle(out)
    m = _manifest(out)
    assert b.answers_kind == "reader" and m["parity"]["fp32_graphs"]["answer"]["max_abs_scaled"] <= 1e-4
    reader, answer = m["graphs"]["reader"], m["graphs"]["answer"]
    assert reader["precision"] == "fp16" and "note" not in reader and reader["fp16"]["fp16_nodes"] > 0
    assert answer["precision"] == "fp32" and "kept FP32" in answer["note"] and "forced for the test" in answer["note"]
    # the kept graph is the FP32 one: PyTorch's numbers to FP32 precision
    assert m["parity"]["answer"]["max_abs_scaled"] <= 1e-4
    o = m["parity"]["reader"]["outputs"]
    assert all(v["mean_abs"] <= 0.005 * max(1.0, v["ref_max_abs"]) for v in o.values()), o
    # the bundle's graphs keep FP32 I/O
    assert {t.dtype.name for g in ("reader", "answer") for t in b.graphs[g].inputs + b.graphs[g].outputs} == {
        "float32", "int64"}


# -- int8 ------------------------------------------------------------------------------------------

def test_int8_bundle_from_generator_frames(bundles):
    from export.onnx.calibration import read_frames
    from export.onnx.int8_choice import choose

    b = bundles["int8"]
    m = _manifest(b)
    cal = read_frames(CALIB, resolve_model_config("lvm-tiny"), max_frames=INT8_FRAMES)
    assert m["calibration"]["sha256"] == cal.sha256() and m["calibration"]["frames"] == INT8_FRAMES
    for spec in GRAPHS:
        q = m["graphs"][spec.name]["quantization"]
        model = onnx.load(str(b / f"{spec.name}.onnx"))
        ops = {n.op_type for n in model.graph.node}
        assert q["mode"] in ("static_qdq", "static_qdq_u8", "dynamic", "none") and q["reason"]
        assert (m["graphs"][spec.name]["precision"] == "fp32") == (q["mode"] == "none")
        if q["mode"] == "none":  # no INT8 form within the graph's budget: the FP32 graph, unquantised
            assert "kept FP32" in q["reason"] and not ops & {"QuantizeLinear", "DynamicQuantizeLinear"}
        elif q["mode"].startswith("static"):
            assert {"QuantizeLinear", "DequantizeLinear"} <= ops and q["calibration_batches"] >= 1
        else:
            assert ops & {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul"}
        # the manifest holds the rule's inputs: the choice follows from them again, and no timing is among them
        assert q["rule"] and q["rule_inputs"]["order"] and q["rule_inputs"]["host_int8"]
        assert all(set(c) == {"error", "within_budget", "fp32_convolutions"} for c in q["candidates"].values())
        depth = {k: c["fp32_convolutions"] for k, c in q["candidates"].items()}
        assert choose({k: c["error"] for k, c in q["candidates"].items()}, depth)[0] == q["candidate"]
        assert q["candidate"].split("/")[0] == q["mode"].replace("none", "fp32")
        kept = q["rule_inputs"]["kept_fp32"]
        if spec.name == "backbone":  # a ladder: its first convolution and its last 2, 4, ... with what follows them
            convs = [n.name for n in onnx.load(str(bundles["fp32"] / "backbone.onnx")).graph.node
                     if n.op_type == "Conv"]
            # the ladder from the shallowest, up to the first depth with a form within budget
            tried = sorted(set(depth.values()))
            assert tried == list(range(2, len(convs) - 1, 2))[:len(tried)]
            within = sorted({d for k, d in depth.items() if q["candidates"][k]["within_budget"]})
            assert within in ([], [tried[-1]]) and (within or tried == list(range(2, len(convs) - 1, 2)))
            assert all("motion_rel" in c["error"] for c in q["candidates"].values())
            if q["mode"] != "none":
                assert convs[0] in kept and convs[-1] in kept and convs[1] not in kept
                assert set(kept) <= set(q.get("excluded_nodes", kept)) and "its first convolution" in q["rule"]
                # nothing with fewer FP32 convolutions was within the budget
                assert not any(c["within_budget"] and c["fp32_convolutions"] < depth[q["candidate"]]
                               for c in q["candidates"].values())
        else:
            assert kept == []
    assert m["graphs"]["sampler"]["quantization"]["mode"] in ("static_qdq", "dynamic", "none")
    assert m["parity"]["sampler"]["kept_feature_max_abs"] == 0.0  # quantisation never touches the kept tokens
    sb = m["parity"]["sampler"]["streams_batch"]
    assert sb["streams"] >= 2 and sb["kept_feature_max_abs"] == 0.0
    if m["graphs"]["sampler"]["quantization"]["mode"] != "dynamic":  # per-call scales see the whole batch
        assert sb["rows_identical"] == sb["streams"]


def test_int8_portable_chosen_graphs_and_no_reader(ckpt, tmp_path, capsys, fast_export):
    """One export for three options. --int8-portable: the form TensorRT loads, Q/DQ with int8 zero
    points of 0 in every INT8 graph, no dynamic ops. --int8-graphs: the graphs not named stay FP32.
    --no-reader: the bundle answers with its heads alone."""
    from onnx import numpy_helper

    from edge_runtime.backends.bundle import load_bundle

    target = tmp_path / "p8"
    rc, out, err = run(_base(ckpt, INT8_FRAMES) + ["--precision", "int8", "--int8-portable", "--int8-graphs",
                                                   "backbone,heads", "--skip-gate", "--no-reader", "--out", target],
                       capsys)
    assert rc == 0, err
    m = _manifest(target)
    for name in ("backbone", "heads"):
        q = m["graphs"][name]["quantization"]
        assert {c.split("/")[0] for c in q["candidates"]} == {"static_qdq"} and "--int8-portable" in q["reason"]
        assert q["mode"] == ("static_qdq" if any(c["within_budget"] for c in q["candidates"].values()) else "none")
        model = onnx.load(str(target / f"{name}.onnx"))
        assert not {n.op_type for n in model.graph.node} & {"DynamicQuantizeLinear", "MatMulInteger"}
        if q["mode"] == "none":  # outside its accuracy budget: the FP32 graph
            continue
        assert "tensorrt" in q["loads_in"]
        inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        zps = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
        assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)
    g = m["graphs"]["sampler"]
    assert g["precision"] == "fp32" and "--int8-graphs" in g["quantization"]["reason"]
    ops = {n.op_type for n in onnx.load(str(target / "sampler.onnx")).graph.node}
    assert not ops & {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger"}
    b = load_bundle(target)
    assert b.answers_kind == "heads" and b.reader is None and list(b.graphs) == ["backbone", "sampler", "heads"]
    assert m["answers"] == {"object_extent": True, "kind": "heads"} and "reader" not in m["parity"]
    assert m["export"]["reader"] is None and any("--no-reader" in n for n in m["export"]["notes"])


def test_int8_calibrates_from_a_datasets_train_split(ckpt, tmp_path, capsys, monkeypatch, fast_export):
    """--data without --calib: the INT8 calibration frames come from the folder's train split, and the
    manifest names its videos."""
    from export.dataset.render import like_eval, like_train, render_dataset

    data = tmp_path / "shop"
    render_dataset(data, like_train([0, 1]) + like_eval([0]), duration_s=48.0, size=112, fps=1.0, progress=False,
                   say=lambda s: None)
    # the OOD statistics are checked elsewhere too; here only where the frames come from
    monkeypatch.setattr("export.evaluate.ood_stats.write_bundle_ood", lambda *a, **k: None)
    out = tmp_path / "int8"
    rc, _, err = run(["--checkpoint", ckpt, "--precision", "int8", "--data", data, "--skip-gate", "--out", out,
                      "--calib-frames", INT8_FRAMES, "--bench-runs", 1, "--engine", "onnxruntime", "--int8-graphs",
                      "heads", "--no-progress", "--no-events"], capsys)
    assert rc == 0, err
    cal = _manifest(out)["calibration"]
    assert cal["source"] == f"{data} (train split, 2 videos)" and cal["frames"] == INT8_FRAMES
    assert [v["file"] for v in cal["videos"]] == [f"{s.stem}.mp4" for s in like_train([0, 1])]


def test_int8_graphs_names_known_graphs_of_an_int8_export(ckpt, tmp_path, capsys):
    err = _bad(capsys, ["--precision", "int8", "--checkpoint", ckpt, "--int8-graphs", "backbone,head",
                        "--out", tmp_path / "x"])
    assert "--int8-graphs: unknown graph head" in err and not (tmp_path / "x").exists()
    err = _bad(capsys, ["--precision", "fp32", "--checkpoint", ckpt, "--int8-graphs", "heads", "--out", tmp_path / "x"])
    assert "--int8-graphs is for --precision int8 (this export is fp32)" in err and not (tmp_path / "x").exists()


def test_int8_refused_without_frames(ckpt, tmp_path, capsys):
    import cv2

    empty = tmp_path / "empty.avi"
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64)).release()
    for calib in (empty, "demo://checkout?seed=1&duration=0"):
        rc, _, err = run(["--precision", "int8", "--checkpoint", ckpt, "--calib", calib, "--out", tmp_path / "b"],
                         capsys)
        assert rc == 2 and "refusing INT8" in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
        assert not (tmp_path / "b").exists()


# -- the accuracy gate -------------------------------------------------------------------------------

def test_failing_gate_exits_nonzero_and_writes_nothing(ckpt, tmp_path, capsys, fast_export):
    target = tmp_path / "lvm-tiny-fp16"
    rc, out, err = run(_base(ckpt) + ["--precision", "fp16", "--out", target], capsys, evaluator=failing_evaluator)
    assert rc == cli_export.EXIT_GATE
    assert "accuracy gate failed" in err and "activity/short" in err and "-5.0" in err
    assert not target.exists() and not list(tmp_path.glob(".lvm-tiny-fp16*"))


def test_gate_failure_puts_the_backbone_back_to_fp32_and_tries_again(ckpt, tmp_path, capsys, fast_export):
    calls = []

    def backbone_hurts(bundle_dir):  # only a reduced-precision backbone costs accuracy
        m = json.loads((Path(bundle_dir) / "manifest.json").read_text())
        calls.append(m["precision"])
        return _metrics(-0.05 if m["graphs"]["backbone"]["precision"] != "fp32" else 0.0)

    target = tmp_path / "b"
    rc, out, err = run(_base(ckpt) + ["--precision", "fp16", "--out", target], capsys, evaluator=backbone_hurts)
    assert rc == 0, err
    assert calls == ["fp32", "fp16", "fp16"]  # the FP32 reference is evaluated once
    m = _manifest(target)
    g = m["graphs"]
    assert g["backbone"]["precision"] == "fp32" and "failed the accuracy gate" in g["backbone"]["quantization"]["reason"]
    assert g["sampler"]["precision"] == "fp16" and g["heads"]["precision"] == "fp16"
    f16 = onnx.TensorProto.FLOAT16
    assert not [t for t in onnx.load(str(target / "backbone.onnx")).graph.initializer if t.data_type == f16]
    assert [t for t in onnx.load(str(target / "sampler.onnx")).graph.initializer if t.data_type == f16]
    assert m["accuracy"]["passed"] and [f["graph"] for f in m["accuracy"]["fp32_fallbacks"]] == ["backbone"]
    assert "backbone: the FP16 bundle failed the accuracy gate (activity/short" in err and "trying again with backbone FP32" in err


def test_gate_compare_logic():
    from export.evaluate.accuracy_gate import GateError, compare

    ok = compare(_metrics(), _metrics(-0.01), 1.0)  # exactly 1 point: allowed
    assert ok.passed and ok.deltas["recall@1x"]["activity"]["short"] == pytest.approx(-1.0)
    bad = compare(_metrics(), _metrics(-0.011), 1.0)
    assert not bad.passed and bad.failures[0].startswith("activity/short")
    up = compare(_metrics(), _metrics(+0.2), 0.0)  # improvements never fail
    assert up.passed
    r3 = _metrics()
    r3["recall@3x"]["time"]["long"] -= 0.5  # recorded, not gated
    assert compare(_metrics(), r3, 1.0).passed
    none = _metrics()
    none["recall@1x"]["object"]["long"] = None  # a cell without queries is skipped
    assert compare(none, _metrics(), 1.0).deltas["recall@1x"]["object"]["long"] is None
    with pytest.raises(GateError):
        compare({}, {}, 1.0)


def _answered(r1: list[float], subjects: int = 5) -> dict:
    """Metrics with per-query records: 50 activity/short queries on ``subjects`` subjects."""
    recs = [{"qid": f"v/activity/short/{i:04d}", "type": "activity", "window": "short", "recall@1x": r,
             "subject": f"v/{i % subjects}/None"} for i, r in enumerate(r1)]
    m = _metrics()
    m["recall@1x"]["activity"]["short"] = sum(r1) / len(r1)
    m["per_query"] = recs
    return m


def test_gate_is_paired_and_counts_the_answers_that_changed():
    """The same queries answered by both bundles: per cell its queries, how many the candidate answered
    better / worse and on how many subjects; a failure says so, the table shows every cell."""
    from export.evaluate.accuracy_gate import GateError, compare

    ref = [1.0] * 30 + [0.0] * 20
    cand = list(ref)
    cand[0] = cand[5] = 0.0   # two worse, on one subject (0, 5: i % 5 == 0)
    cand[30] = 1.0            # one better
    res = compare(_answered(ref), _answered(cand), 1.0)
    p = res.paired["activity"]["short"]
    assert (p["queries"], p["better"], p["worse"], p["subjects"], p["subjects_changed"]) == (50, 1, 2, 5, 1)
    assert not res.passed and res.deltas["recall@1x"]["activity"]["short"] == pytest.approx(-2.0)
    assert "50 queries: 1 better, 2 worse, on 1 of 5 subjects" in res.failures[0]
    assert res.manifest()["resolution"]["activity"]["short"] == 2.0  # one query moves this cell 2 points
    assert res.manifest()["paired"] == res.paired and res.paired["time"]["long"]["queries"] == 0
    lines = res.lines()
    assert "queries" in lines[0] and any(ln.startswith("activity/short") and "1 " in ln for ln in lines[1:])
    same = compare(_answered(ref), _answered(ref), 0.0)
    assert same.passed and same.paired["activity"]["short"]["worse"] == 0
    assert "0 of 50 answers changed" in same.message()
    other = _answered(ref)
    other["per_query"][0]["qid"] = "v/activity/short/9999"
    with pytest.raises(GateError, match="same queries"):
        compare(_answered(ref), other, 1.0)
    assert compare(_metrics(), _metrics(), 1.0).paired is None  # evaluators without records: unpaired


# -- bad input ---------------------------------------------------------------------------------------

def _bad(capsys, argv):
    rc, out, err = run(argv, capsys)
    assert rc == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_bad_checkpoints(ckpt, tmp_path, capsys):
    out = ["--out", tmp_path / "b", "--precision", "fp32", "--no-progress"]
    assert "not found" in _bad(capsys, ["--checkpoint", tmp_path / "missing.safetensors"] + out)
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(Path(ckpt).read_bytes()[:5000])
    assert "trunc.safetensors" in _bad(capsys, ["--checkpoint", trunc] + out)
    pkl = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, pkl)
    assert "pickle" in _bad(capsys, ["--checkpoint", pkl] + out)
    assert "config" in _bad(capsys, ["--checkpoint", ckpt, "--config", "lvm-edge"] + out)
    assert not (tmp_path / "b").exists()


def test_bad_arguments(ckpt, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli_export.main(["--precision", "int4", "--checkpoint", str(ckpt)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'int4'" in err and len(err.strip().splitlines()) == 1
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "not a folder" in _bad(capsys, ["--precision", "fp32", "--checkpoint", ckpt, "--out", afile / "b"])
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    assert "not a bundle" in _bad(capsys, ["--precision", "fp32", "--checkpoint", ckpt, "--out", user])
    assert (user / "notes.txt").read_text() == "keep me"
    assert "no such file" in _bad(capsys, ["--precision", "int8", "--checkpoint", ckpt, "--out", tmp_path / "c",
                                        "--calib", tmp_path / "nope.mp4", "--no-progress"])


def test_console_script_help_and_errors_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    h = subprocess.run([sys.executable, "-m", "export.cli.export", "--help"], capture_output=True, text=True, env=env)
    assert h.returncode == 0 and "--precision" in h.stdout and "--calib" in h.stdout and "exit status" in h.stdout
    r = subprocess.run([sys.executable, "-m", "export.cli.export", "--precision", "fp16",
                        "--checkpoint", str(tmp_path / "none.safetensors")], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stderr.strip().startswith("lvm-export: error:") and "Traceback" not in r.stderr


# -- atomic writes -----------------------------------------------------------------------------------

def test_failure_mid_export_leaves_old_bundle_untouched(bundles, ckpt, tmp_path, capsys, monkeypatch, fast_export):
    import shutil

    target = tmp_path / "lvm-tiny-fp16"
    shutil.copytree(bundles["fp16"], target)
    before = {p.name: _sha(p) for p in target.iterdir()}
    seen = {}

    def crash(self, *a, **k):  # after the graphs were written into the temp folder
        seen["tmp"] = self.writer.path
        seen["files"] = sorted(p.name for p in self.writer.path.iterdir())
        raise OSError(28, "No space left on device (simulated)")

    monkeypatch.setattr(cli_export.Exporter, "_latency", crash)
    rc, _, err = run(_base(ckpt) + ["--precision", "fp16", "--out", target], capsys, evaluator=passing_evaluator)
    assert rc == cli_export.EXIT_FAILED and "No space left" in err and "Traceback" not in err
    assert "backbone.onnx" in seen["files"] and "manifest.json" not in seen["files"]
    assert not seen["tmp"].exists()
    assert {p.name: _sha(p) for p in target.iterdir()} == before
    assert not list(tmp_path.glob(".lvm-tiny-fp16*"))
    # no old bundle: nothing at all is left
    fresh = tmp_path / "fresh"
    rc, _, _ = run(_base(ckpt) + ["--precision", "fp16", "--out", fresh], capsys, evaluator=passing_evaluator)
    assert rc == cli_export.EXIT_FAILED and not fresh.exists()


def test_bundle_writer_replaces_only_when_complete(tmp_path):
    target = tmp_path / "b"
    with BundleWriter(target) as w:
        (w.path / "a.onnx").write_bytes(b"old")
        (w.path / "old.plan").write_bytes(b"stale plan")
        w.commit({"format": 1, "v": "old"})
    assert json.loads((target / "manifest.json").read_text())["v"] == "old"
    with pytest.raises(RuntimeError):
        with BundleWriter(target) as w:
            (w.path / "a.onnx").write_bytes(b"new")
            raise RuntimeError("boom")
    assert (target / "a.onnx").read_bytes() == b"old"
    with BundleWriter(target) as w:
        (w.path / "a.onnx").write_bytes(b"new")
        w.commit({"format": 1, "v": "new"})
    assert (target / "a.onnx").read_bytes() == b"new" and not (target / "old.plan").exists()
    assert json.loads((target / "manifest.json").read_text())["v"] == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    # a temp folder of a killed export (its pid is gone) is cleaned by the next export of the target
    stale = tmp_path / ".b.tmp-999999999-abc"
    stale.mkdir()
    (stale / "manifest.json").write_text("{}")
    BundleWriter(target).abort()
    assert not stale.exists()
    with pytest.raises(BundleWriteError):
        BundleWriter(tmp_path / "b" / "a.onnx" / "x")


# -- TensorRT ----------------------------------------------------------------------------------------

def test_tensorrt_profiles_cover_dynamic_axes(bundles):
    from export.onnx.tensorrt_build import Profile

    cfg = resolve_model_config("lvm-tiny")
    m = _manifest(bundles["fp32"])
    prof = Profile.for_config(cfg)
    bb = prof.shapes(m["graphs"]["backbone"])
    assert bb == {"frames": ((1, 112, 112, 3), (16, 112, 112, 3), (64, 112, 112, 3))}
    sm = prof.shapes(m["graphs"]["sampler"])
    mt, d = cfg.stream.memory_tokens, cfg.backbone.dim
    assert set(sm) == set(SAMPLER.inputs)
    assert sm["mem"] == ((1, mt, d), (8, mt, d), (64, mt, d)) and sm["clip_p"][2] == (64, cfg.clip_tokens)
    hd = prof.shapes(m["graphs"]["heads"])
    L = cfg.heads.window_queries
    assert hd["q_times"] == ((1, 2), (16, L), (64, L)) and hd["q_object"][2] == (64, 49, 256)
    assert "mem" not in hd


def test_tensorrt_plans(tmp_path):
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed here (NVIDIA index only); "
                                                  "plans are built on Jetson / GPU hosts")
    from edge_runtime.backends.tensorrt import device_info
    from export.onnx.graphs import export_graph, io_signature, slim_and_check
    from export.onnx.tensorrt_build import Profile, build_plan

    if not device_info():
        pytest.skip("TensorRT is installed but no CUDA GPU is visible")
    torch.manual_seed(0)
    net = LVMNet(resolve_model_config("lvm-tiny")).eval()
    onnx_path = export_graph(net, BACKBONE, tmp_path / "backbone.onnx")
    sig = io_signature(slim_and_check(onnx_path))
    cache = tmp_path / "timing.cache"
    prof = Profile.for_config(net.cfg)
    info = build_plan(onnx_path, tmp_path / "backbone.plan", sig, precision="fp32", profile=prof, timing_cache=cache)
    assert info["tensorrt"] == trt.__version__ and info["compute_capability"] and cache.is_file()
    again = build_plan(onnx_path, tmp_path / "backbone2.plan", sig, precision="fp32", profile=prof,
                       timing_cache=cache)
    assert again["timing_cache"] == "reused"


def test_int8_choice_is_the_closest_form_within_budget():
    from export.onnx.int8_choice import DENSE_MEAN_SCALED, choose

    def dense(mean, mx):
        return {"mean_abs_scaled": mean, "max_abs_scaled": mx, "max_abs": mx}

    assert choose({"static_qdq": dense(2e-3, 0.02), "static_qdq_u8": dense(1e-3, 0.03)})[0] == "static_qdq_u8"
    # a tie goes to the earlier form of FORMS, whichever order the candidates came in
    assert choose({"dynamic": dense(1e-3, 0.02), "static_qdq": dense(1e-3, 0.02)})[0] == "static_qdq"
    choice, why = choose({"static_qdq": dense(2 * DENSE_MEAN_SCALED, 0.5)})
    assert choice == "fp32" and "kept FP32" in why and "static_qdq" in why
    sampler = {"static_qdq": {"topm_recall": 0.995, "kept_feature_max_abs": 0.0},
               "dynamic": {"topm_recall": 0.999, "kept_feature_max_abs": 0.0}}
    assert choose(sampler)[0] == "dynamic"
    choice, why = choose({"static_qdq": {"topm_recall": 0.93, "kept_feature_max_abs": 0.0}})
    assert choice == "fp32" and "0.9300" in why


def test_int8_choice_keeps_the_fewest_convolutions_fp32_within_budget():
    """A backbone ladder: the shallowest FP32 tail whose token and frame-to-frame errors are within
    budget wins over a deeper, closer one; when none is, the graph stays FP32."""
    from export.onnx.int8_choice import MOTION_REL, choose

    def bb(mean, motion):
        return {"mean_abs_scaled": mean, "max_abs_scaled": 0.05, "max_abs": 0.5, "motion_rel": motion}

    errs = {"static_qdq_u8/fp32-tail-2": bb(1e-3, 2 * MOTION_REL), "static_qdq_u8/fp32-tail-4": bb(9e-4, 0.9 * MOTION_REL),
            "static_qdq_u8/fp32-tail-6": bb(7e-4, 0.5 * MOTION_REL), "static_qdq/fp32-tail-4": bb(1.2e-3, 0.8 * MOTION_REL)}
    depth = {k: int(k.rsplit("-", 1)[1]) for k in errs}
    choice, why = choose(errs, depth)
    assert choice == "static_qdq_u8/fp32-tail-4" and "4 convolutions FP32" in why
    # at one depth, the closer form
    errs["static_qdq/fp32-tail-4"] = bb(8e-4, 0.8 * MOTION_REL)
    assert choose(errs, depth)[0] == "static_qdq/fp32-tail-4"
    choice, why = choose({k: bb(1e-3, 2 * MOTION_REL) for k in errs}, depth)
    assert choice == "fp32" and "motion_rel" in why


@pytest.mark.slow  # a second whole INT8 export
def test_int8_choice_does_not_depend_on_timing(bundles, ckpt, tmp_path, capsys, monkeypatch, perfect_parity):
    """The same checkpoint and frames give the same INT8 bundle under a clock that makes every timed
    call look arbitrarily slow or fast: a choice that read a clock would change with machine load.
    (The bundle's parity, which the choice does not read, is not measured again.)"""
    import time

    rng = np.random.default_rng(1)
    now = [0.0]
    real = time.perf_counter

    def adversarial():  # intervals of 1 us to 10 s in no relation to the work timed
        now[0] += float(10.0 ** rng.uniform(-6, 1))
        return now[0]

    monkeypatch.setattr(time, "perf_counter", adversarial)
    target = tmp_path / "i8"
    rc, out, err = run(_base(ckpt, INT8_FRAMES) + ["--precision", "int8", "--skip-gate", "--engine", "onnxruntime",
                                                   "--out", target], capsys)
    monkeypatch.setattr(time, "perf_counter", real)
    assert rc == 0, err
    assert now[0] > 0.0  # the clock was read while exporting
    want, got = _manifest(bundles["int8"])["graphs"], _manifest(target)["graphs"]
    for spec in GRAPHS:
        w, g = want[spec.name], got[spec.name]
        assert (g["precision"], g["quantization"]["mode"]) == (w["precision"], w["quantization"]["mode"]), spec.name
        assert g["quantization"]["candidates"] == w["quantization"]["candidates"]
        assert g["sha256"] == w["sha256"], spec.name