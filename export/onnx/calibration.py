"""Calibration data for INT8 (and realistic parity inputs): real frames, never random numbers.

Frames come from a source URI through the runtime's own sources, sampled at the model's fps and
resized to the backbone's input exactly as on the device. From them the FP32 graphs (ONNX Runtime) produce what each later graph
really sees: backbone tokens -> sampler calls with the stream's own memory -> head calls on that
memory with the online-SVD state and query batches whose object crops are cut from the frames.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_runtime.config import ModelConfig
from edge_runtime.sources.frames import resize_square
from edge_runtime.sources import SourceError, open_source, parse_source_uri

# Calibration seeds are disjoint from training (seed * 1000 + i, seed < 1000) and from lvm-eval's
# and the accuracy gate's held-out videos (1_000_000 + ...). Without scan avoidance, like the videos the
# model is trained and scored on.
DEFAULT_CALIB_SEED = 7_000_000
DEFAULT_CALIB_URI = f"demo://checkout?seed={DEFAULT_CALIB_SEED}&duration=600&shrink=0"


class CalibrationError(ValueError):
    """No usable calibration data; the message is one line."""


@dataclass
class CalibrationFrames:
    uri: str
    frames: np.ndarray   # (N, S, S, 3) uint8 RGB
    times: np.ndarray    # (N,) seconds, increasing
    fps: float
    notes: list[str] = field(default_factory=list)
    videos: list[dict] = field(default_factory=list)  # per file when read from several (a dataset split)

    def __len__(self) -> int:
        return len(self.frames)

    def sha256(self) -> str:
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.frames).tobytes())
        h.update(np.ascontiguousarray(self.times, np.float64).tobytes())
        return h.hexdigest()

    def describe(self) -> dict:
        out = {"source": self.uri, "frames": len(self), "fps": self.fps, "sha256": self.sha256(),
               "span_s": [float(self.times[0]), float(self.times[-1])] if len(self) else None}
        if self.videos:
            out["videos"] = self.videos
        return out


def iter_source(uri: str, size: int, fps: float) -> Iterator[tuple[float, np.ndarray]]:
    """(t, (size, size, 3) uint8 RGB frame) at ``fps`` from a calibration source, read by the
    runtime's own sources (edge_runtime.sources) so that calibration sees what the device sees."""
    text = uri.strip()
    if not text:
        raise CalibrationError("--calib: empty source URI")
    try:
        spec = parse_source_uri(text)
    except SourceError as err:
        raise CalibrationError(str(err)) from None
    if spec.live:
        raise CalibrationError(f"{spec.label}: live sources are not used for calibration (a calibration set must be "
                               "reproducible and hashable); record a file and pass it")
    return _frames(text, size, fps)


def _frames(uri: str, size: int, fps: float) -> Iterator[tuple[float, np.ndarray]]:
    try:
        src = open_source(uri, target_fps=fps, size=size)
    except (SourceError, ImportError) as err:
        raise CalibrationError(str(err).splitlines()[0]) from None
    with src:
        try:
            for f in src:
                yield float(f.t), f.image
        except (SourceError, ImportError) as err:
            raise CalibrationError(str(err).splitlines()[0]) from None


def read_frames(uri: str, cfg: ModelConfig, max_frames: int = 600,
                tick: Callable[[int], None] | None = None) -> CalibrationFrames:
    """Up to ``max_frames`` frames at the model's fps, resized to its input; CalibrationError if none."""
    size, fps = cfg.backbone.image_size, cfg.stream.fps
    frames, times = [], []
    for t, img in iter_source(uri, size, fps):
        frames.append(img)
        times.append(float(t))
        if tick:
            tick(1)
        if len(frames) >= max_frames:
            break
    if not frames:
        raise CalibrationError(f"{uri}: the calibration source yielded no frames; INT8 needs real frames "
                               "(pass a video with --calib)")
    return CalibrationFrames(uri, np.stack(frames), np.asarray(times, np.float64), fps)


def read_video_files(files: list[Path], label: str, cfg: ModelConfig, max_frames: int = 600,
                     tick: Callable[[int], None] | None = None) -> CalibrationFrames:
    """Up to ``max_frames`` frames spread over several video files (a dataset split), each read from
    its start like a ``--calib`` file, as one stream: every file gets an equal share in whole clips
    (a short file's unused share goes to the next), and its times continue the previous file's, so
    the sampler sees increasing time. ``label`` names the set in the manifest."""
    size, fps, T = cfg.backbone.image_size, cfg.stream.fps, cfg.stream.clip_frames
    frames, times, videos = [], [], []
    offset = 0.0
    for k, path in enumerate(files):
        left = max_frames - len(frames)
        if left <= 0:
            break
        share = min(left, -(-left // (len(files) - k) // T) * T)
        n, last = 0, None
        for t, img in iter_source(str(Path(path).resolve()), size, fps):
            if n >= share:
                break
            frames.append(img)
            times.append(offset + float(t))
            last = float(t)
            n += 1
            if tick:
                tick(1)
        if last is not None:
            offset += last + 1.0 / fps
        videos.append({"file": Path(path).name, "frames": n})
    if not frames:
        raise CalibrationError(f"{label}: its videos yielded no frames; INT8 needs real frames (pass a video with --calib)")
    return CalibrationFrames(label, np.stack(frames), np.asarray(times, np.float64), fps, videos=videos)


# ----------------------------------------------------------------------------------------------
# realistic inputs for each graph, produced by the FP32 graphs themselves

@dataclass
class GraphFeeds:
    backbone: list[dict[str, np.ndarray]]
    sampler: list[dict[str, np.ndarray]]
    heads: list[dict[str, np.ndarray]]
    notes: dict = field(default_factory=dict)
    # the memory reader's calls (export.onnx.reader_graphs.real_feeds), when its graphs are exported
    reader: list[dict[str, np.ndarray]] = field(default_factory=list)
    answer: list[dict[str, np.ndarray]] = field(default_factory=list)


def _run(session, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def build_feeds(cal: CalibrationFrames, cfg: ModelConfig, fp32_dir: Path, *, backbone_batch: int | None = None,
                max_backbone_batches: int = 16, head_every: int = 2, queries: int = 16, seed: int = 0,
                threads: int = 2, tick: Callable[[int], None] | None = None) -> GraphFeeds:
    """Stream the calibration frames through the FP32 graphs in ``fp32_dir`` as the runtime would."""
    from edge_runtime.query.answers import encode_queries
    from edge_runtime.memory.clip_step import clip_inputs, fold_clip, whole_clips
    from edge_runtime.memory.token_memory import CLIP_INPUTS, MEMORY_INPUTS, SAMPLER_STATE
    from edge_runtime.memory.svd import svd_from_config
    from export.onnx.cpu_latency import cpu_session

    rng = np.random.default_rng(seed)
    S, P, d = cfg.backbone.image_size, cfg.backbone.tokens_per_frame, cfg.backbone.dim
    T, m, r = cfg.stream.clip_frames, cfg.stream.memory_tokens, cfg.svd.n_components
    bb = cpu_session(fp32_dir / "backbone.onnx", threads)
    sm = cpu_session(fp32_dir / "sampler.onnx", threads)
    batch = backbone_batch or T
    n = len(cal)

    tokens = np.empty((n, P, d), np.float32)
    bb_feeds = []
    for i in range(0, n, batch):
        feed = {"frames": np.ascontiguousarray(cal.frames[i : i + batch])}
        tokens[i : i + batch] = _run(bb, feed)["tokens"]
        if len(feed["frames"]) == batch:
            bb_feeds.append(feed)
        if tick:
            tick(1)
    # spread the backbone's calibration batches over the whole source
    if len(bb_feeds) > max_backbone_batches:
        pick = np.linspace(0, len(bb_feeds) - 1, max_backbone_batches).round().astype(int)
        bb_feeds = [bb_feeds[j] for j in pick]

    # one stream, one row per call: the sampler's n_streams axis takes any row count, and the
    # calibration ranges of one stream are those of a batch of streams
    mem = {"mem": np.zeros((1, m, d), np.float32), "mem_t": np.zeros((1, m), np.float32),
           "mem_p": np.zeros((1, m), np.int64), "mem_valid": np.zeros((1, m), np.float32)}
    state_in = next((i for i in sm.get_inputs() if i.name == SAMPLER_STATE), None)
    if state_in is not None:  # a sampler with a recurrent state of its own (S5) starts from zeros
        mem[SAMPLER_STATE] = np.zeros([1, *state_in.shape[1:]], np.float32)
    svd = svd_from_config(cfg)
    # crops from the first 4 clips, a fixed count: the same source gives the same early queries at any
    # number of frames read (parity and latency inputs then compare across precisions)
    crops = _crop_tokens(cal, bb, rng, count=32, size=S, first=4 * T)
    # Each query attends over all memory tokens: the heads hold Q x N^2 attention weights per layer.
    # Keep that within what 16 queries over ~1000 tokens need (lvm-edge: 2 queries per batch).
    n_tok = m + P + 1 + r
    queries = int(max(2, min(queries, queries * (1000.0 / n_tok) ** 2)))
    sm_feeds, hd_feeds = [], []
    last_clip = n // T - 1
    for c, frames in whole_clips(n, T):
        tok = tokens[frames]
        feed = dict(mem)
        feed.update(zip(CLIP_INPUTS, clip_inputs(tok, cal.times[frames].astype(np.float32))))
        sm_feeds.append(feed)
        out = _run(sm, feed)
        mem = {n: out["new_" + n] for n in mem}
        fold_clip(svd, tok)
        if (c + 1) % head_every == 0 or c == last_clip:
            state = svd.state_dict()
            t_end = float(cal.times[frames][-1]) + 1.0 / cfg.stream.fps
            hb = _queries(rng, queries, float(cal.times[0]), t_end, crops, cfg, encode_queries)
            feed = {n: mem[n] for n in MEMORY_INPUTS}
            feed.update({"svd_basis": state["svd_basis"].astype(np.float32)[None],
                         "svd_sv": state["svd_singular_values"].astype(np.float32)[None]})
            feed.update(hb.as_feed())
            hd_feeds.append(feed)
        if tick:
            tick(1)
    return GraphFeeds(bb_feeds, sm_feeds, hd_feeds,
                      {"backbone_batches": len(bb_feeds), "sampler_calls": len(sm_feeds), "head_batches": len(hd_feeds),
                       "queries_per_head_batch": queries, "crops": len(crops)})


def _crop_tokens(cal: CalibrationFrames, backbone, rng, count: int, size: int, first: int) -> np.ndarray:
    """Backbone tokens of square crops cut from the calibration frames (stand-ins for object crops)."""
    imgs = []
    for _ in range(count):
        f = cal.frames[rng.integers(min(len(cal), first))]
        side = int(rng.integers(size // 4, size // 2 + 1))
        y, x = (int(rng.integers(0, size - side + 1)) for _ in range(2))
        imgs.append(resize_square(np.ascontiguousarray(f[y : y + side, x : x + side]), size))
    out = []
    for i in range(0, count, 16):
        out.append(_run(backbone, {"frames": np.stack(imgs[i : i + 16])})["tokens"])
    return np.concatenate(out)


def _queries(rng, q: int, t0: float, t1: float, crops: np.ndarray, cfg: ModelConfig, encode):
    """A realistic mix of the three query types over windows of the covered time."""
    types, windows, acts, objs = [], [], [], []
    span = max(t1 - t0, 2.0 / cfg.stream.fps)
    for i in range(q):
        kind = ("activity", "object", "time")[i % 3]
        length = float(rng.uniform(0.1, 1.0)) * span
        start = t0 + float(rng.uniform(0.0, span - length))
        end = max(start + length, start + 1.0 / cfg.stream.fps)
        types.append(kind)
        windows.append((start, end))
        acts.append(int(rng.integers(cfg.heads.num_activities)) if kind != "activity" else None)
        objs.append(crops[rng.integers(len(crops))] if kind != "object" else None)
    return encode(types, windows, acts, objs, fps=cfg.stream.fps, max_queries=cfg.heads.window_queries,
                  tokens_shape=(cfg.backbone.tokens_per_frame, cfg.backbone.dim))
