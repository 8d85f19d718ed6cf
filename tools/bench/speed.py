"""P1 (paper protocol: one pass + batched heads vs per-query re-processing), P2 (streaming real-time
factor, ONNX Runtime vs PyTorch eager on the same graphs) and the CUDA FP16 streaming path."""
from __future__ import annotations

import math

import numpy as np

from edge_runtime.checkout.queries import engine_request
from tools.bench.common import SEED_BASE, Ctx, alternate, crops_for, pc, ratio_spread, stats

P1_SEED = SEED_BASE + 1
P2_SEED = SEED_BASE + 2


# ----------------------------------------------------------------------------------------------
# P1

def p1(ctx: Ctx) -> dict:
    from edge_runtime.checkout import CheckoutVideo, sample_queries
    from edge_runtime.query.types import NAMES

    cfg = ctx.cfg("lvm-tiny")
    S, fps, ofps = cfg.backbone.image_size, cfg.stream.fps, cfg.stream.object_fps
    step = int(round(ofps / fps))
    if abs(ofps / fps - step) > 1e-9:
        raise RuntimeError(f"object fps {ofps} is not a multiple of the stream fps {fps}")
    D = 120.0 if ctx.quick else 1800.0
    n_queries = 50 if ctx.quick else 1200
    rounds = 2 if ctx.quick else 3
    subset_n = {"activity": 2, "object": 1, "time": 1} if ctx.quick else ctx.p1_subset
    _, binfo = ctx.bundle("lvm-tiny", "fp32")

    video = CheckoutVideo(seed=P1_SEED, duration_s=D, size=S)
    qs = sample_queries(video.annotations(), n_queries, np.random.default_rng(P1_SEED))
    if not ctx.quick and len(qs) < 1000:
        ctx.warn(f"P1: the generator gave only {len(qs)} valid queries for the {D:g}-s video (asked {n_queries})")
    crops = crops_for(video, qs, S)
    reqs = [engine_request(q, crops.get(q.instance_id)) for q in qs]
    types = [t for t in NAMES if any(q.type == t for q in qs)]
    by_type = {t: [i for i, q in enumerate(qs) if q.type == t] for t in types}
    ctx.log(f"  P1: {D:g} s video, {len(qs)} queries ({', '.join(f'{t} {len(v)}' for t, v in by_type.items())})")

    t5, f5 = ctx.frames(P1_SEED, D, S, ofps)  # 5 fps; every `step`-th frame is the 1 fps stream
    t1, f1 = t5[::step], f5[::step]

    def window_frames(q):
        tt, ff = (t5, f5) if q.type == "object" else (t1, f1)
        sel = (tt >= q.start) & (tt <= q.end)
        return tt[sel], ff[sel]

    n_frames = np.array([len(window_frames(q)[0]) for q in qs])

    # baseline subset: random per type, spread over the window lengths present
    rng = np.random.default_rng(P1_SEED + 1)
    subset: list[int] = []
    for t in types:
        idx = by_type[t]
        by_w: dict[str, list[int]] = {}
        for i in rng.permutation(idx).tolist():
            by_w.setdefault(qs[i].window, []).append(i)
        pick: list[int] = []
        while len(pick) < min(subset_n.get(t, 0), len(idx)):
            for w in sorted(by_w):
                if by_w[w] and len(pick) < subset_n.get(t, 0):
                    pick.append(by_w[w].pop())
        subset.extend(pick)
    subset = [subset[i] for i in rng.permutation(len(subset))]
    chunks = [subset[r::rounds] for r in range(rounds)]

    ours_eng = ctx.engine("lvm-tiny")
    base_eng = ctx.engine("lvm-tiny")
    ours_stream, base_stream = ours_eng.new_stream(), base_eng.new_stream()
    # warm-up: sessions, allocators
    ours_eng.ingest(ours_stream, f1[: cfg.stream.clip_frames], t1[: cfg.stream.clip_frames])
    ours_eng.answer(ours_stream, [reqs[by_type[t][0]] for t in types])
    ours_stream.reset()

    def ours(_r):
        ours_stream.reset()
        t0 = pc()
        ours_eng.ingest(ours_stream, f1, t1)
        ours_eng.flush(ours_stream)
        res = {"pass_s": pc() - t0, "heads_s": {}}
        for t in types:
            rs = [reqs[i] for i in by_type[t]]
            t0 = pc()
            ours_eng.answer(ours_stream, rs)
            res["heads_s"][t] = pc() - t0
        return res

    def baseline(r):
        out = []
        for i in chunks[r]:
            tt, ff = window_frames(qs[i])
            t0 = pc()
            base_stream.reset()
            base_eng.ingest(base_stream, ff, tt)
            base_eng.flush(base_stream)
            base_eng.answer(base_stream, [reqs[i]])
            out.append((i, pc() - t0))
        return out

    res = alternate({"ours": ours, "baseline": baseline}, rounds)
    ours_eng.close()
    base_eng.close()
    base = [x for blk in res["baseline"] for x in blk]
    cost = {i: dt for i, dt in base}
    pass_s = [r["pass_s"] for r in res["ours"]]

    detail: dict = {"video_s": D, "queries": len(qs), "queries_per_type": {t: len(v) for t, v in by_type.items()},
                    "rounds": rounds, "bundle": binfo.get("path"),
                    "our_path": "one pass over the stream at the model's fps into the m-token memory "
                                "(backbone + sampler + SVD, Engine.ingest + flush), then all queries of a type "
                                "through the heads in batches of 64 (Engine.answer; object crops through the "
                                "backbone). The full pass is charged to every query type.",
                    "baseline": "per query: fresh memory (StreamState.reset), the backbone over every frame of the "
                                "query's window at the query type's fps (object 5 fps, activity/time 1 fps), the "
                                "sampler streaming those frames (Engine.ingest + flush), then the heads for that "
                                "query (Engine.answer). Same ONNX graphs, same engine code.",
                    "extrapolation": "the baseline is timed on a random subset of queries per type (spread over "
                                     "the window lengths) and extrapolated: (seconds per window frame on the subset) "
                                     "x (window frames of all queries of the type); spread by bootstrap over the "
                                     "subset and over our-path rounds.",
                    "pass_s": stats(pass_s), "frames_in_pass": int(len(t1)),
                    "frames_rendered_outside_timing": True, "per_type": {}}
    boot = np.random.default_rng(0)
    total_base_all, total_ours_all = 0.0, float(np.median(pass_s))
    for t in types:
        sub = [i for i in subset if qs[i].type == t and i in cost]
        heads = [r["heads_s"][t] for r in res["ours"]]
        ours_t = [p + h for p, h in zip(pass_s, heads)]
        d = {"queries": len(by_type[t]), "subset": len(sub), "heads_s": stats(heads),
             "heads_ms_per_query": stats([h / len(by_type[t]) * 1e3 for h in heads]),
             "ours_s": stats(ours_t)}
        if sub:
            c = np.array([cost[i] for i in sub])
            nf = n_frames[sub].astype(float)
            all_nf = float(n_frames[by_type[t]].sum())
            rate = c.sum() / max(nf.sum(), 1.0)
            total = rate * all_nf
            naive = float(c.mean()) * len(by_type[t])
            speed = total / float(np.median(ours_t))
            bs = []
            for _ in range(2000):
                j = boot.integers(0, len(sub), len(sub))
                rb = c[j].sum() / max(nf[j].sum(), 1.0) * all_nf
                bs.append(rb / ours_t[boot.integers(0, len(ours_t))])
            d.update({"baseline_s_per_query": stats(c), "baseline_frames_per_query": stats(nf),
                      "baseline_ms_per_frame": stats(c / np.maximum(nf, 1) * 1e3),
                      "baseline_total_s_extrapolated": round(total, 1),
                      "baseline_total_s_naive_mean_x_n": round(naive, 1),
                      "window_frames_all_queries": int(all_nf), "speedup": round(speed, 2),
                      "speedup_naive": round(naive / float(np.median(ours_t)), 2)})
            total_base_all += total
            total_ours_all += float(np.median(heads))
            sp = {**stats(bs), "n": len(sub)}
            goal = {"activity": 100.0, "object": 200.0}.get(t)
            ctx.fig(f"P1.{t}_speedup", value=speed, unit="x", spread=sp, goal=(">=", goal) if goal else None,
                    note=f"{len(by_type[t])} {t} queries on a {D / 60:g}-min video; baseline timed on {len(sub)} "
                         f"of them and extrapolated (p10/p90: bootstrap)")
        detail["per_type"][t] = d
    if total_base_all:
        ctx.fig("P1.all_queries_speedup", value=total_base_all / total_ours_all, unit="x",
                note="all query types together: one pass + heads for every query vs the baseline for every query")
    detail["subset"] = [{"qid": qs[i].qid, "type": qs[i].type, "window": qs[i].window,
                         "frames": int(n_frames[i]), "s": round(cost[i], 3)} for i in subset if i in cost]
    ctx.drop_frames()
    return detail


# ----------------------------------------------------------------------------------------------
# P2

class TorchStream:
    """The Engine's streaming loop in PyTorch eager on the modules the ONNX graphs were exported
    from: backbone in batches, the sampler once per clip of T frames, the same numpy OnlineSVD on the
    host, and a host copy of the memory at each commit (as the Engine publishes)."""

    def __init__(self, net, device: str = "cpu", autocast_dtype=None) -> None:
        import torch

        from edge_runtime.memory.svd import svd_from_config

        self.torch, self.net, self.device, self.ac = torch, net.to(device).eval(), device, autocast_dtype
        c = net.cfg
        self.T, self.P, self.d = c.stream.clip_frames, c.backbone.tokens_per_frame, c.backbone.dim
        self.batch = max(self.T, 16)
        self.svd = svd_from_config(c)
        self.reset()

    def reset(self) -> None:
        self.mem = tuple(x.to(self.device) for x in self.net.empty_carry(1))
        self.svd.reset()
        self.pend, self.pend_t = [], []
        self.committed = None

    def _ctx(self):
        import contextlib

        if self.ac is None:
            return contextlib.nullcontext()
        return self.torch.autocast(device_type=self.device.split(":")[0], dtype=self.ac)

    def ingest(self, frames: np.ndarray, times: np.ndarray) -> None:
        torch = self.torch
        with torch.inference_mode(), self._ctx():
            for i in range(0, len(frames), self.batch):
                tok = self.net.backbone(torch.from_numpy(np.ascontiguousarray(frames[i : i + self.batch])).to(self.device))
                for j in range(tok.shape[0]):
                    self.pend.append(tok[j])
                    self.pend_t.append(float(times[i + j]))
                    if len(self.pend) == self.T:
                        self._commit()

    def _commit(self) -> None:
        torch = self.torch
        tok = torch.stack(self.pend).float()
        tt = torch.tensor(self.pend_t, dtype=torch.float32, device=self.device)[None]
        ct, cp = self.net.clip_coords(tt)
        self.mem = self.net.sampler(*self.mem, tok.reshape(1, -1, self.d), ct, cp.to(self.device))
        self.svd.update(tok.mean(dim=1).double().cpu().numpy())
        self.committed = [m.float().cpu().numpy() if m.is_floating_point() else m.cpu().numpy() for m in self.mem[:4]]
        self.pend, self.pend_t = [], []


def p2(ctx: Ctx) -> dict:
    import torch

    torch.set_num_threads(ctx.threads)
    rounds = 2 if ctx.quick else 6
    detail: dict = {"rounds": rounds, "threads": ctx.threads, "configs": {},
                    "what": "frames (pre-rendered, generator decode not timed) -> backbone -> sampler per clip -> "
                            "online SVD -> commit, steady state (memory full); real-time factor = video seconds "
                            "(frames / fps) per wall second"}
    goals = {"lvm-tiny": 30.0, "lvm-edge": 5.0}
    for name in ("lvm-tiny", "lvm-edge"):
        cfg = ctx.cfg(name)
        T, fps, S = cfg.stream.clip_frames, cfg.stream.fps, cfg.backbone.image_size
        clips = 1 if (ctx.quick and T >= 32) else max(1, math.ceil(64 / T))
        nf = clips * T
        ctx.log(f"  P2 {name}: blocks of {nf} frames ({clips} clips), {rounds} rounds per backend")
        t0 = pc()
        times, frames = ctx.frames(P2_SEED, float(nf) / fps, S, fps)
        render_fps = nf / max(pc() - t0, 1e-9)
        ort_eng = ctx.engine(name)
        ort_stream = ort_eng.new_stream()
        _, ck = ctx.checkpoint(name)
        tstream = TorchStream(ctx.load_net(name))
        state = {"ort": 0.0, "torch": 0.0}

        def block(which):
            def run(_r):
                off = state[which]
                t0 = pc()
                if which == "ort":
                    ort_eng.ingest(ort_stream, frames, times + off)
                else:
                    tstream.ingest(frames, times + off)
                dt = pc() - t0
                state[which] = off + nf / fps
                return (nf / fps) / dt
            return run

        # warm-up block each (also fills the memory: steady state)
        for w in ("ort", "torch"):
            for _ in range(1 if ctx.quick else 2):
                block(w)(0)
        res = alternate({"onnxruntime": block("ort"), "torch": block("torch")}, rounds)
        ort_eng.close()
        ctx.drop_frames()
        d = {"frames_per_block": nf, "clips_per_block": clips, "image_size": S, "weights": ck["weights"],
             "rtf_onnxruntime": stats(res["onnxruntime"]), "rtf_torch": stats(res["torch"]),
             "generator_render_fps": round(render_fps, 1)}
        detail["configs"][name] = d
        ctx.fig(f"P2.{name}.onnxruntime_rtf", value=float(np.median(res["onnxruntime"])), unit="x real time",
                samples=res["onnxruntime"], goal=(">=", goals[name]),
                note="ONNX Runtime CPU, the device runtime (Engine.ingest: also the reader and timeline at each commit)")
        ctx.fig(f"P2.{name}.torch_rtf", value=float(np.median(res["torch"])), unit="x real time",
                samples=res["torch"], note="PyTorch eager, same weights: backbone, sampler and SVD only")
        ctx.fig(f"P2.{name}.ort_vs_torch", value=float(np.median(res["onnxruntime"]) / np.median(res["torch"])),
                unit="x", spread=ratio_spread(res["onnxruntime"], res["torch"]),
                note="paired rounds")
    return detail


# ----------------------------------------------------------------------------------------------
# GPU streaming, every model, FP16 autocast and FP32: runs only where torch.cuda.is_available()

def accel_stream_rate(net, device: str, dtype, clips: int, warmup: int = 1) -> dict:
    """Streaming real-time factor of TorchStream on ``device`` with autocast ``dtype``."""
    import torch

    cfg = net.cfg
    T, fps, S = cfg.stream.clip_frames, cfg.stream.fps, cfg.backbone.image_size
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (T, S, S, 3), dtype=np.uint8)
    times = np.arange(T, dtype=np.float64) / fps
    st = TorchStream(net, device=device, autocast_dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    off = 0.0
    for _ in range(warmup):
        st.ingest(frames, times + off)
        off += T / fps
    sync()
    rates = []
    for _ in range(clips):
        t0 = pc()
        st.ingest(frames, times + off)
        sync()
        rates.append((T / fps) / (pc() - t0))
        off += T / fps
    return {"rtf": stats(rates), "clips": clips, "frames_per_clip": T,
            "dtype": "torch.float32" if dtype is None else str(dtype), "device": device}


GPU_MODELS = ("lvm-tiny", "lvm-edge", "lvm-paper")


def gpu(ctx: Ctx) -> dict:
    """Streaming rate of each model on the GPU with PyTorch (random weights: speed only), FP16 autocast
    and FP32: what a desktop-GPU kiosk can stream, beside the CPU's ONNX Runtime figures of P2."""
    import torch

    if not torch.cuda.is_available():
        ctx.fig("GPU.lvm-paper.fp16_rtf", value="skipped", unit="x real time",
                note="no CUDA device here (torch.cuda.is_available() is False)")
        return {"skipped": "torch.cuda.is_available() is False on this host",
                "would_run": "lvm-tiny, lvm-edge and lvm-paper (Swin-V2-S, T=120, m=5880), random weights, PyTorch "
                             "CUDA with fp16 autocast and fp32: backbone over each clip, sampler per clip, online SVD "
                             "on the host"}
    from export.model.lvmnet import LVMNet

    name = torch.cuda.get_device_name(0)
    out = {"gpu": name, "models": {}}
    for model in GPU_MODELS:
        torch.manual_seed(0)
        net = LVMNet(ctx.cfg(model)).eval()
        row = {}
        for label, dtype, how in (("fp16", torch.float16, "fp16 autocast"), ("fp32", None, "fp32")):
            r = accel_stream_rate(net, "cuda", dtype, clips=2 if ctx.quick else 10)
            row[label] = r
            ctx.fig(f"GPU.{model}.{label}_rtf", value=r["rtf"]["median"], unit="x real time", spread=r["rtf"],
                    note=f"PyTorch CUDA {how} on {name}, random weights")
        out["models"][model] = row
        del net
        torch.cuda.empty_cache()
    return out
