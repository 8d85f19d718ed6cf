"""Model core: shapes of every part for every config, the relaxed top-k, chunked TopK, SVD parity."""
import subprocess
import sys
import textwrap

import pytest
import torch

from edge_runtime.config import ConfigError, load_model_config, resolve_model_config
from export.model.lvmnet import LVMNet
from export.onnx.graphs import GRAPHS, example_inputs, graph_module
from export.model.sampler import chunked_topk, relaxed_khot, relaxed_topk

CONFIGS = ["lvm-tiny", "lvm-edge", "lvm-paper"]


def _build(name):
    cfg = resolve_model_config(name)
    if name == "lvm-paper":
        # Swin-V2-S with m=5880 and d=2048 costs ~1.7 TMAC per sampler call: check its shapes and
        # dtypes on the meta device (no compute), at batch 1.
        with torch.device("meta"):
            return LVMNet(cfg).eval(), 1
    return LVMNet(cfg).eval(), 2


@pytest.mark.parametrize("name", CONFIGS)
def test_every_part_shapes_and_dtypes(name):
    net, batch = _build(name)
    cfg = net.cfg
    s, P, d = cfg.backbone.image_size, cfg.backbone.tokens_per_frame, cfg.backbone.dim
    m, k, C, r = cfg.stream.memory_tokens, cfg.clip_tokens, cfg.heads.num_activities, cfg.svd.n_components
    dev = "meta" if name == "lvm-paper" else "cpu"
    with torch.no_grad():
        frames = torch.zeros(batch, s, s, 3, dtype=torch.uint8, device=dev)
        tok = net.backbone(frames)
        assert tok.shape == (batch, P, d) and tok.dtype == torch.float32
        mem = tuple(t.to(dev) for t in net.empty_memory(1))
        times = torch.arange(cfg.stream.clip_frames, dtype=torch.float32)[None]
        ct, cp = net.clip_coords(times)
        out = net.sampler(*mem, torch.zeros(1, k, d, device=dev), ct.to(dev), cp.to(dev))
        assert [tuple(o.shape) for o in out] == [(1, m, d), (1, m), (1, m), (1, m)]
        assert [o.dtype for o in out] == [torch.float32, torch.float32, torch.int64, torch.float32]
        Q, L = 3, 7
        res = net.heads(*out, torch.zeros(1, r, d, device=dev), torch.zeros(1, r, device=dev),
                        torch.tensor([0, 1, 2], device=dev), torch.tensor([1, 0, 2], device=dev),
                        torch.zeros(Q, P, d, device=dev), torch.tensor([[0.0, 30.0]] * Q, device=dev),
                        torch.linspace(0, 30, L, device=dev)[None].repeat(Q, 1), torch.ones(Q, L, device=dev))
        assert [tuple(o.shape) for o in res] == [(Q, C), (Q, L, 4), (Q, L), (Q, L)]
        assert all(o.dtype == torch.float32 for o in res)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return LVMNet(resolve_model_config("lvm-tiny"))


def test_tiny_outputs_finite_and_boxes_valid(tiny):
    tiny.eval()
    with torch.no_grad():
        for spec in GRAPHS:
            outs = graph_module(tiny, spec)(*example_inputs(tiny, spec))
            outs = outs if isinstance(outs, tuple) else (outs,)
            assert all(torch.isfinite(o.float()).all() for o in outs), spec.name
        boxes = graph_module(tiny, GRAPHS[2])(*example_inputs(tiny, GRAPHS[2]))[1]
        assert (boxes >= 0).all() and (boxes <= 1).all()
        assert (boxes[..., 2] >= boxes[..., 0]).all() and (boxes[..., 3] >= boxes[..., 1]).all()


def test_sampler_keeps_valid_tokens_first(tiny):
    tiny.eval()
    mem = tiny.empty_memory(1)  # all invalid
    cfg = tiny.cfg
    k = cfg.clip_tokens
    ct, cp = tiny.clip_coords(torch.arange(cfg.stream.clip_frames, dtype=torch.float32)[None] + 100)
    with torch.no_grad():
        new_mem, new_t, _, new_valid = tiny.sampler(*mem, torch.randn(1, k, cfg.backbone.dim), ct, cp)
    # m == k in the tiny config: every clip token is kept, none of the empty slots
    assert new_valid.sum().item() == min(cfg.stream.memory_tokens, k)
    assert (new_t >= 100).all()


def test_gradients_reach_sampler_through_relaxation(tiny):
    tiny.train()
    cfg = tiny.cfg
    mem = list(tiny.empty_memory(1))
    mem[0] = torch.randn_like(mem[0])
    mem[3] = torch.ones_like(mem[3])
    ct, cp = tiny.clip_coords(torch.arange(cfg.stream.clip_frames, dtype=torch.float32)[None] + 1000)
    (kept, t, p, v), scores = tiny.sampler.forward_train(*mem, torch.randn(1, cfg.clip_tokens, cfg.backbone.dim), ct, cp,
                                                         generator=torch.Generator().manual_seed(0))
    assert scores.shape == (1, cfg.stream.memory_tokens + cfg.clip_tokens)
    (kept * torch.randn_like(kept)).sum().backward()
    grads = [p.grad for p in tiny.sampler.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in tiny.backbone.parameters())
    tiny.zero_grad(set_to_none=True)


def test_relaxed_topk_sums_to_k_and_hardens_as_tau_falls():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(2, 50, generator=g) * 3
    k = 7
    hard = torch.zeros_like(scores).scatter(-1, torch.topk(scores, k).indices, 1.0)
    gaps = []
    for tau in (2.0, 1.0, 0.3, 0.05, 0.01):
        khot = relaxed_khot(scores, k, tau)
        assert torch.allclose(khot.sum(-1), torch.full((2,), float(k)), atol=1e-4)
        gaps.append(float((khot - hard).abs().sum()))
    assert gaps[-1] < 1e-4
    assert all(a >= b - 1e-6 for a, b in zip(gaps, gaps[1:]))


def test_straight_through_value_is_hard_gradient_is_relaxed():
    g = torch.Generator().manual_seed(3)
    scores = torch.randn(2, 40, generator=g).requires_grad_(True)
    k, tau = 5, 1.0
    select, idx = relaxed_topk(scores, k, tau, noise=False)
    hard = torch.zeros(2, 40).scatter(-1, torch.topk(scores.detach(), k).indices, 1.0)
    assert torch.allclose(select.detach(), hard, atol=1e-6)
    assert set(idx[0].tolist()) == set(torch.topk(scores[0].detach(), k).indices.tolist())
    w = torch.randn(2, 40, generator=g)
    (g_st,) = torch.autograd.grad((select * w).sum(), scores)
    ref = scores.detach().clone().requires_grad_(True)
    (g_ref,) = torch.autograd.grad((relaxed_khot(ref, k, tau) * w).sum(), ref)
    assert torch.allclose(g_st, g_ref, atol=1e-6)
    assert g_st.abs().sum() > 0


@pytest.mark.parametrize("m,chunk", [(5880, 3840), (100, 30), (64, 64)])
def test_chunked_topk_selects_same_set(m, chunk):
    g = torch.Generator().manual_seed(2)
    scores = torch.randn(2, 11760 if m > 1000 else 300, generator=g)
    full = torch.topk(scores, m).indices
    chunked = chunked_topk(scores, m, chunk)
    assert chunked.shape == (2, m)
    for b in range(2):
        assert set(full[b].tolist()) == set(chunked[b].tolist())
        assert len(set(chunked[b].tolist())) == m


def test_paper_config_selects_in_chunks():
    cfg = resolve_model_config("lvm-paper")
    assert cfg.stream.memory_tokens > cfg.sampler.topk_chunk == 3840
    assert cfg.stream.memory_tokens == cfg.clip_tokens == 5880


def test_config_unknown_key_names_key_and_file(tmp_path):
    src = (resolve_model_config.__globals__["CONFIG_DIR"] / "models" / "lvm-tiny.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(src.replace("  d_model: 64\n  layers: 2", "  d_modle: 64\n  layers: 2", 1))
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key 'sampler\.d_modle'"):
        load_model_config(bad)
    bad.write_text(src.replace("clip_frames: 16", "clip_frames: many"))
    with pytest.raises(ConfigError, match=r"bad\.yaml: stream\.clip_frames"):
        load_model_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_model_config(tmp_path / "missing.yaml")


def test_all_shipped_configs_validate():
    for name in CONFIGS:
        cfg = resolve_model_config(name)
        assert cfg.name == name
        assert cfg.clip_tokens == cfg.stream.clip_frames * cfg.backbone.grid**2


def test_edge_runtime_imports_without_torch():
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, Block())
        import edge_runtime
        from edge_runtime.memory.svd import OnlineSVD
        from edge_runtime import config
        from edge_runtime.query import answers
        from edge_runtime.memory import svd
        import numpy as np
        s = OnlineSVD(8, 2); s.update(np.random.default_rng(0).normal(size=(4, 8)))
        assert "torch" not in sys.modules
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_fused_attention_is_the_exported_attention(monkeypatch):
    """Outside the ONNX export, attention without dropout runs as torch's fused kernel (it keeps no
    N x N matrix for the backward pass, and is faster without one); the export traces the plain ops.
    Both give the same output and the same gradients, in training and in eval, with a key mask and
    with a per-head bias (the reader's time bias)."""
    from export.model.layers import EncoderLayer, key_bias

    torch.manual_seed(0)
    layer = EncoderLayer(64, 4, 2, 0.0)
    x = torch.randn(2, 40, 64)
    keep = torch.ones(2, 40)
    keep[0, -7:] = 0
    for bias in (key_bias(keep), key_bias(keep) - torch.rand(2, 4, 40, 40)):
        for train in (True, False):
            layer.train(train)
            outs, grads = [], []
            for exporting in (False, True):  # the export's flag is what selects the plain ops
                monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda flag=exporting: flag)
                xi = x.clone().requires_grad_(True)
                y = layer(xi, bias)
                (y * torch.linspace(-1, 1, 64)).sum().backward()
                outs.append(y.detach())
                grads.append(xi.grad)
            assert torch.allclose(outs[0], outs[1], atol=1e-5)
            assert torch.allclose(grads[0], grads[1], atol=1e-5)
            assert not torch.allclose(outs[0], x, atol=1e-3)  # the layer did something


def test_attention_dropout_keeps_one_minus_p_and_the_mean():
    """The attention's dropout (its mask drawn by numpy) drops a share p of the weights, scales the
    rest by 1 / (1 - p), is fixed by torch.manual_seed, differs from call to call, and is the identity
    in eval."""
    from export.model.layers import AttentionDropout

    drop = AttentionDropout(0.1).train()
    x = torch.rand(4, 4, 100, 100) + 0.5
    torch.manual_seed(3)
    a = drop(x)
    b = drop(x)
    torch.manual_seed(3)
    assert torch.equal(drop(x), a) and not torch.equal(a, b)
    kept = a != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.005
    assert torch.allclose(a[kept], x[kept] / 0.9)
    xg = x.clone().requires_grad_(True)
    torch.manual_seed(3)
    drop(xg).sum().backward()
    assert torch.allclose(xg.grad, kept.float() / 0.9)
    assert torch.equal(drop.eval()(x), x)
