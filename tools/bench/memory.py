"""P3 (query latency from memory while streaming, after 1 minute and after 10 hours) and P4 (RSS and
state bytes over a 10-hour accelerated stream). One accelerated stream serves both: the engine is
fast-forwarded with real backbone tokens (a pool of generator frames encoded once, cycled) through
Engine.ingest_tokens — the sampler, the online SVD and every commit run as in a live stream, only the
backbone is skipped — with a few queries answered every 10 stream minutes and RSS read every hour."""
from __future__ import annotations

import gc
import threading
import time

import numpy as np

from tools.bench.common import SEED_BASE, Ctx, alternate, pc, rss_bytes, stats

P3_SEED = SEED_BASE + 3
HOUR = 3600.0


def _requests(ctx: Ctx, now: float, window_s: float, crops: list[np.ndarray], n: int, C: int) -> list[dict]:
    """n requests over [now - window_s, now] (the same shape at any stream position; before the
    stream is window_s long the window starts before 0), cycling activity / object / time."""
    out = []
    for i in range(n):
        t = ("activity", "object", "time")[i % 3]
        out.append({"type": t, "start": now - window_s, "end": now, "activity": None if t == "activity" else i % C,
                    "object_image": None if t == "object" else crops[i % len(crops)], "k": 3})
    return out


class _Pool:
    """Real backbone tokens, cycled, with stream times continuing from wherever the stream is."""

    def __init__(self, tokens: np.ndarray, fps: float) -> None:
        self.tokens, self.fps, self.i = tokens, fps, 0

    def feed(self, eng, stream, n: int) -> None:
        idx = (self.i + np.arange(n)) % len(self.tokens)
        self.i = int((self.i + n) % len(self.tokens))
        t0 = (stream.last_time + 1.0 / self.fps) if stream.last_time is not None else 0.0
        eng.ingest_tokens(stream, self.tokens[idx], t0 + np.arange(n) / self.fps)


class _PacedFeeder(threading.Thread):
    """A live camera: one real frame per 1/fps wall seconds into each (engine, stream) (backbone included)."""

    def __init__(self, streams, frames: np.ndarray, fps: float) -> None:
        super().__init__(daemon=True)
        self.streams, self.frames, self.fps = streams, frames, fps
        self.stop_ev = threading.Event()
        self.fed = 0
        self.busy_s = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        nxt = time.monotonic()
        try:
            while not self.stop_ev.is_set():
                f = self.frames[self.fed % len(self.frames)][None]
                t0 = pc()
                for e, st in self.streams:
                    e.ingest(st, f, np.array([st.last_time + 1.0 / self.fps if st.last_time is not None else 0.0]))
                self.busy_s += pc() - t0
                self.fed += 1
                nxt += 1.0 / self.fps
                self.stop_ev.wait(max(0.0, nxt - time.monotonic()))
        except BaseException as err:  # noqa: BLE001 - reported by the caller
            self.error = err

    def stop(self) -> None:
        self.stop_ev.set()
        self.join(timeout=30)
        if self.error is not None:
            raise RuntimeError(f"paced intake failed: {self.error}")


def p3_p4(ctx: Ctx, want: set[str]) -> dict:
    from edge_runtime.checkout import CheckoutVideo

    cfg = ctx.cfg("lvm-tiny")
    T, P, d, m = cfg.stream.clip_frames, cfg.backbone.tokens_per_frame, cfg.backbone.dim, cfg.stream.memory_tokens
    S, fps, C = cfg.backbone.image_size, cfg.stream.fps, cfg.heads.num_activities
    quick = ctx.quick
    stream_end = 120.0 if quick else 10 * HOUR           # "10 hours" (quick: 2 minutes)
    mark = stream_end / 10                               # RSS marks: every "hour"
    q_every = 10.0 if quick else 600.0                   # a few queries every 10 stream minutes
    pool_s = 64.0 if quick else 600.0
    _, binfo = ctx.bundle("lvm-tiny", "fp32")

    times, frames = ctx.frames(P3_SEED, pool_s, S, fps)
    enc = ctx.engine("lvm-tiny")
    pool_tok = enc.encode(frames)
    enc.close()
    video = CheckoutVideo(seed=P3_SEED, duration_s=pool_s, size=S)
    ids = [inst["instance_id"] for inst in video.annotations()["instances"]][:6] or [None]
    crops = [video.object_crop(i, size=S) if i is not None else frames[0] for i in ids]
    live_frames = frames[: min(len(frames), 64)].copy()
    ctx.drop_frames()

    gc.collect()
    eng_b = ctx.engine("lvm-tiny")
    st_b = eng_b.new_stream()
    pool = _Pool(pool_tok, fps)
    chunk = T * 8
    series = []                                   # (stream s, rss, memory_bytes, committed mem bytes)
    checked_q = 0

    def sample():
        series.append({"stream_s": round(st_b.last_time or 0.0, 1), "rss_bytes": rss_bytes(),
                       "memory_bytes": st_b.memory_bytes, "state_bytes": int(st_b.memory.read()["mem"].nbytes),
                       "wall_s": round(pc() - t_start, 2)})

    ctx.log(f"  P3/P4: fast-forwarding one engine to {stream_end / HOUR:g} h of stream "
            f"({int(stream_end * fps)} frames, {int(stream_end * fps) // T} sampler calls) ...")
    t_start = pc()
    sample()
    next_mark, next_q = mark, q_every
    while (st_b.last_time or -1.0) + 1.0 / fps < stream_end - 1e-9:
        nxt_t = (st_b.last_time or -1.0) + 1.0 / fps      # time of the next frame
        stop_at = min(stream_end, next_mark, next_q)      # land exactly on the next mark
        pool.feed(eng_b, st_b, max(1, min(chunk, int(round((stop_at - nxt_t) * fps)))))
        now = st_b.last_time
        if now + 1.0 / fps >= next_q - 1e-9:
            eng_b.answer(st_b, _requests(ctx, now, min(300.0, now), crops, 3, C))
            checked_q += 3
            next_q += q_every
        if now + 1.0 / fps >= next_mark - 1e-9:
            gc.collect()
            sample()
            next_mark += mark
    ff_wall = pc() - t_start
    detail: dict = {"bundle": binfo.get("path"), "stream_end_s": stream_end, "fast_forward_wall_s": round(ff_wall, 1),
                    "fast_forward_rtf": round(stream_end / ff_wall, 1), "queries_during_fast_forward": checked_q,
                    "token_pool_s": pool_s, "rss_series": series,
                    "how": "Engine.ingest_tokens with real backbone tokens of a generator video (cycled); the "
                           "sampler, SVD and commits run for every clip; 3 queries every 10 stream minutes"}

    if "P4" in want:
        h1 = series[1] if len(series) > 1 else series[0]
        h10 = series[-1]
        growth = (h10["rss_bytes"] - h1["rss_bytes"]) / h1["rss_bytes"] * 100
        rss_after = [s["rss_bytes"] for s in series[1:]]
        expect = m * d * 4
        state = [s["state_bytes"] for s in series]
        membytes = [s["memory_bytes"] for s in series[1:]]
        detail["p4"] = {"rss_hour1_bytes": h1["rss_bytes"], "rss_hour10_bytes": h10["rss_bytes"],
                        "rss_max_after_hour1_bytes": max(rss_after),
                        "state_bytes_expected": expect, "state_bytes_formula": f"m*d*4 = {m}*{d}*4",
                        "state_bytes_equal": all(s == expect for s in state),
                        "engine_memory_bytes": membytes[-1] if membytes else None,
                        "engine_memory_bytes_constant": len(set(membytes)) <= 1,
                        "engine_memory_bytes_is": "StreamState.memory_bytes: both ping-pong memory sets + clip "
                                                  "buffers, the committed host copy, SVD state, pending clip, gaps"}
        unit = "h" if not quick else "x 12 s"
        ctx.fig("P4.rss_growth_pct", value=growth, unit="%",
                spread={"min": min(rss_after) / h1["rss_bytes"] * 100 - 100,
                        "max": max(rss_after) / h1["rss_bytes"] * 100 - 100, "n": len(rss_after)},
                goal=("<=", 2.0),
                note=f"RSS of the whole benchmark process, 'hour' 1 -> 10 ({unit}); min/max: other marks vs hour 1")
        ctx.fig("P4.state_bytes", value=state[-1], unit="bytes", goal=("==", float(expect)),
                note=f"committed memory tokens (1, m={m}, d={d}) float32 = m*d*4; equal at every mark: "
                     f"{all(s == expect for s in state)}")
        ctx.fig("P4.engine_memory_bytes", value=membytes[-1] if membytes else None, unit="bytes",
                note=f"all state of the stream (StreamState.memory_bytes); constant over the stream: {len(set(membytes)) <= 1}")

    if "P3" in want:
        eng_a = ctx.engine("lvm-tiny")
        st_a = eng_a.new_stream()
        pool.feed(eng_a, st_a, int(60 * fps))            # "after 1 minute"
        W = 60.0
        rounds, per_block = (2, 9) if quick else (10, 30)
        for e, st in ((eng_a, st_a), (eng_b, st_b)):     # warm-up
            e.answer(st, _requests(ctx, st.committed.end, W, crops, 3, C))
        feeder = _PacedFeeder([(eng_a, st_a), (eng_b, st_b)], live_frames, fps)
        lat: dict[str, list[list[float]]] = {"1min": [], "10h": []}
        feeder.start()
        try:
            def block(e, st, key):
                def run(_r):
                    ts = []
                    for req in _requests(ctx, st.committed.end, W, crops, per_block, C):
                        t0 = pc()
                        e.answer(st, [req])
                        ts.append((pc() - t0) * 1e3)
                    lat[key].append(ts)
                    return float(np.median(ts))
                return run

            med = alternate({"1min": block(eng_a, st_a, "1min"), "10h": block(eng_b, st_b, "10h")}, rounds)
            # 10 h with the ReST window lengths (5 / 15 / 30 min), for information
            rest = []
            for W2 in (300.0, 900.0, 1800.0):
                for req in _requests(ctx, st_b.committed.end, W2, crops, 6 if quick else 30, C):
                    t0 = pc()
                    eng_b.answer(st_b, [req])
                    rest.append((pc() - t0) * 1e3)
        finally:
            feeder.stop()
        diag = _heads_diag(ctx, (eng_a, st_a), (eng_b, st_b), crops[0], W)
        a = np.concatenate(lat["1min"])
        b = np.concatenate(lat["10h"])

        def pct(x, q):
            return float(np.percentile(x, q))

        boot = np.random.default_rng(0)
        p99_b = [pct(b[boot.integers(0, len(b), len(b))], 99) for _ in range(500)]
        ratio = pct(b, 50) / pct(a, 50)
        detail["p3"] = {"window_s": W, "queries_per_engine": int(len(a)), "rounds": rounds,
                        "request": "one query per Engine.answer call, types cycled; activity/time queries carry an "
                                   "object crop image (encoded by the backbone inside the call); window = the last "
                                   "60 s of stream for both engines so that only the stream length differs",
                        "streaming": f"a paced intake thread fed one real frame per {1 / fps:g} s (backbone + sampler "
                                     f"+ SVD) into both engines during the measurement; {feeder.fed} frames fed, "
                                     f"intake busy {feeder.busy_s:.1f} s",
                        "ms_1min": stats(a), "ms_10h": stats(b),
                        "p99_ms_1min": round(pct(a, 99), 2), "p99_ms_10h": round(pct(b, 99), 2),
                        "ms_10h_rest_windows": stats(rest), "p99_ms_10h_rest_windows": round(pct(rest, 99), 2),
                        "engine_a_stream_s": st_a.last_time, "engine_b_stream_s": st_b.last_time,
                        "diagnostic_heads_only": diag}
        ctx.fig("P3.diag_heads_ratio_10h_vs_1min", value=diag["ratio_default"], unit="x",
                spread=diag["ratio_default_rounds"],
                note=f"heads graph alone, one activity query, 60-s window, no intake running; memory tokens inside "
                     f"the window: {diag['in_window_frac']['1min']:.0%} at 1 min vs {diag['in_window_frac']['10h']:.0%} "
                     "at the long stream (the rest are masked by the -1e4 key bias)")
        ctx.fig("P3.diag_heads_ratio_10h_vs_1min_denormals_as_zero", value=diag["ratio_daz"], unit="x",
                spread=diag["ratio_daz_rounds"],
                note="same, with ONNX Runtime session option session.set_denormal_as_zero=1 (what the Engine uses; "
                     "the other ratio runs without it): if this ratio is near 1 while the other is not, denormals "
                     "cause the slowdown")
        ctx.fig("P3.p50_ms", value=pct(b, 50), unit="ms", spread=stats(med["10h"]), goal=("<=", 10.0),
                note=f"after {stream_end / HOUR:g} h of stream{' (quick: 2 min)' if quick else ''}, while streaming; "
                     "p10/p90: per-block medians")
        ctx.fig("P3.p99_ms", value=pct(b, 99), unit="ms", spread=stats(p99_b), goal=("<=", 50.0),
                note="same queries; p10/p90: bootstrap")
        ctx.fig("P3.p50_ms_1min", value=pct(a, 50), unit="ms", spread=stats(med["1min"]))
        ctx.fig("P3.p99_ms_1min", value=pct(a, 99), unit="ms")
        ctx.fig("P3.latency_ratio_10h_vs_1min", value=ratio, unit="x",
                spread=stats([x / y for x, y in zip(med["10h"], med["1min"])]), goal=("<=", 1.2),
                note="p50 after the long stream / p50 after 1 minute; p10/p90 over paired blocks")
        ctx.fig("P3.p50_ms_10h_rest_windows", value=pct(rest, 50), unit="ms", samples=rest,
                note="5/15/30-minute windows at the end of the long stream")
        eng_a.close()
    eng_b.close()
    return detail


def _heads_diag(ctx: Ctx, a, b, crop: np.ndarray, W: float) -> dict:
    """The heads graph alone on the committed state of two (engine, stream) pairs, in the runtime's session with and
    without denormals flushed to zero, A/B alternated: is the long-stream slowdown the graph's?"""
    from edge_runtime.backends.onnxruntime import create_session
    from edge_runtime.memory.token_memory import MEMORY_INPUTS
    from edge_runtime.query.answers import encode_queries

    eng_a = a[0]
    cfg = eng_a.cfg
    tok = eng_a.encode_images([crop])[0]

    def feed(pair):
        e, st = pair
        c = st.committed
        hb = encode_queries(["activity"], [(c.end - W, c.end)], [None], [tok], fps=cfg.stream.fps,
                            max_queries=cfg.heads.window_queries, tokens_shape=(e.tokens_per_frame, e.token_dim))
        # the device memory holds what was committed (a reader engine's commit keeps no copy of the tokens)
        mem = st.memory.read()
        f = {**hb.as_feed(), **{k: mem[k] for k in MEMORY_INPUTS}, "svd_basis": c.svd_basis, "svd_sv": c.svd_sv}
        inw = (c.memory["mem_t"] >= c.end - W - 0.5) & (c.memory["mem_t"] <= c.end + 0.5)
        frac = float((inw * c.memory["mem_valid"]).sum() / max(c.memory["mem_valid"].sum(), 1.0))
        return f, frac

    def sess(daz: bool):
        return create_session(eng_a.bundle.graphs["heads"].onnx, threads=ctx.threads, flush_denormals=daz)[0]

    (fa, in_a), (fb, in_b) = feed(a), feed(b)
    sessions = {"default": sess(False), "daz": sess(True)}
    calls, rounds = (4, 2) if ctx.quick else (12, 6)
    for sn in sessions.values():
        sn.run(None, fa), sn.run(None, fb)

    def block(sname, f):
        def run(_r):
            ts = []
            for _ in range(calls):
                t0 = pc()
                sessions[sname].run(None, f)
                ts.append((pc() - t0) * 1e3)
            return float(np.median(ts))
        return run

    res = alternate({"default_1min": block("default", fa), "default_10h": block("default", fb),
                     "daz_1min": block("daz", fa), "daz_10h": block("daz", fb)}, rounds)
    med = {k: float(np.median(v)) for k, v in res.items()}
    return {"ms": {k: stats(v) for k, v in res.items()}, "in_window_frac": {"1min": in_a, "10h": in_b},
            "ratio_default": med["default_10h"] / med["default_1min"], "ratio_daz": med["daz_10h"] / med["daz_1min"],
            "ratio_default_rounds": stats([x / y for x, y in zip(res["default_10h"], res["default_1min"])]),
            "ratio_daz_rounds": stats([x / y for x, y in zip(res["daz_10h"], res["daz_1min"])])}
