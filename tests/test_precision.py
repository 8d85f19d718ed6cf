"""Precision passes: the FP16 policy (what stays FP32 and why), INT8 Q/DQ and dynamic forms."""
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from export.onnx.cpu_latency import cpu_session, measure_latency
from export.onnx.int8_quant import STATIC_OPS_TRANSFORMER, count_ops, quantize_int8_dynamic, quantize_int8_static
from export.onnx.precision import PrecisionError, convert_fp16, fp16_policy, prepare, selection_path

ort = pytest.importorskip("onnxruntime")


def _toy_selector(path, d=8, n=32, k=5):
    """tokens (1,n,d), times (1,n) -> kept tokens/times: LayerNorm -> MatMul -> Relu -> MatMul(score) -> TopK -> Gather.

    A miniature of the sampler: a learned projection, a score projection, a selection, and a data path
    that copies inputs (tokens and their timestamps) to the outputs."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((d, d)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((d, 1)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.ones(d, np.float32), "g"), numpy_helper.from_array(np.zeros(d, np.float32), "b"),
             numpy_helper.from_array(np.array([k], np.int64), "k"), numpy_helper.from_array(np.array([-1], np.int64), "ax"),
             numpy_helper.from_array(np.array([1, 1, d], np.int64), "rep")]
    nodes = [
        helper.make_node("LayerNormalization", ["tokens", "g", "b"], ["ln"], axis=-1, name="ln"),
        helper.make_node("MatMul", ["ln", "w1"], ["h"], name="proj"),
        helper.make_node("Relu", ["h"], ["hr"], name="act"),
        helper.make_node("MatMul", ["hr", "w2"], ["s3"], name="score"),
        helper.make_node("Squeeze", ["s3", "ax"], ["s"], name="sq"),
        helper.make_node("TopK", ["s", "k"], ["vals", "idx"], axis=-1, name="topk"),
        helper.make_node("GatherElements", ["times", "idx"], ["kept_t"], axis=1, name="gather_t"),
        helper.make_node("Unsqueeze", ["idx", "ax"], ["idx3"], name="unsq"),
        helper.make_node("Tile", ["idx3", "rep"], ["idx3d"], name="tile"),
        helper.make_node("GatherElements", ["tokens", "idx3d"], ["kept"], axis=1, name="gather_x"),
    ]
    g = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, [1, n, d]),
                                         helper.make_tensor_value_info("times", TensorProto.FLOAT, [1, n])],
                          [helper.make_tensor_value_info("kept", TensorProto.FLOAT, [1, k, d]),
                           helper.make_tensor_value_info("kept_t", TensorProto.FLOAT, [1, k])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))
    return m


def _run(path, feeds):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy")
    m = _toy_selector(d / "toy.onnx")
    rng = np.random.default_rng(1)
    feeds = {"tokens": rng.standard_normal((1, 32, 8)).astype(np.float32),
             # 10 h into a stream: float16 has a 32 s step here; the outputs must still be exact
             "times": (36000.0 + np.arange(32) * 1.25).astype(np.float32)[None]}
    return d, m, feeds


def test_fp16_policy_keeps_norms_selection_and_data_path_fp32(toy):
    _, m, _ = toy
    pol = fp16_policy(prepare(m))
    assert {"ln", "topk"} <= pol["fp32_by_op"]
    assert {"score", "sq", "topk"} <= pol["fp32_selection"]         # the score projection up to TopK
    assert {"gather_t", "gather_x"} <= pol["fp32_input_derived"]    # inputs copied to outputs
    assert pol["fp16"] == {"proj", "act"}                           # only the arithmetic in between


def test_fp16_graph_has_fp32_io_and_exact_data_path(toy):
    d, m, feeds = toy
    m16, info = convert_fp16(m)
    onnx.save(m16, str(d / "toy16.onnx"))
    assert [i.type.tensor_type.elem_type for i in m16.graph.input] == [TensorProto.FLOAT] * 2
    assert [o.type.tensor_type.elem_type for o in m16.graph.output] == [TensorProto.FLOAT] * 2
    assert "MatMul" in info["fp16_ops"] and "TopK" in info["fp32_ops"]
    init16 = {t.name for t in m16.graph.initializer if t.data_type == TensorProto.FLOAT16}
    assert "w1" in init16 and "w2" not in init16 and "g" not in init16
    ref = _run(d / "toy.onnx", feeds)
    out = _run(d / "toy16.onnx", feeds)
    assert set(ref[1][0].tolist()) == set(out[1][0].tolist())  # same tokens kept
    order = {t: i for i, t in enumerate(ref[1][0].tolist())}
    perm = [order[t] for t in out[1][0].tolist()]
    np.testing.assert_array_equal(out[0][0], ref[0][0][perm])   # bit-exact copies, not fp16-rounded
    assert np.all(np.isin(out[1], feeds["times"]))              # timestamps exact at 10 h


def test_selection_path_is_excluded_from_quantisation(toy):
    d, m, feeds = toy
    excl = selection_path(prepare(m))
    info = quantize_int8_static(d / "toy.onnx", d / "toy8.onnx", [feeds] * 2, op_types=STATIC_OPS_TRANSFORMER,
                                exclude=excl)
    q = onnx.load(str(d / "toy8.onnx"))
    score = next(n for n in q.graph.node if n.name == "score")
    assert all("DequantizeLinear" not in (p.op_type for p in q.graph.node if o in p.output)
               for o in score.input)  # the score MatMul reads float tensors
    assert info["qdq_nodes"] > 0 and info["mode"] == "static_qdq"


@pytest.fixture(scope="module")
def conv8(tmp_path_factory):
    """A small conv net (FP32) and its static INT8 Q/DQ in the portable symmetric form, with
    all-positive inputs: the case where ORT's U8S8 kernels saturate most on x86 without VNNI."""
    d = tmp_path_factory.mktemp("conv8")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
    x = torch.rand(2, 3, 16, 16)
    with warnings.catch_warnings():  # the small TorchScript export is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (x,), str(d / "c.onnx"), input_names=["x"], output_names=["y"], opset_version=18,
                          dynamo=False)
    feeds = [{"x": np.random.default_rng(i).random((2, 3, 16, 16), dtype=np.float32)} for i in range(3)]
    info = quantize_int8_static(d / "c.onnx", d / "c8.onnx", feeds, op_types=("Conv",))
    return d, feeds, info


def test_static_qdq_is_symmetric_int8_with_float_bias(conv8):
    """The form TensorRT loads: int8 zero points = 0 for weights and activations, per-channel weights;
    on ORT CPU it runs as the runtime runs it (exact kernels where U8S8 ones saturate)."""
    from edge_runtime.backends.onnxruntime import int8_form

    d, feeds, info = conv8
    assert info["ActivationSymmetric"] and info["WeightSymmetric"] and info["QuantizeBias"] is False
    assert info["loads_in"] == ["onnxruntime", "tensorrt"]
    assert int8_form(d / "c8.onnx") == "S8S8 Q/DQ"
    q = onnx.load(str(d / "c8.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    zps = [inits[n.input[2]] for n in q.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
           and len(n.input) > 2 and n.input[2] in inits]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)
    assert any(z.ndim == 1 and z.size > 1 for z in zps)  # per-channel weight scales
    # bias stays float: no DequantizeLinear feeds a Conv's third input
    produced_by_dq = {o for n in q.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert all(len(n.input) < 3 or n.input[2] not in produced_by_dq for n in q.graph.node if n.op_type == "Conv")
    y = cpu_session(d / "c8.onnx").run(None, feeds[0])[0]
    y32 = cpu_session(d / "c.onnx").run(None, feeds[0])[0]
    assert np.abs(y - y32).max() < 0.1 * np.abs(y32).max()


def test_uint8_activation_form_is_u8s8(conv8):
    from edge_runtime.backends.onnxruntime import int8_form

    d, feeds, _ = conv8
    info = quantize_int8_static(d / "c.onnx", d / "cu8.onnx", feeds, op_types=("Conv",), symmetric=False)
    assert info["activation_type"] == "uint8" and int8_form(d / "cu8.onnx") == "U8S8 Q/DQ"


def test_conv_tails_keep_the_first_and_last_convolutions_fp32(tmp_path):
    """A conv net's INT8 forms keep its ends FP32: the first convolution after the inputs, the last
    j convolutions and every node after them (here a residual Add and a ReLU), j = 2, 4, ... below
    the number of convolutions."""
    from onnx import TensorProto, helper

    from export.onnx.int8_quant import conv_tails

    w = [numpy_helper.from_array(np.ones((4, c, 1, 1), np.float32), f"w{i}") for i, c in enumerate((3, 4, 4, 4))]
    nodes = [helper.make_node("Div", ["x", "s"], ["xn"], name="norm"),
             helper.make_node("Conv", ["xn", "w0"], ["a"], name="first"),
             helper.make_node("Relu", ["a"], ["ar"], name="relu_a"),
             helper.make_node("Conv", ["ar", "w1"], ["b"], name="middle"),
             helper.make_node("Conv", ["b", "w2"], ["c"], name="last_main"),
             helper.make_node("Conv", ["ar", "w3"], ["d"], name="last_skip"),
             helper.make_node("Add", ["c", "d"], ["e"], name="add"),
             helper.make_node("Relu", ["e"], ["y"], name="relu_out")]
    g = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])],
                          w + [numpy_helper.from_array(np.float32(255.0), "s")])
    model = prepare(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]))
    assert conv_tails(model) == [(2, {"first", "last_main", "last_skip", "add", "relu_out"})]
    # a chain of six: the first, then tails of 2 and 4 (a tail of every convolution but the first would
    # quantise none)
    chain = [helper.make_node("Conv", ["xn" if i == 0 else f"c{i - 1}", "w0" if i == 0 else "w1"], [f"c{i}"],
                              name=f"conv{i}") for i in range(6)]
    g6 = helper.make_graph([nodes[0]] + chain, "chain",
                           [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                           [helper.make_tensor_value_info("c5", TensorProto.FLOAT, [1, 4, 4, 4])], g.initializer)
    tails = conv_tails(prepare(helper.make_model(g6, opset_imports=[helper.make_opsetid("", 18)])))
    assert tails == [(2, {"conv0", "conv4", "conv5"}), (4, {"conv0", "conv2", "conv3", "conv4", "conv5"})]


def test_motion_error_is_the_share_of_frame_to_frame_change_moved():
    """The backbone's frame-to-frame error: 0 for the same tokens, the share of each frame's change
    moved for noisy ones: the same noise is a larger share of a stiller stream's changes."""
    from export.onnx.parity import motion_error

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(8, 49, 16)).cumsum(0) * 0.1 + 3.0  # 8 frames whose tokens drift
    assert motion_error([[ref]], [[ref.copy()]]) == 0.0
    noisy = ref + rng.normal(scale=0.05, size=ref.shape)
    err = motion_error([[ref]], [[noisy]])
    assert 0.0 < err < 1.0
    # the same noise on a stream twice as still is twice the share of its changes
    still = ref[:1] + (ref - ref[:1]) * 0.5
    assert motion_error([[still]], [[still + (noisy - ref)]]) > 1.5 * err
    # a call of one frame has no change to compare; a still stream has none either
    assert motion_error([[ref[:1]]], [[noisy[:1]]]) == 0.0
    assert motion_error([[np.repeat(ref[:1], 4, 0)]], [[np.repeat(noisy[:1], 4, 0)]]) == 0.0


_CPU_NO_VNNI = "processor\t: 0\nmodel name\t: AMD EPYC 7763\nflags\t\t: fpu sse4_2 avx fma avx2 bmi2 sha_ni\n"
_CPU_VNNI = "processor\t: 0\nmodel name\t: Xeon Gold 6248\nflags\t\t: fpu sse4_2 avx fma avx2 avx512f avx512_vnni\n"


@pytest.mark.parametrize("cpuinfo", [_CPU_NO_VNNI, _CPU_VNNI], ids=["no_vnni", "vnni"])
def test_export_measures_int8_as_the_runtime_runs_it(conv8, monkeypatch, cpuinfo):
    """Parity, candidate timing and calibration sessions: on x86 without VNNI they run INT8 on the
    exact U8U8 kernels (never the saturating form) and the timings say so; elsewhere as exported."""
    from edge_runtime.backends import cpu_features

    host_safe = cpu_features.s8s8_safe()[0]
    monkeypatch.setattr(cpu_features, "read_cpuinfo", lambda: cpuinfo)
    monkeypatch.setattr(cpu_features.platform, "machine", lambda: "x86_64")
    d, feeds, _ = conv8
    exact = cpuinfo is _CPU_NO_VNNI

    def entry(path):
        try:
            return cpu_session(path).get_session_options().get_session_config_entry(cpu_features.EXACT_INT8_ENTRY)
        except RuntimeError:  # not set
            return None

    assert entry(d / "c8.onnx") == ("1" if exact else None) and entry(d / "c.onnx") is None
    lat = measure_latency({"fp32": d / "c.onnx", "int8": d / "c8.onnx"}, feeds[0], runs=2, warmup=1)
    assert "int8_kernels" not in lat["fp32"] and ("int8_kernels" in lat["int8"]) is exact
    if exact or host_safe:  # as exported on a real CPU without VNNI would saturate: nothing to check there
        y, y32 = cpu_session(d / "c8.onnx").run(None, feeds[0])[0], cpu_session(d / "c.onnx").run(None, feeds[0])[0]
        assert np.abs(y - y32).max() < 0.1 * np.abs(y32).max()


def test_export_sessions_are_the_runtimes(conv8):
    """lvm-export's parity, latency and calibration sessions are built by the runtime's factory: the
    same options (denormals flushed to zero, no spinning threads), so what it reports is what runs."""
    from edge_runtime.backends import TensorMeta, onnxruntime_runner

    d, feeds, _ = conv8
    keys = ("session.set_denormal_as_zero", "session.intra_op.allow_spinning")

    def entries(session):
        so = session.get_session_options()
        return {k: so.get_session_config_entry(k) for k in keys}, so.inter_op_num_threads, so.graph_optimization_level

    meta = ((TensorMeta("x", np.dtype("float32"), ("n", 3, 16, 16)),), (TensorMeta("y", np.dtype("float32"),
                                                                                    ("n", 4, 14, 14)),))
    with onnxruntime_runner(d / "c.onnx", "convnet", *meta, threads=2, providers=["CPUExecutionProvider"]) as r:
        runtime = entries(r.session)
    assert runtime[0] == {"session.set_denormal_as_zero": "1", "session.intra_op.allow_spinning": "0"}
    assert entries(cpu_session(d / "c.onnx", 2)) == runtime


def test_static_needs_calibration_data(toy):
    d, _, _ = toy
    with pytest.raises(PrecisionError, match="calibration"):
        quantize_int8_static(d / "toy.onnx", d / "never.onnx", [], op_types=("MatMul",))


def test_dynamic_quantises_weight_matmuls_only(toy):
    d, _, feeds = toy
    info = quantize_int8_dynamic(d / "toy.onnx", d / "toyd.onnx", exclude=["score"])
    q = onnx.load(str(d / "toyd.onnx"))
    assert info["dynamic_ops"] >= 1 and count_ops(q, ("MatMulInteger", "DynamicQuantizeMatMul")) >= 1
    assert any(n.name == "score" and n.op_type == "MatMul" for n in q.graph.node)  # excluded stays float
    from edge_runtime.backends.onnxruntime import int8_form

    assert int8_form(d / "toyd.onnx") == "dynamic" and int8_form(d / "toy.onnx") is None
    ref, out = _run(d / "toy.onnx", feeds), _run(d / "toyd.onnx", feeds)
    assert set(out[1][0].tolist()) <= set(feeds["times"][0].tolist())


def test_latency_stats_interleaved(toy):
    d, _, feeds = toy
    lat = measure_latency({"a": d / "toy.onnx", "b": d / "toy16.onnx"}, feeds, runs=5, warmup=1)
    for v in lat.values():
        assert v["runs"] == 5 and v["p10_ms"] <= v["median_ms"] <= v["p90_ms"] and v["threads"] == 2


def test_activation_matmuls_are_found(toy):
    from export.onnx.int8_quant import activation_matmuls

    _, m, _ = toy
    assert activation_matmuls(prepare(m)) == set()  # both MatMuls have weights
    g = onnx.helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"], name="attn"),
         helper.make_node("MatMul", ["c", "w"], ["y"], name="proj")],
        "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3]),
              helper.make_tensor_value_info("b", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(np.ones((4, 4), np.float32), "w")])
    assert activation_matmuls(helper.make_model(g)) == {"attn"}
