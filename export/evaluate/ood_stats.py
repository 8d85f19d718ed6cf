"""The bundle's out-of-distribution statistics (``ood.safetensors``) and their threshold.

Fit: frames of the footage the model was trained on go through the bundle's own backbone graph --
the tokens the device will score -- and a probabilistic PCA of their features is kept
(edge_runtime/memory/ood.py says what the feature and the score are). That footage is the generator's
training looks (``training_video(seed, i)``, one video per look), or with ``lvm-export --data DIR``
the dataset's train split: a model trained on one's own footage must not call that footage unlike
its training data. Frames are taken every STRIDE_S seconds from each video's start.

Threshold: footage like the training footage must not be flagged, and nothing held out may be used
to set the threshold. So it is set by leaving one part of the training footage out at a time: the
statistics fitted on the other parts score the left-out part's frames, and the threshold is a high
quantile of those scores' window means -- what footage the statistics never saw scores. The parts
are the generator's looks, or a dataset's videos; a dataset whose videos cannot each be left out
(one video, or one holding all but less than a window of the frames) is cut into two halves, in
video order, and each half is left out in turn. Footage shorter than two windows gets no statistics
(the runtime then reports the signal as unknown) rather than a threshold from one window. The
shipped statistics are fitted on all parts, which only lowers scores of new footage further. Street
or film footage scores well above that (tools/accuracy/ood_threshold.py measures both; docs/accuracy/ood.json).
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_runtime.memory.ood import FEATURE, OOD_FILE, OODStats, fit_stats, frame_features, save_stats, window_means

COMPONENTS = 10        # PPCA components; the residual carries the rest
WINDOW_S = 60.0        # the runtime's window: the last minute of stream
MIN_FRAMES = 8         # frames (at the model fps) before the runtime decides: a 10 s clip gets a verdict
QUANTILE = 0.99        # of the left-out parts' window means
STRIDE_S = 3.0         # seconds between fitted frames: more of each video for the same cost
FRAMES_PER_LOOK = 160  # 8 minutes of each training look (and at most that of each dataset video)
MAX_DATASET_FRAMES = 1280  # over all of a dataset's videos: every left-out fit is an N x N eigenproblem
WINDOW_SAMPLES = max(2, round(WINDOW_S / STRIDE_S))  # fitted frames per runtime window


@dataclass
class OODFit:
    stats: OODStats
    threshold: float
    window_frames: int
    min_frames: int
    frames: int
    videos: list[dict]
    left_out_q: dict[str, float]   # per left-out part: the q of its window means
    unit: str = "look"             # what a part is: "look", "video" or "half"
    fitted_on: dict = field(default_factory=dict)

    @property
    def heldout_look_quantiles(self) -> dict[str, float]:
        return self.left_out_q

    def manifest(self, sha256: str) -> dict:
        rule = {"look": "each training look scored by statistics fitted on the other training looks",
                "video": "each train-split video scored by statistics fitted on the other videos",
                "half": "each half of the train split's frames (in video order) scored by statistics "
                        "fitted on the other half"}[self.unit]
        return {"file": OOD_FILE, "sha256": sha256, "feature": self.stats.feature, "components": len(self.stats.variances),
                "threshold": round(self.threshold, 6), "window_frames": self.window_frames,
                "min_frames": self.min_frames, "frames": self.frames, "videos": self.videos,
                "fitted_on": self.fitted_on,
                "threshold_rule": f"q{QUANTILE:g} of {WINDOW_S:g} s window means of {rule}",
                f"left_out_{self.unit}_q": self.left_out_q}


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


def dataset_frames(items, cfg, stride_s: float = STRIDE_S, max_frames: int = MAX_DATASET_FRAMES):
    """Yield (video description, (n, S, S, 3) uint8 frames) for each dataset item: every ``stride_s``
    seconds from the video's start, read by the runtime's file source as calibration reads them, up
    to FRAMES_PER_LOOK frames and an equal share of ``max_frames``. CalibrationError (one line) for
    a video that does not decode."""
    from export.onnx.calibration import CalibrationError, iter_source

    S = cfg.backbone.image_size
    cap = max(1, min(FRAMES_PER_LOOK, max_frames // max(1, len(items))))
    for it in items:
        frames = []
        for _, img in iter_source(str(it.video.resolve()), S, 1.0 / stride_s):
            frames.append(img)
            if len(frames) >= cap:
                break
        if not frames:  # the file source refuses such a file at open; a second guard costs nothing
            raise CalibrationError(f"{it.video}: no decodable frames")
        yield {"stem": it.stem, "file": it.video.name, "frames": len(frames), "stride_s": stride_s}, np.stack(frames)


def leave_out_parts(videos: list[dict], tokens: list[np.ndarray],
                    window_samples: int) -> tuple[list[str], list[np.ndarray], str]:
    """A dataset's parts for the threshold: -> (names, tokens per part, unit). Each video, when
    leaving any one out keeps at least a window of frames to fit on; else the two halves of all
    frames in video order (one video, or one video holding nearly all the frames)."""
    sizes = [len(t) for t in tokens]
    if len(tokens) >= 2 and sum(sizes) - max(sizes) >= window_samples:
        return [v["stem"] for v in videos], tokens, "video"
    every = np.concatenate(tokens)
    half = len(every) // 2
    return ["first half", "second half"], [every[:half], every[half:]], "half"


def fit_ood(tokens_per_look: list[np.ndarray], *, window_samples: int, window_frames: int,
            components: int = COMPONENTS, quantile: float = QUANTILE, min_frames: int = MIN_FRAMES,
            videos: list[dict] | None = None, names: list[str] | None = None, unit: str = "look",
            fitted_on: dict | None = None, feature: str = FEATURE) -> OODFit:
    """Statistics on every part's tokens (n_i, P, d) and the leave-one-part-out threshold.
    ``window_samples``: fitted frames per runtime window (the window over the stride). ``names``:
    the parts' names (default: "look <look>" from ``videos``). ``feature``: the per-frame feature
    (edge_runtime/memory/ood.py), recorded in the manifest for the runtime."""
    feats = [frame_features(t, feature) for t in tokens_per_look]
    if names is None:
        names = [f"look {v.get('look', i)}" for i, v in enumerate(videos or [{}] * len(feats))]
    left_out: dict[str, float] = {}
    means = []
    for j in range(len(feats)):
        rest = np.concatenate([f for i, f in enumerate(feats) if i != j])
        stats_j = fit_stats(rest, components, feature)
        m = window_means(stats_j.scores(tokens_per_look[j]), window_samples)
        left_out[names[j]] = round(float(np.quantile(m, quantile)), 4)
        means.append(m)
    threshold = float(np.quantile(np.concatenate(means), quantile))
    stats = fit_stats(np.concatenate(feats), components, feature)
    return OODFit(stats, threshold, window_frames, min(min_frames, window_frames), sum(len(f) for f in feats),
                  videos or [], left_out, unit, fitted_on or {})


def backbone_tokens(session, frames: np.ndarray, batch: int = 32) -> np.ndarray:
    out = [session.run(["tokens"], {"frames": np.ascontiguousarray(frames[i : i + batch])})[0]
           for i in range(0, len(frames), batch)]
    return np.concatenate(out).astype(np.float32)


def ood_step(train=None) -> tuple[str, int]:
    """The export step's label and its number of ticks (one per video) for ``write_bundle_ood``."""
    if train is None:
        from edge_runtime.checkout import TRAIN_LOOKS

        return "OOD statistics (training looks through the bundle's backbone)", len(TRAIN_LOOKS)
    return f"OOD statistics ({train.split} split of {train.root} through the bundle's backbone)", len(train.items)


def write_bundle_ood(bundle_dir: Path, cfg, *, threads: int = 2, seed: int = 0, train=None,
                     notes: list[str] | None = None, tick: Callable[[int], object] | None = None) -> dict | None:
    """Fit through ``bundle_dir``'s backbone graph on the generator's training looks, or on
    ``train`` (a dataset split, export.dataset.eval_data.DataSplit) when given; write ``ood.safetensors``
    there; -> the manifest's "ood" section. None, and one line in ``notes`` (stderr without), when
    the split is too short for a threshold: the bundle then has no OOD statistics."""
    from edge_runtime.file_hash import sha256_file
    from export.onnx.cpu_latency import cpu_session

    session = cpu_session(Path(bundle_dir) / "backbone.onnx", threads)
    if train is None:
        source = training_frames(cfg, seed)
        fitted_on = {"generator": "training looks", "seed": seed, "looks": [d["look"] for d, _ in source]}
    else:
        source = dataset_frames(train.items, cfg)
        fitted_on = {"dataset": str(train.root), "split": train.split, "videos": [it.stem for it in train.items]}
    videos, tokens = [], []
    for desc, frames in source:
        videos.append(desc)
        tokens.append(backbone_tokens(session, frames))
        if tick:
            tick(1)
    window_frames = max(1, round(WINDOW_S * cfg.stream.fps))
    if train is None:
        fit = fit_ood(tokens, window_samples=WINDOW_SAMPLES, window_frames=window_frames, videos=videos,
                      fitted_on=fitted_on)
    else:
        total = sum(len(t) for t in tokens)
        if total < 2 * WINDOW_SAMPLES:
            line = (f"no OOD statistics: the {train.split} split of {train.root} gives {total} frames at "
                    f"{STRIDE_S:g} s apart, a threshold needs {2 * WINDOW_SAMPLES} ({2 * WINDOW_S:g} s of "
                    f"footage); the runtime reports the OOD signal as unknown")
            if notes is None:
                print(f"lvm-export: {line}", file=sys.stderr)
            else:
                notes.append(line)
            return None
        names, parts, unit = leave_out_parts(videos, tokens, WINDOW_SAMPLES)
        fit = fit_ood(parts, window_samples=WINDOW_SAMPLES, window_frames=window_frames, videos=videos,
                      names=names, unit=unit, fitted_on=fitted_on)
    path = Path(bundle_dir) / OOD_FILE
    save_stats(path, fit.stats)
    return fit.manifest(sha256_file(path))
