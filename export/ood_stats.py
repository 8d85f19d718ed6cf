"""The bundle's out-of-distribution statistics (``ood.safetensors``) and their threshold.

Fit: frames of the training videos (``training_video(seed, i)``, one per training look) go through
the bundle's own backbone graph -- the tokens the device will score -- and a probabilistic PCA of
their features is kept (edge_runtime/ood.py says what the feature and the score are).

Threshold: a held-out checkout look must not be flagged, and no held-out look may be used to set
the threshold. So it is set by leaving one training look out at a time: the statistics fitted on
the other looks score the left-out look's frames, and the threshold is a high quantile of those
scores' window means -- what a look the statistics never saw scores. The shipped statistics are
fitted on all training looks, which only lowers scores of new looks further. Street or film footage
scores well above that (tools/ood_threshold.py measures both; docs/accuracy/ood.json).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.ood import FEATURE, OOD_FILE, OODStats, fit_stats, frame_features, save_stats, window_means

COMPONENTS = 10        # PPCA components; the residual carries the rest
WINDOW_S = 60.0        # the runtime's window: the last minute of stream
MIN_FRAMES = 8         # frames (at the model fps) before the runtime decides: a 10 s clip gets a verdict
QUANTILE = 0.99        # of the left-out looks' window means
STRIDE_S = 3.0         # seconds between fitted frames: more of each video for the same cost
FRAMES_PER_LOOK = 160  # 8 minutes of each training look


@dataclass
class OODFit:
    stats: OODStats
    threshold: float
    window_frames: int
    min_frames: int
    frames: int
    videos: list[dict]
    heldout_look_quantiles: dict[str, float]

    def manifest(self, sha256: str) -> dict:
        return {"file": OOD_FILE, "sha256": sha256, "feature": FEATURE, "components": len(self.stats.variances),
                "threshold": round(self.threshold, 6), "window_frames": self.window_frames,
                "min_frames": self.min_frames, "frames": self.frames, "videos": self.videos,
                "threshold_rule": f"q{QUANTILE:g} of {WINDOW_S:g} s window means of each training look scored by "
                                  f"statistics fitted on the other training looks",
                "left_out_look_q": self.heldout_look_quantiles}


def training_frames(cfg, seed: int = 0, frames_per_look: int = FRAMES_PER_LOOK,
                    stride_s: float = STRIDE_S) -> list[tuple[dict, np.ndarray]]:
    """[(video description, (n, S, S, 3) uint8 frames)] for one training video per training look."""
    from edge_runtime.checkout import TRAIN_LOOKS, CheckoutVideo, training_video

    S = cfg.backbone.image_size
    out = []
    for i in range(len(TRAIN_LOOKS)):
        vseed, look = training_video(seed, i)
        video = CheckoutVideo(seed=vseed, duration_s=frames_per_look * stride_s, size=S, look=look)
        times = np.arange(frames_per_look) * stride_s
        frames = np.stack([video.frame(float(t)) for t in times])
        out.append(({"seed": vseed, "look": look, "frames": frames_per_look, "stride_s": stride_s}, frames))
    return out


def fit_ood(tokens_per_look: list[np.ndarray], *, window_samples: int, window_frames: int,
            components: int = COMPONENTS, quantile: float = QUANTILE, min_frames: int = MIN_FRAMES,
            videos: list[dict] | None = None) -> OODFit:
    """Statistics on every look's tokens (n_i, P, d) and the leave-one-look-out threshold.
    ``window_samples``: fitted frames per runtime window (the window over the stride)."""
    feats = [frame_features(t) for t in tokens_per_look]
    names = [f"look {v.get('look', i)}" for i, v in enumerate(videos or [{}] * len(feats))]
    left_out: dict[str, float] = {}
    means = []
    for j in range(len(feats)):
        rest = np.concatenate([f for i, f in enumerate(feats) if i != j])
        stats_j = fit_stats(rest, components)
        m = window_means(stats_j.scores(tokens_per_look[j]), window_samples)
        left_out[names[j]] = round(float(np.quantile(m, quantile)), 4)
        means.append(m)
    threshold = float(np.quantile(np.concatenate(means), quantile))
    stats = fit_stats(np.concatenate(feats), components)
    return OODFit(stats, threshold, window_frames, min(min_frames, window_frames), sum(len(f) for f in feats),
                  videos or [], left_out)


def backbone_tokens(session, frames: np.ndarray, batch: int = 32) -> np.ndarray:
    out = [session.run(["tokens"], {"frames": np.ascontiguousarray(frames[i : i + batch])})[0]
           for i in range(0, len(frames), batch)]
    return np.concatenate(out).astype(np.float32)


def write_bundle_ood(bundle_dir: Path, cfg, *, threads: int = 2, seed: int = 0,
                     tick: Callable[[int], object] | None = None) -> dict:
    """Fit on the training looks through ``bundle_dir``'s backbone graph, write ``ood.safetensors``
    there; -> the manifest's "ood" section."""
    from edge_runtime.bundle import sha256_file
    from export.cpu_latency import cpu_session

    session = cpu_session(Path(bundle_dir) / "backbone.onnx", threads)
    videos, tokens = [], []
    for desc, frames in training_frames(cfg, seed):
        videos.append(desc)
        tokens.append(backbone_tokens(session, frames))
        if tick:
            tick(1)
    fps = cfg.stream.fps
    fit = fit_ood(tokens, window_samples=max(2, round(WINDOW_S / STRIDE_S)),
                  window_frames=max(1, round(WINDOW_S * fps)), videos=videos)
    path = Path(bundle_dir) / OOD_FILE
    save_stats(path, fit.stats)
    return fit.manifest(sha256_file(path))
