"""Backend contract (Polygraphy-style runners) on ONNX Runtime; TensorRT where it is installed."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.backends import BackendError, HostBuffer, TensorMeta, check_no_alias, onnxruntime_runner
from edge_runtime.backends.bundle import load_bundle

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
            shape = m.concrete(n_streams=1)
            feed[n] = (rng.integers(0, 49, shape).astype(m.dtype) if m.dtype == np.int64
                       else rng.standard_normal(shape).astype(m.dtype))
        feed["mem_valid"] = (feed["mem_valid"] > 0).astype(np.float32)
        ref = r.infer(feed)
        outs = {n: r.alloc(m.concrete(n_streams=1), m.dtype) for n, m in r.get_output_metadata().items()}
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
        bufs = {n: r.alloc(m.concrete(n_streams=1), m.dtype) for n, m in meta.items()}
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
            "import edge_runtime.backends, edge_runtime.backends.bundle, edge_runtime.engine.engine\n"
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


# -- INT8 on x86 CPUs without VNNI (ONNX Runtime's U8S8 kernels saturate there) ---------------------

_FLAGS = "fpu vme de pse tsc msr pae mce cx8 apic sse sse2 ssse3 sse4_1 sse4_2 popcnt aes avx f16c fma bmi1 avx2 bmi2"
CPU_EPYC_ZEN3 = "".join(f"processor\t: {i}\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7763\n"
                        f"flags\t\t: {_FLAGS} sha_ni vaes vpclmulqdq\n\n" for i in range(2))
CPU_SKYLAKE_SP = f"processor\t: 0\nflags\t\t: {_FLAGS} avx512f avx512dq avx512cd avx512bw avx512vl\n"
CPU_CASCADE_LAKE = f"processor\t: 0\nflags\t\t: {_FLAGS} avx512f avx512bw avx512vl avx512_vnni\n"
CPU_ALDER_LAKE = f"processor\t: 0\nflags\t\t: {_FLAGS} avx_vnni\n"
CPU_SAPPHIRE_RAPIDS = f"processor\t: 0\nflags\t\t: {_FLAGS} avx512f avx512_vnni avx_vnni amx_bf16 amx_tile amx_int8\n"
CPU_GRAVITON = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 asimddp\n"


def _fake_host(monkeypatch, cpuinfo, machine="x86_64"):
    from edge_runtime.backends import cpu_features

    monkeypatch.setattr(cpu_features, "read_cpuinfo", lambda: cpuinfo)
    monkeypatch.setattr(cpu_features.platform, "machine", lambda: machine)


@pytest.mark.parametrize("text,flags,vnni", [
    (CPU_EPYC_ZEN3, set(), False), (CPU_SKYLAKE_SP, set(), False), (CPU_CASCADE_LAKE, {"avx512_vnni"}, True),
    (CPU_ALDER_LAKE, {"avx_vnni"}, True), (CPU_SAPPHIRE_RAPIDS, {"avx512_vnni", "avx_vnni", "amx_int8"}, True)])
def test_vnni_read_from_cpuinfo(text, flags, vnni):
    from edge_runtime.backends.cpu_features import has_vnni, s8s8_safe, vnni_flags

    assert vnni_flags(text) == flags and has_vnni(text, "x86_64") is vnni
    safe, why = s8s8_safe(text, "x86_64")
    assert safe is vnni and "\n" not in why
    assert why == ("x86 without VNNI: S8S8 INT8 saturates on ONNX Runtime CPU" if not vnni
                   else f"x86 with VNNI ({', '.join(sorted(flags))}): INT8 products add in 32 bits, no saturation")


def test_vnni_needs_every_core_and_unknown_counts_as_unsafe():
    from edge_runtime.backends.cpu_features import has_vnni, s8s8_safe, vnni_flags

    mixed = CPU_CASCADE_LAKE + "\n" + CPU_SKYLAKE_SP.replace("processor\t: 0", "processor\t: 1")
    assert vnni_flags(mixed) == set() and has_vnni(mixed, "x86_64") is False
    for unknown in ("", "processor\t: 0\n"):  # no /proc/cpuinfo (not Linux), or no flags line in it
        assert has_vnni(unknown, "AMD64") is None
        safe, why = s8s8_safe(unknown, "AMD64")
        assert not safe and "VNNI unknown" in why
    # ARM: no VNNI to ask about, and ONNX Runtime's ARM INT8 kernels do not saturate
    assert has_vnni(CPU_GRAVITON, "aarch64") is None
    assert s8s8_safe(CPU_GRAVITON, "aarch64") == (True, "aarch64 is not x86: ONNX Runtime's INT8 CPU kernels do "
                                                        "not saturate")


@pytest.fixture(scope="module")
def conv_graphs(tmp_path_factory):
    """A small conv net as FP32 and as symmetric S8S8 Q/DQ (the portable form TensorRT needs),
    calibrated and fed with all-positive inputs: the case where U8S8 kernels saturate most."""
    pytest.importorskip("onnx")
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from export.onnx.int8_quant import quantize_int8_static

    d = tmp_path_factory.mktemp("s8s8")
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((16, 3, 3, 3)) * 0.2).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal(16) * 0.1).astype(np.float32), "b1"),
             numpy_helper.from_array((rng.standard_normal((8, 16, 3, 3)) * 0.1).astype(np.float32), "w2"),
             numpy_helper.from_array((rng.standard_normal(8) * 0.05).astype(np.float32), "b2")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["h"], ["hr"], name="relu"),
             helper.make_node("Conv", ["hr", "w2", "b2"], ["y"], name="conv2")]
    g = helper.make_graph(nodes, "convnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, 14, 14])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    onnx.save(m, str(d / "fp32.onnx"))
    feeds = [{"x": np.random.default_rng(i).random((2, 3, 16, 16), dtype=np.float32)} for i in range(3)]
    quantize_int8_static(d / "fp32.onnx", d / "s8s8.onnx", feeds, op_types=("Conv",))
    meta = ((TensorMeta("x", np.dtype("float32"), ("n", 3, 16, 16)),), (TensorMeta("y", np.dtype("float32"),
                                                                                    ("n", 8, 14, 14)),))
    return d, meta, feeds[0]


def _config_entry(session, key):
    try:
        return session.get_session_options().get_session_config_entry(key)
    except RuntimeError:  # not set
        return None


_HOST_SAFE = __import__("edge_runtime.backends.cpu_features", fromlist=["s8s8_safe"]).s8s8_safe()[0]


@pytest.mark.parametrize("cpu", ["epyc_zen3", "cascade_lake"])
def test_s8s8_graph_never_runs_saturating_on_ort_cpu(conv_graphs, monkeypatch, caplog, cpu):
    from edge_runtime.backends.cpu_features import EXACT_INT8_ENTRY
    from edge_runtime.backends.onnxruntime import int8_doctor_row, int8_form

    d, (ins, outs), feed = conv_graphs
    _fake_host(monkeypatch, {"epyc_zen3": CPU_EPYC_ZEN3, "cascade_lake": CPU_CASCADE_LAKE}[cpu])
    unsafe = cpu == "epyc_zen3"
    assert int8_form(d / "s8s8.onnx") == "S8S8 Q/DQ" and int8_form(d / "fp32.onnx") is None
    with onnxruntime_runner(d / "fp32.onnx", "convnet", ins, outs, threads=1) as r:
        y32 = r.infer(feed)["y"]
        assert r.int8_note is None  # a float graph runs as is everywhere
    caplog.clear()
    with caplog.at_level("WARNING", logger="lvm_edge"):
        with onnxruntime_runner(d / "s8s8.onnx", "backbone", ins, outs, threads=1) as r:
            y8 = r.infer(feed)["y"]
            entry = _config_entry(r.session, EXACT_INT8_ENTRY)
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelname == "WARNING"]
    name, value, ok = int8_doctor_row()
    if unsafe:  # the exact U8U8 kernels, one warning naming the graph and why
        assert entry == "1" and r.int8_note == warnings[0] and len(warnings) == 1
        assert warnings[0].startswith("backbone: S8S8 Q/DQ INT8 graph, x86 without VNNI: S8S8 INT8 saturates")
        assert ok is None and "U8U8" in value and "s8s8.onnx (S8S8 Q/DQ)" in value
    else:
        assert entry is None and r.int8_note is None and not warnings
        assert ok is True and value.startswith("x86 with VNNI (avx512_vnni)")
    assert name == "INT8 on ORT CPU"
    if unsafe or _HOST_SAFE:  # as-is on a real CPU without VNNI would saturate: nothing to check there
        assert np.abs(y8 - y32).max() < 0.05 * np.abs(y32).max()


@pytest.mark.skipif(not __import__("edge_runtime.backends.cpu_features", fromlist=["is_x86"]).is_x86(),
                    reason="the exact-INT8 session entry is an x86 ONNX Runtime option")
def test_ort_honours_the_exact_int8_entry(conv_graphs, tmp_path):
    """The entry makes ONNX Runtime turn the int8 weights into uint8 (U8U8 kernels, which do not
    saturate); without it the fused convs keep int8 weights (U8S8, which saturate without VNNI)."""
    import onnx
    import onnxruntime as ort

    from edge_runtime.backends.cpu_features import EXACT_INT8_ENTRY

    d, _, _ = conv_graphs
    weight_types = {}
    for exact in (False, True):
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if exact:
            so.add_session_config_entry(EXACT_INT8_ENTRY, "1")
        so.optimized_model_filepath = str(tmp_path / f"opt{exact:d}.onnx")
        ort.InferenceSession(str(d / "s8s8.onnx"), so, providers=["CPUExecutionProvider"])
        m = onnx.load(so.optimized_model_filepath)
        types = {t.name: t.data_type for t in m.graph.initializer}
        weight_types[exact] = {types[n.input[3]] for n in m.graph.node if n.op_type == "QLinearConv"}
    assert weight_types == {False: {onnx.TensorProto.INT8}, True: {onnx.TensorProto.UINT8}}
