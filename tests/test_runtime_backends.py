"""Backend contract (Polygraphy-style runners) on ONNX Runtime; TensorRT where it is installed."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.backends import BackendError, HostBuffer, TensorMeta, check_no_alias, onnxruntime_runner
from edge_runtime.bundle import load_bundle

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return load_bundle(tiny_bundle)


def _runner(bundle, name, **kw):
    g = bundle.graphs[name]
    return onnxruntime_runner(g.onnx, name, g.inputs, g.outputs, **kw)


def test_activate_infer_deactivate(bundle):
    r = _runner(bundle, "backbone", threads=1)
    assert not r.is_active
    with pytest.raises(BackendError, match="not active"):
        r.infer({"frames": np.zeros((1, 112, 112, 3), np.uint8)})
    with r:
        assert r.is_active
        meta = r.get_input_metadata()
        assert meta["frames"].dtype == np.uint8 and meta["frames"].shape[1:] == (112, 112, 3)
        out = r.infer({"frames": np.zeros((3, 112, 112, 3), np.uint8)})
        assert set(out) == {"tokens"} and out["tokens"].shape == (3, 49, 256) and out["tokens"].dtype == np.float32
    assert not r.is_active


def test_feed_checked_against_manifest(bundle):
    with _runner(bundle, "backbone") as r:
        with pytest.raises(BackendError, match="'frames' is float32, expected uint8"):
            r.infer({"frames": np.zeros((1, 112, 112, 3), np.float32)})
        with pytest.raises(BackendError, match="has shape"):
            r.infer({"frames": np.zeros((1, 64, 64, 3), np.uint8)})
        with pytest.raises(BackendError, match="missing input"):
            r.infer({})
        with pytest.raises(BackendError, match="unknown input"):
            r.infer({"frames": np.zeros((1, 112, 112, 3), np.uint8), "extra": np.zeros(1)})
        with pytest.raises(BackendError, match="unknown output"):
            r.infer({"frames": np.zeros((1, 112, 112, 3), np.uint8)}, outputs=["nope"])


def test_manifest_that_disagrees_with_the_graph_fails_at_activation(bundle):
    g = bundle.graphs["backbone"]
    wrong = (TensorMeta("frames", np.dtype("float32"), ("n", 112, 112, 3)),)
    r = onnxruntime_runner(g.onnx, "backbone", wrong, g.outputs)
    with pytest.raises(BackendError, match="manifest and graph disagree"):
        r.activate()
    missing = (TensorMeta("pixels", np.dtype("uint8"), ("n", 112, 112, 3)),)
    with pytest.raises(BackendError, match="graph has no input 'pixels'"):
        onnxruntime_runner(g.onnx, "backbone", missing, g.outputs).activate()


def test_unloadable_graph_is_one_line(tmp_path, bundle):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not an onnx file")
    g = bundle.graphs["backbone"]
    with pytest.raises(BackendError) as e:
        onnxruntime_runner(bad, "backbone", g.inputs, g.outputs).activate()
    assert "ONNX Runtime cannot load it" in str(e.value) and "\n" not in str(e.value)


def test_infer_bound_writes_into_given_buffers_and_matches_infer(bundle):
    with _runner(bundle, "sampler") as r:
        meta = r.get_input_metadata()
        rng = np.random.default_rng(0)
        feed = {}
        for n, m in meta.items():
            shape = m.concrete()
            feed[n] = (rng.integers(0, 49, shape).astype(m.dtype) if m.dtype == np.int64
                       else rng.standard_normal(shape).astype(m.dtype))
        feed["mem_valid"] = (feed["mem_valid"] > 0).astype(np.float32)
        ref = r.infer(feed)
        outs = {n: r.alloc(m.concrete(), m.dtype) for n, m in r.get_output_metadata().items()}
        ptrs = {n: b.ptr for n, b in outs.items()}
        before = {n: v.copy() for n, v in feed.items()}
        r.infer_bound(feed, outs)
        for n, b in outs.items():
            assert b.ptr == ptrs[n]  # written in place, not re-allocated
            np.testing.assert_array_equal(b.array, ref[n])
        for n, v in feed.items():
            np.testing.assert_array_equal(v, before[n])  # inputs untouched


def test_same_buffer_as_input_and_output_is_refused(bundle):
    with _runner(bundle, "sampler") as r:
        meta = r.get_input_metadata()
        bufs = {n: r.alloc(m.concrete(), m.dtype) for n, m in meta.items()}
        outs = {"new_" + n: bufs[n] for n in ("mem", "mem_t", "mem_p", "mem_valid")}
        with pytest.raises(BackendError, match="ping-pong"):
            r.infer_bound(bufs, outs)


def test_alias_check_sees_overlapping_views():
    base = np.zeros(100, np.float32)
    with pytest.raises(BackendError):
        check_no_alias({"a": base[:60]}, {"b": base[50:]})
    check_no_alias({"a": base[:50]}, {"b": base[50:]})
    h1, h2 = HostBuffer((4,), np.float32), HostBuffer((4,), np.float32)
    check_no_alias({"a": h1}, {"b": h2})
    with pytest.raises(BackendError):
        check_no_alias({"a": h1}, {"b": h1})


def test_heavy_libraries_load_lazily_and_runtime_never_imports_torch():
    code = ("import sys, importlib, pkgutil, edge_runtime\n"
            "import edge_runtime.backends, edge_runtime.bundle, edge_runtime.engine\n"
            "assert 'onnxruntime' not in sys.modules, 'onnxruntime imported before a runner is activated'\n"
            "assert 'tensorrt' not in sys.modules\n"
            "for m in pkgutil.walk_packages(edge_runtime.__path__, 'edge_runtime.'):\n"
            "    try:\n"
            "        importlib.import_module(m.name)\n"
            "    except ImportError:\n"
            "        pass\n"
            "assert 'torch' not in sys.modules, 'edge_runtime imported torch'\n"
            "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr
    for p in (REPO / "edge_runtime").rglob("*.py"):
        text = p.read_text()
        assert "import torch" not in text and "from torch" not in text, p


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.trt
@pytest.mark.skipif(not _has_tensorrt(), reason="TensorRT is not installed here (it cannot be pip-installed "
                                                "on this CPU host); the TensorRT runner is untested")
def test_tensorrt_null_deserialize_is_a_cache_miss(tmp_path, bundle):
    from edge_runtime.backends import CacheMiss, tensorrt_runner

    plan = tmp_path / "backbone.plan"
    plan.write_bytes(b"\x00" * 64)
    g = bundle.graphs["backbone"]
    with pytest.raises(CacheMiss, match="rebuild"):
        tensorrt_runner(plan, "backbone", g.inputs, g.outputs).activate()


def test_tensorrt_missing_is_a_clear_error(bundle):
    if _has_tensorrt():
        pytest.skip("TensorRT is installed: the missing-TensorRT path does not apply")
    from edge_runtime.backends import tensorrt_runner

    g = bundle.graphs["backbone"]
    with pytest.raises(BackendError, match="TensorRT is not installed"):
        tensorrt_runner("x.plan", "backbone", g.inputs, g.outputs).activate()
