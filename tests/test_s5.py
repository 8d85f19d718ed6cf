"""The Selective S4 (S5) sampler: its S4D maths, what it learns, LSMCL, its export, and the runtime
carrying its recurrent state (commit, batched streams, snapshots)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_runtime.config import resolve_model_config

REPO = Path(__file__).resolve().parent.parent


def s5_config(**sampler):
    cfg = resolve_model_config("lvm-tiny-s5")
    return cfg.model_copy(update={"sampler": cfg.sampler.model_copy(update=sampler)}) if sampler else cfg


@pytest.fixture(scope="module")
def s5_net():
    from export.model.lvmnet import LVMNet

    torch.manual_seed(0)
    return LVMNet(s5_config(), backbone_init=False).eval()


def _clip(net, c: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed * 100 + c)
    cfg = net.cfg
    T = cfg.stream.clip_frames
    ct, cp = net.clip_coords(torch.arange(c * T, (c + 1) * T, dtype=torch.float32)[None] / cfg.stream.fps)
    return torch.randn(1, cfg.clip_tokens, cfg.backbone.dim, generator=g), ct, cp


# -- S4D ----------------------------------------------------------------------------------------------
def test_s4d_convolution_equals_recurrence_and_clips_compose():
    from export.model.s5_sampler import S4D

    torch.manual_seed(1)
    layer = S4D(16, 4)
    u, x0 = torch.randn(6, 24, 16), 0.3 * torch.randn(6, 16, 8)
    y_conv, x_conv = layer._conv(u, x0)
    y_rec, x_rec = layer._recurrent(u, x0)
    assert torch.allclose(y_conv, y_rec, atol=1e-5) and torch.allclose(x_conv, x_rec, atol=1e-5)
    # streaming: two chunks with the state carried == one pass
    ya, xa = layer._conv(u[:, :10], x0)
    yb, xb = layer._conv(u[:, 10:], xa)
    assert torch.allclose(torch.cat([ya, yb], 1), y_conv, atol=1e-5) and torch.allclose(xb, x_conv, atol=1e-5)
    # the state decays: with no input a state fades (|A_bar| < 1), so no stream's state grows without bound
    _, x_far = layer._conv(torch.zeros(6, 2000, 16), x0)
    assert x_far.abs().max() < x0.abs().max()


def test_s5_sampler_streams_a_memory_and_a_state(s5_net):
    net = s5_net
    m = net.cfg.stream.memory_tokens
    carry = net.empty_carry(1)
    assert len(carry) == 5 and carry[4].shape == (1, *net.sampler.state_shape)
    with torch.no_grad():
        for c in range(3):
            prev_state = carry[4]
            carry = net.sampler(*carry, *_clip(net, c))
            assert not torch.equal(carry[4], prev_state)
    mem, mem_t, mem_p, valid = carry[:4]
    assert mem.shape == (1, m, net.cfg.backbone.dim) and int(valid.sum()) == m
    # every kept token is one of the inputs, at its own time and patch
    assert mem_t.max() < 3 * net.cfg.stream.clip_frames and mem_p.max() < net.cfg.backbone.tokens_per_frame
    # the recurrent mode gives the same selection
    net_r = type(net)(s5_config(s4_mode="recurrent"), backbone_init=False).eval()
    net_r.load_state_dict(net.state_dict())
    carry_r = net_r.empty_carry(1)
    with torch.no_grad():
        for c in range(3):
            carry_r = net_r.sampler(*carry_r, *_clip(net, c))
    assert set(zip(mem_t[0].tolist(), mem_p[0].tolist())) == set(zip(carry_r[1][0].tolist(), carry_r[2][0].tolist()))
    assert torch.allclose(carry[4], carry_r[4], atol=1e-4)


def test_s5_learns_to_keep_marked_tokens():
    """The token-target loss through the S5 scores: after a few dozen steps the memory keeps the tokens
    that carry a marker direction, which it does not do at random."""
    from export.train.losses import token_loss
    from export.model.lvmnet import LVMNet

    torch.manual_seed(0)
    cfg = s5_config()
    net = LVMNet(cfg, backbone_init=False)
    opt = torch.optim.AdamW(net.sampler.parameters(), lr=3e-3)
    marker = torch.randn(cfg.backbone.dim)
    marker = 3.0 * marker / marker.norm()

    def batch(seed):
        g = torch.Generator().manual_seed(seed)
        clip, ct, cp = _clip(net, 0, seed)
        pos = (torch.rand(1, cfg.clip_tokens, generator=g) < 0.1).float()
        return clip + pos[..., None] * marker, ct, cp, pos

    def kept_share(seed):
        clip, ct, cp, pos = batch(seed)
        with torch.no_grad():
            out = net.sampler(*net.empty_carry(1), clip, ct, cp)
        frame = out[1][0].long()
        idx = frame * cfg.backbone.tokens_per_frame + out[2][0]
        return float(pos[0, idx].mean())

    before = kept_share(1000)
    net.train()
    for step in range(40):
        clip, ct, cp, pos = batch(step)
        carry = net.empty_carry(1)
        _, scores = net.sampler.forward_train(*carry, clip, ct, cp)
        target = torch.cat([torch.zeros(1, cfg.stream.memory_tokens), pos], 1)
        weight = torch.cat([torch.zeros(1, cfg.stream.memory_tokens), torch.ones_like(pos)], 1)
        loss = token_loss(scores, target, weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    after = kept_share(1000)
    # 10 % of the clip is marked: 78 tokens of the 392 kept at random; all of them once learned
    assert before < 0.35 and after > 0.19, (before, after)


def test_lsmcl_matches_a_short_view_to_its_long_view(tmp_path):
    """Four synthetic streams, each with its own slowly drifting token pattern: LSMCL's query finds its
    key among the batch well above chance (1/8) once trained, and it logs every step."""
    from types import SimpleNamespace

    from export.train.lsmcl import info_nce, pretrain_lsmcl
    from export.model.s5_sampler import S4Encoder

    q = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    assert float(info_nce(q, q, 0.1)) < float(info_nce(q, q.roll(1, 0), 0.1))

    cfg = s5_config()
    P, d = cfg.backbone.tokens_per_frame, cfg.backbone.dim
    g = torch.Generator().manual_seed(0)
    videos = []
    for i in range(4):
        base = torch.randn(P, d, generator=g)
        n = 96
        drift = torch.cumsum(0.05 * torch.randn(n, P, d, generator=g), 0)
        tokens = (base[None] + drift + 0.3 * torch.randn(n, P, d, generator=g)).to(torch.float16)
        videos.append(SimpleNamespace(times=np.arange(n, dtype=np.float64), tokens=tokens))  # all LSMCL reads
    torch.manual_seed(0)
    enc = S4Encoder(cfg)
    res = pretrain_lsmcl(enc, videos, tmp_path, steps=30, batch=8, clip_frames=16, long_clips=2, mask=0.5,
                         temperature=0.1, momentum=0.9, lr=3e-3, seed=0, progress=False)
    log = [json.loads(line) for line in (tmp_path / "lsmcl_log.jsonl").read_text().splitlines()]
    assert len(log) == 30 and res["steps"] == 30
    assert np.mean([r["top1"] for r in log[-10:]]) > 0.4


# -- export and runtime ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s5_bundle(tmp_path_factory, s5_net):
    from export.cli import export as cli_export
    from export.model.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("s5")
    ck = save_checkpoint(s5_net, root / "lvm-tiny-s5.safetensors", {"seed": 0})
    out = root / "lvm-tiny-s5-fp32"
    rc = cli_export.main(["--precision", "fp32", "--checkpoint", str(ck), "--out", str(out), "--skip-gate",
                          "--calib", "demo://checkout?seed=5&duration=64", "--bench-runs", "1", "--no-progress"])
    assert rc == 0
    return out


@pytest.mark.slow
def test_s5_export_carries_the_state_with_parity(s5_bundle):
    from edge_runtime.backends.bundle import load_bundle

    man = json.loads((s5_bundle / "manifest.json").read_text())
    g = man["graphs"]["sampler"]
    assert [t["name"] for t in g["inputs"]][-1] == "sampler_state"
    assert [t["name"] for t in g["outputs"]][-1] == "new_sampler_state"
    par = man["parity"]["sampler"] if "parity" in man else g["parity"]
    assert par["topm_recall"] == 1.0 and par["state_max_abs_scaled"] < 1e-4
    assert par["streams_batch"]["topm_recall"] == 1.0
    b = load_bundle(s5_bundle)
    assert b.sampler_state_bytes == 49 * 2 * 64 * 16 * 4


@pytest.fixture(scope="module")
def s5_engine(s5_bundle):
    from edge_runtime.engine.engine import Engine

    with Engine(s5_bundle, backend="onnxruntime", threads=2) as e:
        yield e


@pytest.mark.slow
def test_runtime_memory_streams_the_state_like_pytorch(s5_engine, s5_net):
    """TokenMemory over the exported graph (ping-pong, commit) vs PyTorch over the same clips, and
    two streams in one batched call vs each alone."""
    from edge_runtime.memory.token_memory import TokenMemory

    runner = s5_engine.sampler
    assert s5_engine.bundle.sampler_batches_streams
    mems = [TokenMemory(runner), TokenMemory(runner)]
    for m in mems:
        m.batched = True
        m.reset()
    assert "sampler_state" in mems[0].carried
    alone = TokenMemory(runner)
    alone.reset()
    carry = s5_net.empty_carry(1)
    for c in range(3):
        clips = [tuple(t.numpy() for t in _clip(s5_net, c, seed)) for seed in (0, 1)]
        TokenMemory.step_many(mems, clips)
        alone.step(*clips[1])
        with torch.no_grad():
            carry = s5_net.sampler(*carry, *(torch.from_numpy(a) for a in clips[0]))
    got = mems[0].read()
    ref = {k: t.numpy() for k, t in zip(("mem", "mem_t", "mem_p", "mem_valid", "sampler_state"), carry)}
    assert set(zip(got["mem_t"][0].tolist(), got["mem_p"][0].tolist())) == \
        set(zip(ref["mem_t"][0].tolist(), ref["mem_p"][0].tolist()))
    assert np.abs(got["sampler_state"] - ref["sampler_state"]).max() < 1e-4
    other = mems[1].read()
    for k, v in alone.read().items():
        assert np.allclose(other[k], v, atol=1e-5), k


@pytest.mark.slow
def test_status_names_the_sampler(s5_engine):
    from types import SimpleNamespace

    from edge_runtime.serve.run_status import runtime_status

    rt = SimpleNamespace(engine=s5_engine, stream=s5_engine.new_stream(), source_stats={}, intake_fps=0.0, name="default",
                         state=SimpleNamespace(value="streaming"), error=None, end_reason=None, outage_since=None, source_problem=None, source_label="demo", wall_origin=None, frames_in=0,
                         restored_from=None, last_snapshot_path=None, last_snapshot_at=None, snapshot_error=None,
                         started=0.0)
    st = runtime_status(rt)
    assert st["sampler"] == {"kind": "s5", "state_bytes": 401408}
    assert st["memory_bytes"] > 2 * 401408  # both buffer sets and the committed copy hold the state


@pytest.mark.slow
def test_engine_snapshot_restores_the_state(s5_engine):
    eng = s5_engine
    stream = eng.new_stream()
    frames = np.random.default_rng(0).integers(0, 256, (40, 112, 112, 3), dtype=np.uint8)
    assert eng.ingest(stream, frames, np.arange(40, dtype=np.float64)) == 2
    state = stream.state_dict()
    assert "memory_sampler_state" in state and np.abs(state["memory_sampler_state"]).max() > 0
    fresh = eng.new_stream()
    fresh.load_state_dict(state)
    again = fresh.state_dict()
    for k in ("memory_sampler_state", "memory_mem_t", "memory_mem"):
        assert np.array_equal(again[k], state[k]), k
    # a state without the sampler's part does not fit: refused in one line, nothing half-loaded
    broken = {k: v for k, v in state.items() if k != "memory_sampler_state"}
    with pytest.raises(ValueError, match="sampler_state"):
        fresh.load_state_dict(broken)


@pytest.mark.slow  # the S5 bundle's export (~45 s): the slow tests above share it
def test_bundle_whose_sampler_state_does_not_match_its_config(s5_bundle, tmp_path):
    from edge_runtime.backends.bundle import BundleError, load_bundle

    def edited(name, change):
        dst = tmp_path / name
        shutil.copytree(s5_bundle, dst)
        man = json.loads((dst / "manifest.json").read_text())
        change(man)
        (dst / "manifest.json").write_text(json.dumps(man))
        return dst

    def as_lvm(man):
        for k in ("kind", "state_size", "s4_mode"):
            man["config"]["sampler"].pop(k, None)

    with pytest.raises(BundleError, match="carries a sampler_state but the config's sampler is lvm"):
        load_bundle(edited("as-lvm", as_lvm), verify=False)

    def no_state(man):
        g = man["graphs"]["sampler"]
        g["inputs"] = [t for t in g["inputs"] if t["name"] != "sampler_state"]
        g["outputs"] = [t for t in g["outputs"] if t["name"] != "new_sampler_state"]

    with pytest.raises(BundleError, match="config's sampler is s5 but the sampler graph carries no sampler_state"):
        load_bundle(edited("no-state", no_state), verify=False)

    def half(man):
        g = man["graphs"]["sampler"]
        g["outputs"] = [t for t in g["outputs"] if t["name"] != "new_sampler_state"]

    with pytest.raises(BundleError, match="only part of sampler_state, new_sampler_state"):
        load_bundle(edited("half", half), verify=False)

    def other_size(man):
        man["config"]["sampler"]["state_size"] = 4

    with pytest.raises(BundleError, match="sampler_state"):
        load_bundle(edited("size", other_size), verify=False)


# -- lvm-train -------------------------------------------------------------------------------------
@pytest.mark.slow  # lvm-train: LSMCL and the sampler stage on rendered videos
def test_train_s5_through_frozen_heads(tmp_path, capsys):
    """lvm-train of the s5 config on the shipped checkpoint's heads: LSMCL, then the sampler alone;
    the heads come out bit-identical, the sampler does not."""
    from export.cli import train as cli_train
    from export.model.checkpoint import load_checkpoint

    shipped = REPO / "checkpoints" / "lvm-tiny.safetensors"
    rc = cli_train.main(["--config", "lvm-tiny-s5", "--out", str(tmp_path), "--heads-from", str(shipped),
                         "--videos", "2", "--video-s", "96", "--max-steps", "4", "--lsmcl-steps", "2",
                         "--no-progress", "--no-reader", "--no-events"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "LSMCL pre-training of the S4 encoder: 2 steps" in out
    net, meta = load_checkpoint(tmp_path / "lvm-tiny-s5.safetensors")
    ref, _ = load_checkpoint(shipped)
    for k, v in ref.heads.state_dict().items():
        assert torch.equal(net.heads.state_dict()[k], v), k
    assert int(meta["lsmcl_steps"]) == 2 and meta["heads_from"] == str(shipped)


def test_train_heads_from_refusals(tmp_path, capsys):
    from export.cli import train as cli_train

    shipped = REPO / "checkpoints" / "lvm-tiny.safetensors"
    rc = cli_train.main(["--config", "lvm-tiny-s5", "--out", str(tmp_path), "--heads-from", str(shipped),
                         "--init-from", str(shipped)])
    err = capsys.readouterr().err
    assert rc == 2 and "--heads-from gives the backbone and the heads" in err and "Traceback" not in err
    rc = cli_train.main(["--config", "lvm-edge", "--out", str(tmp_path), "--heads-from", str(shipped),
                         "--videos", "1", "--video-s", "128"])
    err = capsys.readouterr().err
    assert rc == 2 and "settings differ" in err and "Traceback" not in err
