"""P5: the online SVD (edge_runtime.memory.svd.OnlineSVD, MeMSVD's incremental update) — incremental update
per clip vs a full recompute over a 61-clip window (the window MeMSVD recomputes over), vs
scikit-learn IncrementalPCA.partial_fit at the same rank, and accuracy against the offline SVD of
the same window.

Rows are what the device feeds the SVD: per clip, the T per-frame mean tokens (T x d) from the
lvm-tiny backbone (ONNX Runtime) over a generator video."""
from __future__ import annotations

import copy
import warnings

import numpy as np

from tools.bench.common import SEED_BASE, Ctx, alternate, pc, stats

P5_SEED = SEED_BASE + 5


def _top(xc: np.ndarray, r: int) -> np.ndarray:
    """Top-r right singular vectors of centred rows -> (d, r) orthonormal columns."""
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    return vt[:r].T


def _angles_deg(u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    s = np.linalg.svd(u1.T @ u2, compute_uv=False)
    return np.degrees(np.arccos(np.clip(s, 0.0, 1.0)))


def _resid(xc: np.ndarray, u: np.ndarray) -> float:
    return float(np.sum((xc - (xc @ u) @ u.T) ** 2))


def _orth(u: np.ndarray) -> np.ndarray:
    q, _ = np.linalg.qr(u)
    return q


def p5(ctx: Ctx) -> dict:
    from sklearn.decomposition import IncrementalPCA
    from sklearn.utils.extmath import randomized_svd

    from edge_runtime.memory.svd import svd_from_config

    cfg = ctx.cfg("lvm-tiny")
    T, d, fps, S = cfg.stream.clip_frames, cfg.backbone.dim, cfg.stream.fps, cfg.backbone.image_size
    r, f = cfg.svd.n_components, cfg.svd.forgetting
    W = 16 if ctx.quick else 61
    K = 4 if ctx.quick else 24
    rounds = 2 if ctx.quick else 5
    n_clips = W + K
    times, frames = ctx.frames(P5_SEED, float(n_clips * T) / fps, S, fps)
    eng = ctx.engine("lvm-tiny")
    rows = eng.encode(frames).mean(axis=1).astype(np.float64)   # (n_clips*T, d): what Engine feeds the SVD
    eng.close()
    ctx.drop_frames()
    clips = rows.reshape(n_clips, T, d)

    def new_svd(forget):
        return svd_from_config(cfg, forgetting=forget)

    pre = new_svd(f)
    for c in clips[:W]:
        pre.update(c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ipca_pre = IncrementalPCA(n_components=r)
        for c in clips[:W]:
            ipca_pre.partial_fit(c)

    def incremental(_r):
        s = copy.deepcopy(pre)
        ts = []
        for c in clips[W:]:
            t0 = pc()
            s.update(c)
            ts.append(pc() - t0)
        return ts

    def recompute(_r):
        ts = []
        for i in range(1, K + 1):
            x = clips[i : i + W].reshape(-1, d)
            t0 = pc()
            _top(x - x.mean(axis=0), r)
            ts.append(pc() - t0)
        return ts

    def randomized(_r):
        ts = []
        for i in range(1, K + 1):
            x = clips[i : i + W].reshape(-1, d)
            t0 = pc()
            randomized_svd(x - x.mean(axis=0), r, random_state=0)
            ts.append(pc() - t0)
        return ts

    def ipca(_r):
        p = copy.deepcopy(ipca_pre)
        ts = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for c in clips[W:]:
                t0 = pc()
                p.partial_fit(c)
                ts.append(pc() - t0)
        return ts

    res = alternate({"incremental": incremental, "recompute": recompute, "randomized": randomized, "ipca": ipca},
                    rounds)
    ms = {k: np.concatenate(v) * 1e3 for k, v in res.items()}
    blk = {k: [float(np.median(b)) for b in v] for k, v in res.items()}
    speed = float(np.median(ms["recompute"]) / np.median(ms["incremental"]))

    # accuracy on the last window (W clips): offline SVD vs online (fresh, f=1, same clips) vs IPCA
    xw = clips[K:].reshape(-1, d)
    xc = xw - xw.mean(axis=0)
    u_off = _top(xc, r)
    e_off = _resid(xc, u_off)
    on1 = new_svd(1.0)
    for c in clips[K:]:
        on1.update(c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ip = IncrementalPCA(n_components=r)
        for c in clips[K:]:
            ip.partial_fit(c)
    methods = {"online_f1": _orth(on1.basis.T), "ipca": _orth(ip.components_.T)}
    acc = {}
    for name, u in methods.items():
        a = _angles_deg(u_off, u)
        acc[name] = {"max_angle_deg": round(float(a.max()), 3), "mean_angle_deg": round(float(a.mean()), 3),
                     "residual_ratio": round(_resid(xc, u) / e_off, 6), "rank": int(u.shape[1])}
    # the engine's setting (forgetting f) streaming the whole video, against the offline SVD of the
    # latest W clips at every slide position (a different objective: exponential vs box window)
    onf = new_svd(f)
    for c in clips[:W]:
        onf.update(c)
    ratios_f = []
    for i in range(1, K + 1):
        onf.update(clips[W + i - 1])
        x = clips[i : i + W].reshape(-1, d)
        xci = x - x.mean(axis=0)
        ratios_f.append(_resid(xci, _orth(onf.basis.T)) / _resid(xci, _top(xci, r)))
    acc["online_f_engine"] = {"forgetting": f, "residual_ratio_vs_window": stats(ratios_f)}

    spread = stats([a / b for a, b in zip(blk["recompute"], blk["incremental"])])
    ctx.fig("P5.update_vs_recompute_speedup", value=speed, unit="x", spread=spread, goal=(">=", 20.0),
            note=f"OnlineSVD.update of one clip ({T} rows x d={d}, rank {r}) vs np.linalg.svd of the {W}-clip "
                 f"window ({W * T} x {d}); p10/p90 over rounds")
    ctx.fig("P5.update_ms", value=float(np.median(ms["incremental"])), unit="ms", samples=ms["incremental"])
    ctx.fig("P5.recompute_ms", value=float(np.median(ms["recompute"])), unit="ms", samples=ms["recompute"])
    ctx.fig("P5.randomized_recompute_ms", value=float(np.median(ms["randomized"])), unit="ms",
            samples=ms["randomized"], note=f"sklearn randomized_svd at rank {r} over the window")
    ctx.fig("P5.ipca_partial_fit_ms", value=float(np.median(ms["ipca"])), unit="ms", samples=ms["ipca"],
            note=f"sklearn IncrementalPCA(n_components={r}).partial_fit of one clip")
    ctx.fig("P5.update_vs_ipca_speedup", value=float(np.median(ms["ipca"]) / np.median(ms["incremental"])), unit="x",
            spread=stats([a / b for a, b in zip(blk["ipca"], blk["incremental"])]))
    ctx.fig("P5.online_residual_ratio", value=acc["online_f1"]["residual_ratio"], unit="x offline",
            note=f"||X - X U U^T||^2 over the optimum (offline rank-{r} SVD), last {W}-clip window; online with "
                 "f=1 over the same clips; 1 = as good as offline")
    ctx.fig("P5.online_max_angle_deg", value=acc["online_f1"]["max_angle_deg"], unit="deg",
            note="largest principal angle between the online and offline rank-r subspaces")
    ctx.fig("P5.ipca_residual_ratio", value=acc["ipca"]["residual_ratio"], unit="x offline")
    ctx.fig("P5.online_f_residual_ratio_vs_window", value=acc["online_f_engine"]["residual_ratio_vs_window"]["median"],
            unit="x offline", spread=acc["online_f_engine"]["residual_ratio_vs_window"],
            note=f"engine setting f={f} streaming, vs offline SVD of the latest {W} clips at each of {K} positions")
    return {"window_clips": W, "rows_per_clip": T, "dim": d, "rank": r, "slides": K, "rounds": rounds,
            "ms": {k: stats(v) for k, v in ms.items()}, "accuracy": acc,
            "residual_ratio_f_series": [round(x, 6) for x in ratios_f],
            "rows": "per-frame mean backbone tokens (what the Engine feeds OnlineSVD), lvm-tiny backbone"}
