"""P8: many camera streams on one box — one ``Streams`` hub, one engine set, each stream its own memory.

1. Streams sustained in real time (per model). N streams, each a file source paced at the model's fps
   (``realtime=True``), in ONE in-process ``Streams`` hub, for N over a list of levels, stopping at the
   first level that fails. Stream i's clock starts when ``hub.add`` is called for it (a little before
   its first frame is released, so the delays below are over-, never under-estimated): frame k
   (0-based) is *due* at origin_i + k / fps. The intake hands frames over in batches of B
   (``batch_frames``, default one clip); a batch is *in memory* when the stream's
   ``stream.frames_processed`` covers its last frame (polled every 0.1 s). Its *commit delay* is
   that moment minus the due time of its last frame. A level PASSES when, for every stream:
     - no frame due was dropped (sum of ``Runtime.status()['dropped']`` == 0; file sources never
       drop — a slow consumer makes them lag instead — so the real test is the next one),
     - every batch after the first ``warm_batches`` (session warm-up) was in memory within one batch
       period (B / fps) of being due, i.e. before the next batch was due: the backlog (frames due
       minus frames in memory) then stays below 2 B and cannot grow,
     - the commit delay does not grow across the measured batches (last - first <= B / fps / 4),
     - the stream did not fail.
   Meanwhile a client thread issues activity queries (60-s window at the stream's head, with an object
   crop, like P3) round-robin over the streams through ``Runtime.query`` — in-process, not over HTTP —
   at a fixed rate, one at a time; p50 / p99 are over the measured window.
   Frames come from a demo video rendered once to an .mp4 at the model's size and fps and shared by
   all streams (each still decodes its own copy): rendering a demo frame costs about as much CPU as
   the inference of it (measured and recorded), while a camera delivers decoded frames.
2. Batched vs separate, N = 8, unpaced: ``lvm-edge run --api none`` with 8 ``--source`` (one hub,
   --threads = the bench's) vs 8 ``lvm-edge run --api none --threads 1`` processes started together,
   alternated. Each side runs a short (one batch per stream) and a long stream; steady throughput =
   the extra frames of the long run over its extra wall time, so start-up (imports, sessions) cancels.
3. Memory per added stream: streams added one by one to a hub (each streams one batch and ends, its
   state staying in the hub): ``stream.memory_bytes`` per stream and the process RSS slope; then a few
   streams of an unpaced demo for hours of stream time each, RSS read at ten evenly spaced marks.
"""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from tools.bench.common import (
    CACHE,
    REPO,
    SEED_BASE,
    CpuMonitor,
    Ctx,
    alternate,
    pc,
    ratio_spread,
    rss_bytes,
    stats,
)

from edge_runtime.checkout import CheckoutVideo

P8_SEED = SEED_BASE + 800
HOUR = 3600.0
QUERY_RATE = 8.0      # queries per second over all streams: a dashboard polling every camera
QUERY_WINDOW_S = 60.0
# Sized for about 25 minutes on 2 cores: every real-time level runs in wall time (a 60-frame clip of
# lvm-edge is a minute per batch), so levels far below a goal are skipped; the long run is 2 streams
# x 10 stream-hours, unpaced.
FULL = {"levels": {"lvm-tiny": [8, 16, 32, 64, 96, 128, 192, 256], "lvm-edge": [8, 16, 24, 32]},
        "batch_frames": None, "warm_batches": {"lvm-tiny": 1, "lvm-edge": 1},
        "window_batches": {"lvm-tiny": 2, "lvm-edge": 1}, "sep_models": ["lvm-tiny"], "sep_n": 8, "sep_long_batches": 48, "sep_rounds": 3,
        "ramp": {"lvm-tiny": [1, 2, 4, 8, 16, 32, 64], "lvm-edge": [1, 2, 4, 8]},
        "long_streams": 2, "long_s": 10 * HOUR}
# lvm-tiny only: the code paths are the same for every model, and exporting lvm-edge takes minutes
# and most of a 24 GB machine's memory
QUICK = {"levels": {"lvm-tiny": [2]},
         "batch_frames": 4, "warm_batches": {"lvm-tiny": 4},
         "window_batches": {"lvm-tiny": 2}, "sep_models": ["lvm-tiny"], "sep_n": 2, "sep_long_batches": 4, "sep_rounds": 1,
         "ramp": {"lvm-tiny": [1, 2, 3]},
         "long_streams": 2, "long_s": 0.1 * HOUR}
GOAL_STREAMS = {"lvm-tiny": 64, "lvm-edge": 16}


def p8(ctx: Ctx) -> dict:
    plan = QUICK if ctx.quick else FULL
    detail: dict = {"plan": dict(plan), "method": " ".join(__doc__.split("\n", 1)[1].split()),
                    "what": "many streams in one in-process Streams hub (one engine set): the most streams kept in "
                            "real time (1 fps each, every batch in memory within one batch period of being due, "
                            "none dropped) with in-process query p50/p99; one hub vs separate `lvm-edge run` "
                            "processes at N = 8 unpaced; state bytes and RSS per added stream; RSS over "
                            "stream-hours of two streams"}
    detail["render"] = {m: _render_costs(ctx, m) for m in plan["levels"]}
    detail["realtime"] = {m: _realtime(ctx, m, plan) for m in plan["levels"]}
    detail["batched_vs_separate"] = {m: _batched_vs_separate(ctx, m, plan) for m in plan["sep_models"]}
    detail["memory"] = {m: _ramp(ctx, m, plan) for m in plan["ramp"]}
    detail["long_run"] = _long_run(ctx, "lvm-tiny", plan)
    return detail


# ----------------------------------------------------------------------------------------------
# frames

def _video(ctx: Ctx, model: str, seconds: float) -> Path:
    """A demo video rendered once at the model's size and fps to .mp4 (cached in .cache/bench/)."""
    import cv2

    cfg = ctx.cfg(model)
    S, fps = cfg.backbone.image_size, cfg.stream.fps
    path = CACHE / "video" / f"checkout-{P8_SEED}-{S}px-{fps:g}fps-{int(seconds)}s.mp4"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    w = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (S, S))
    if not w.isOpened():
        raise RuntimeError("OpenCV cannot write mp4v here: no video file for P8")
    for _, img in CheckoutVideo(seed=P8_SEED, duration_s=float(seconds), size=S).frames(fps):
        w.write(np.ascontiguousarray(img[:, :, ::-1]))
    w.release()
    os.replace(tmp, path)
    return path


def _render_costs(ctx: Ctx, model: str) -> dict:
    """CPU ms per frame: rendering a demo frame vs decoding the same frame from the .mp4."""
    from edge_runtime.sources import open_source

    cfg = ctx.cfg(model)
    S, fps = cfg.backbone.image_size, cfg.stream.fps
    n = 16 if ctx.quick else 64
    v = CheckoutVideo(seed=P8_SEED + 1, duration_s=float(n) / fps, size=S)
    t0 = time.process_time()
    for t, _ in v.frames(fps):
        pass
    render = (time.process_time() - t0) / n
    path = _video(ctx, model, n / fps)
    t0 = time.process_time()
    with open_source(str(path), target_fps=fps, size=S) as src:
        got = sum(1 for _ in src)
    decode = (time.process_time() - t0) / max(got, 1)
    return {"demo_render_ms_per_frame": round(render * 1e3, 3), "mp4_decode_ms_per_frame": round(decode * 1e3, 3),
            "frames": n, "image_size": S}


# ----------------------------------------------------------------------------------------------
# 1. streams in real time

class _Queries(threading.Thread):
    """Activity queries round-robin over the streams, one at a time, at ``rate`` per second."""

    def __init__(self, runtimes, rate: float, crop: np.ndarray) -> None:
        super().__init__(name="p8-queries", daemon=True)
        self.rts, self.rate, self.crop = runtimes, rate, crop
        self.lat: list[float] = []
        self.errors: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        t_next, i = pc(), 0
        while not self.halt.is_set():
            wait = t_next - pc()
            if wait > 0 and self.halt.wait(wait):
                return
            t_next += 1.0 / self.rate
            rt = self.rts[i % len(self.rts)]
            i += 1
            end = rt.stream.last_time
            if end is None or rt.stream.clips == 0:  # nothing committed yet: nothing to ask
                continue
            req = {"type": "activity", "start": end - QUERY_WINDOW_S, "end": end, "activity": None,
                   "object_image": self.crop, "k": 3}
            t0 = pc()
            try:
                rt.query([req])
                self.lat.append(pc() - t0)
            except Exception as err:  # noqa: BLE001 - counted and shown, the run goes on
                self.errors.append(f"{type(err).__name__}: {err}"[:200])


def _realtime(ctx: Ctx, model: str, plan: dict) -> dict:
    cfg = ctx.cfg(model)
    fps = cfg.stream.fps
    B = plan["batch_frames"] or cfg.stream.clip_frames
    warm = plan["warm_batches"][model]
    batches = warm + plan["window_batches"][model]
    video = _video(ctx, model, (batches + 2) * B / fps)  # the stream never ends inside the window
    crop_video = CheckoutVideo(seed=P8_SEED, duration_s=120.0, size=cfg.backbone.image_size)
    first = crop_video.annotations()["instances"][0]["instance_id"]
    crop = crop_video.object_crop(first, size=cfg.backbone.image_size)
    levels, best = [], 0
    for n in plan["levels"][model]:
        ctx.log(f"  P8 {model}: {n} real-time streams ...")
        lv = _level(ctx, model, n, str(video), B, warm, batches, crop)
        levels.append(lv)
        ctx.log(f"    {'pass' if lv['passed'] else 'FAIL'}: max commit delay {lv['max_commit_delay_s']} s "
                f"(limit {lv['batch_period_s']} s), query p50/p99 {lv['query_ms']['median']}/{lv['query_ms']['p99']} ms"
                + ("" if lv["passed"] else f" — {'; '.join(lv['why'])}"))
        if not lv["passed"]:
            break
        best = n
    top = next((lv for lv in levels if lv["streams"] == best), None)
    tried = plan["levels"][model]
    ctx.fig(f"P8.{model}.streams_realtime", value=best, unit="streams", goal=(">=", float(GOAL_STREAMS[model])),
            note=f"largest level passed of {tried} (search stops at the first failure"
                 f"{'' if best < tried[-1] else '; the last level passed: the limit may be higher'}); "
                 f"1 fps each, one in-process hub, shared .mp4 decoded per stream, {B}-frame intake batches")
    if top is not None:
        q = top["query_ms"]
        spread = {"p10": q["p10"], "p90": q["p90"], "min": q["min"], "max": q["max"], "n": q["n"]}
        ctx.fig(f"P8.{model}.query_p50_ms", value=q["median"], unit="ms", spread=spread,
                note=f"at {best} streams; in-process Runtime.query (not over HTTP), activity + object crop")
        ctx.fig(f"P8.{model}.query_p99_ms", value=q["p99"], unit="ms", goal=("<=", 50.0),
                note=f"at {best} streams; in-process Runtime.query (not over HTTP), {q['n']} queries")
    return {"batch_frames": B, "fps": fps, "video": str(video.name), "levels": levels, "largest_passed": best}


def _level(ctx: Ctx, model: str, n: int, uri: str, B: int, warm: int, batches: int, crop) -> dict:
    from edge_runtime.serve.streams import Streams

    fps = ctx.cfg(model).stream.fps
    period = B / fps
    target, warm_frames = batches * B, warm * B
    notes: list[str] = []
    hub = Streams(ctx.engine(model), batch_frames=B, warn=notes.append)
    mon = CpuMonitor()
    origins, rts = [], []
    q = None
    try:
        for i in range(n):
            origins.append(pc())
            rts.append(hub.add(f"cam{i}", uri, realtime=True))
        deadline = max(origins) + (target - 1) / fps + period + 0.5
        seen = [0] * n
        # (frames in memory, commit delay) each time a whole batch landed; a poll that lands inside
        # an ingest sees a count between batches and is skipped
        delays: list[list[tuple[int, float]]] = [[] for _ in range(n)]
        backlog = 0
        while True:
            now = pc()
            for i, rt in enumerate(rts):
                k = rt.stream.frames_processed
                if k != seen[i] and (k % B == 0 or k >= target):
                    seen[i] = k
                    delays[i].append((k, now - (origins[i] + (k - 1) / fps)))
                due = min(int((now - origins[i]) * fps) + 1, target)
                if due > warm_frames + B:  # backlog after the warm-up batch had a period to land
                    backlog = max(backlog, due - k)
            if q is None and all(s >= warm_frames for s in seen):
                q = _Queries(rts, QUERY_RATE, crop)
                q.start()
            if all(s >= target for s in seen) or now > deadline or any(rt.error for rt in rts):
                break
            time.sleep(0.1)
        if q is not None:
            q.halt.set()
            q.join(10)
        status = [rt.status() for rt in rts]
    finally:
        load = mon.stop()
        batcher = (hub.ingestor.batches, hub.ingestor.frames)
        hub.close()
    measured = [[x for k, x in d if k > warm_frames] for d in delays]
    flat = [x for d in measured for x in d]
    why = []
    dropped = sum(s["dropped"] for s in status)
    if dropped:
        why.append(f"{dropped} frames dropped")
    errs = [f"{s['stream']}: {s['error']}" for s in status if s["error"]]
    if errs:
        why.append(f"{len(errs)} streams failed ({errs[0]})")
    short = sum(1 for s in seen if s < target)
    if short:
        why.append(f"{short} of {n} streams had fewer than {target} frames in memory one batch period after due")
    late = sum(1 for d in measured if d and max(d) > period)
    if late:
        why.append(f"{late} streams had a batch in memory more than {period:g} s after due")
    grew = sum(1 for d in measured if len(d) >= 2 and d[-1] - d[0] > period / 4)
    if grew:
        why.append(f"the commit delay grew on {grew} streams")
    lat = np.asarray(q.lat if q is not None else [], np.float64) * 1e3
    qms = stats(lat)
    qms["p99"] = round(float(np.percentile(lat, 99)), 3) if lat.size else None
    return {"streams": n, "passed": not why, "why": why, "batch_period_s": period,
            "max_commit_delay_s": round(max(flat), 3) if flat else None,
            "commit_delay_s": stats(flat), "first_batch_delay_s": stats([d[0][1] for d in delays if d]),
            "max_backlog_frames": backlog, "dropped": dropped, "frames_in_memory": int(sum(seen)),
            "query_ms": qms, "query_errors": len(q.errors) if q else 0,
            "query_error_example": (q.errors[0] if q and q.errors else None),
            "ingest_batches": batcher[0], "frames_per_ingest_batch": round(batcher[1] / max(batcher[0], 1), 2),
            "warnings": notes[:5], "load": load}


# ----------------------------------------------------------------------------------------------
# 2. one hub vs separate processes

def _cli_run(bundle: Path, sources: list[str], threads: int, duration: float) -> list:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "HF_HUB_OFFLINE": "1"}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    cmd = [sys.executable, "-c", "import sys; from edge_runtime.cli import main; sys.exit(main())", "run",
           "--bundle", str(bundle), "--api", "none", "--threads", str(threads), "--duration", f"{duration:g}"]
    for s in sources:
        cmd += ["--source", s]
    return [cmd, env]


def _run_all(cmds: list[list]) -> tuple[float, float]:
    """Start every command at once -> (wall seconds until the last exits, peak of the processes'
    summed RSS in MB, sampled every 50 ms); RuntimeError on a failure."""
    t0 = pc()
    procs = [subprocess.Popen(c, env=e, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for c, e in cmds]
    readers = [threading.Thread(target=lambda p=p: setattr(p, "err", p.stderr.read()), daemon=True) for p in procs]
    [r.start() for r in readers]
    peak = 0
    while any(p.poll() is None for p in procs):
        peak = max(peak, sum(_rss_kb(p.pid) for p in procs))
        time.sleep(0.05)
    wall = pc() - t0
    [r.join(10) for r in readers]
    for p in procs:
        if p.returncode != 0:
            last = (getattr(p, "err", "") or "").strip().splitlines()[-1:] or [f"exit {p.returncode}"]
            raise RuntimeError(f"lvm-edge run exited {p.returncode}: {last[0][:300]}")
    return wall, peak / 1024


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
    except OSError:  # exited between poll and read
        return 0


def _batched_vs_separate(ctx: Ctx, model: str, plan: dict) -> dict:
    cfg = ctx.cfg(model)
    fps, B, n = cfg.stream.fps, cfg.stream.clip_frames, plan["sep_n"]
    long_s, short_s = plan["sep_long_batches"] * B / fps, B / fps
    video = str(_video(ctx, model, long_s))
    bundle, _ = ctx.bundle(model, "fp32")
    extra_frames = n * (long_s - short_s) * fps

    def side(which):
        def run(_r):
            res = {}
            for name, dur in (("short", short_s), ("long", long_s)):
                if which == "hub":
                    cmds = [_cli_run(bundle, [f"cam{i}={video}" for i in range(n)], ctx.threads, dur)]
                else:
                    cmds = [_cli_run(bundle, [video], 1, dur) for _ in range(n)]
                res[name], res[f"{name}_peak_rss_mb"] = _run_all(cmds)
            res["steady_fps"] = extra_frames / max(res["long"] - res["short"], 1e-6)
            res["end_to_end_fps"] = n * long_s * fps / res["long"]
            ctx.log(f"    {which}: {res['steady_fps']:.1f} frames/s steady ({res['long']:.1f} s long, "
                    f"{res['short']:.1f} s short)")
            return res
        return run

    ctx.log(f"  P8 {model}: {n} streams unpaced, one hub vs {n} processes, {plan['sep_rounds']} rounds ...")
    res = alternate({"hub": side("hub"), "separate": side("separate")}, plan["sep_rounds"])
    hub = [r["steady_fps"] for r in res["hub"]]
    sep = [r["steady_fps"] for r in res["separate"]]
    ratio = float(np.median(hub) / np.median(sep))
    ctx.fig(f"P8.{model}.batched_vs_separate", value=ratio, unit="x", spread=ratio_spread(hub, sep),
            goal=(">=", 1.5), note=f"{n} streams unpaced: one `lvm-edge run` with {n} --source (--threads "
                                   f"{ctx.threads}) vs {n} `lvm-edge run --threads 1` processes; steady frames/s "
                                   "(start-up cancelled by a short run); paired rounds")
    ctx.fig(f"P8.{model}.hub_fps", value=float(np.median(hub)), unit="frames/s", samples=hub,
            note=f"{n} streams in one process")
    ctx.fig(f"P8.{model}.separate_fps", value=float(np.median(sep)), unit="frames/s", samples=sep,
            note=f"{n} processes together")
    hub_mb = [r["long_peak_rss_mb"] for r in res["hub"]]
    sep_mb = [r["long_peak_rss_mb"] for r in res["separate"]]
    ctx.fig(f"P8.{model}.separate_vs_hub_rss", value=float(np.median(sep_mb) / np.median(hub_mb)), unit="x",
            spread=ratio_spread(sep_mb, hub_mb),
            note=f"peak RSS of {n} processes together over one process with {n} streams "
                 f"({np.median(sep_mb):.0f} vs {np.median(hub_mb):.0f} MB)")
    e2e = [a["end_to_end_fps"] / b["end_to_end_fps"] for a, b in zip(res["hub"], res["separate"])]
    return {"streams": n, "long_s": long_s, "short_s": short_s, "rounds": plan["sep_rounds"],
            "hub": res["hub"], "separate": res["separate"], "ratio_steady": round(ratio, 3),
            "ratio_end_to_end": stats(e2e), "separate_mode": "processes (lvm-edge run --api none --threads 1)"}


# ----------------------------------------------------------------------------------------------
# 3. memory per stream, RSS over a long run

def _ramp(ctx: Ctx, model: str, plan: dict) -> dict:
    from edge_runtime.serve.streams import Streams

    cfg = ctx.cfg(model)
    B, fps = cfg.stream.clip_frames, cfg.stream.fps
    video = str(_video(ctx, model, B / fps))
    hub = Streams(ctx.engine(model), warn=lambda _m: None)
    rows = []
    try:
        hub.add("warmup", video).wait(600)  # sessions and allocator warm before the first mark
        hub.remove("warmup")
        gc.collect()
        rows.append({"streams": 0, "rss_bytes": rss_bytes(), "state_bytes": 0})
        names = 0
        for n in plan["ramp"][model]:
            while names < n:
                rt = hub.add(f"cam{names}", video)
                rt.wait(600)
                if rt.error:
                    raise RuntimeError(f"P8 memory ramp: stream {rt.name}: {rt.error}")
                names += 1
            gc.collect()
            rows.append({"streams": n, "rss_bytes": rss_bytes(),
                         "state_bytes": int(sum(r.stream.memory_bytes for r in hub))})
    finally:
        hub.close()
    x = np.array([r["streams"] for r in rows], np.float64)
    y = np.array([r["rss_bytes"] for r in rows], np.float64)
    slope = float(np.polyfit(x[1:], y[1:], 1)[0]) if len(x) > 2 else float((y[-1] - y[0]) / max(x[-1], 1))
    per = rows[-1]["state_bytes"] / max(rows[-1]["streams"], 1)
    ctx.fig(f"P8.{model}.state_bytes_per_stream", value=per, unit="bytes",
            note="stream.memory_bytes of one stream (memory, committed copy, SVD, pending clip, gaps)")
    ctx.fig(f"P8.{model}.rss_bytes_per_stream", value=slope, unit="bytes",
            note=f"slope of process RSS over 1..{rows[-1]['streams']} streams, each having streamed one clip")
    return {"rows": rows, "rss_slope_bytes": round(slope), "state_bytes_per_stream": per}


def _long_run(ctx: Ctx, model: str, plan: dict) -> dict:
    from edge_runtime.serve.streams import Streams

    k, dur = plan["long_streams"], plan["long_s"]
    fps = ctx.cfg(model).stream.fps
    mark = dur / 10  # ten marks: stream hours in the full run
    ctx.log(f"  P8 {model}: {k} unpaced demo streams of {dur / HOUR:g} stream-hours each ...")
    hub = Streams(ctx.engine(model), warn=lambda _m: None)
    marks: list[dict] = []
    t0 = pc()
    try:
        rts = [hub.add(f"long{i}", f"demo://checkout?seed={P8_SEED + 10 + i}&duration={dur:g}") for i in range(k)]
        nxt = 1
        while nxt <= 10:
            done = not any(rt.running for rt in rts)
            low = min(rt.stream.frames_processed for rt in rts) / fps
            if low >= nxt * mark - 1.0 / fps or done:
                marks.append({"mark": nxt, "stream_s": round(low, 1), "rss_bytes": rss_bytes(),
                              "wall_s": round(pc() - t0, 1)})
                nxt += 1
                continue
            if any(rt.error for rt in rts):
                raise RuntimeError(f"P8 long run: {next(rt.error for rt in rts if rt.error)}")
            time.sleep(0.2)
        for rt in rts:
            rt.wait(600)
        frames = int(sum(rt.stream.frames_processed for rt in rts))
    finally:
        hub.close()
    base = marks[0]["rss_bytes"]
    growth = (marks[-1]["rss_bytes"] - base) / base * 100
    others = [(m["rss_bytes"] - base) / base * 100 for m in marks[1:]]
    unit = f"marks every {mark / 60:g} stream minutes"
    ctx.fig("P8.rss_growth_pct", value=growth, unit="%", goal=("<=", 2.0),
            spread={"min": min(others, default=None), "max": max(others, default=None), "n": len(marks)},
            note=f"{k} streams of an unpaced demo in one hub, {dur / HOUR:g} stream-hours each; RSS at mark 1 -> 10 "
                 f"({unit}); min/max: other marks vs mark 1")
    return {"streams": k, "stream_s_each": dur, "frames": frames, "wall_s": round(pc() - t0, 1), "marks": marks,
            "rss_growth_pct": round(growth, 3)}
