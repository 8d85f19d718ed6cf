"""How unlike the training data the recent frames are: an out-of-distribution (OOD) signal.

A model trained on checkout scenes answers any video with confident checkout activities; nothing in
an answer says the camera looks at a street. This module scores each ingested frame's backbone
tokens against statistics of the training frames that lvm-export stores in the bundle
(``ood.safetensors``), keeps the scores of the last ``window`` frames, and flags the stream when
their mean is above the bundle's threshold.

The per-frame feature is named in the manifest (``ood.feature``), and this runtime computes both:
``tokens``, the frame's tokens flattened (P * d values), which lvm-export writes; and
``centered_tokens``, the same minus the frame's own mean token (the spatial pattern alone), which
older bundles carry. Centring removed what a new counter colour or light shifts everywhere at once,
but with a backbone pre-trained to tell products from "none" (docs/training.md) every non-product
patch of a street or a film comes out near "none", and the centred pattern of a street scored below
the threshold (vtest.avi 8.0 against 8.3); the raw tokens keep the scene's overall appearance
(vtest.avi 11.1, the film 9.5, held-out checkout looks at most 6.0, threshold 8.6:
docs/accuracy/ood.json). The threshold, set by leaving training looks out, covers how much
checkout looks differ. The score is a probabilistic-PCA distance to the
training frames: squared coordinates in the top components over their variances plus the
residual energy over the residual variance, divided by the feature's dimension (about 1 for a
training frame).

The statistics are fixed training-data statistics, not the online SVD of the stream: that basis
adapts to whatever the camera shows, so it measures novelty within the stream and would call a
street scene in-distribution after a minute of street.

Bundles without the file answer ``flag: None`` with a note, never an error. The recent-window
scores are not part of snapshots: after a restart the window refills from the next frames.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

OOD_FILE = "ood.safetensors"
FEATURE = "tokens"            # what lvm-export fits (manifest "ood.feature")
FEATURES = ("tokens", "centered_tokens")  # what this runtime computes


class OODError(ValueError):
    """Statistics that cannot be used; the message is one line."""


def frame_features(tokens: np.ndarray, feature: str = "centered_tokens") -> np.ndarray:
    """(N, P, d) tokens -> (N, P * d) float32: each frame's tokens (``tokens``), or minus the frame's
    mean token (``centered_tokens``)."""
    tokens = np.asarray(tokens, np.float32)
    if tokens.ndim == 2:
        tokens = tokens[None]
    if feature == "centered_tokens":
        tokens = tokens - tokens.mean(axis=1, keepdims=True)
    elif feature != "tokens":
        raise OODError(f"feature {feature!r}: this runtime computes {', '.join(FEATURES)}")
    return tokens.reshape(len(tokens), -1)


@dataclass(frozen=True)
class OODStats:
    """Probabilistic PCA of training-frame features: mean (D,), basis (k, D) with orthonormal rows,
    variances (k,) along it, residual_var: mean variance of what the basis leaves; ``feature``: which
    per-frame feature (``FEATURES``) they describe."""
    mean: np.ndarray
    basis: np.ndarray
    variances: np.ndarray
    residual_var: float
    feature: str = "centered_tokens"

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def scores(self, tokens: np.ndarray) -> np.ndarray:
        """(N, P, d) tokens -> (N,) scores (about 1 for frames like the training frames)."""
        x = frame_features(tokens, self.feature) - self.mean
        z = x @ self.basis.T
        resid = np.maximum(np.einsum("nd,nd->n", x, x) - np.einsum("nk,nk->n", z, z), 0.0)
        return ((z * z / self.variances).sum(axis=1) + resid / self.residual_var).astype(np.float64) / self.dim

    def arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean.astype(np.float32), "basis": self.basis.astype(np.float32),
                "variances": self.variances.astype(np.float32),
                "residual_var": np.array([self.residual_var], np.float32)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], where: str = "OOD statistics",
                    feature: str = "centered_tokens") -> "OODStats":
        try:
            mean = np.asarray(arrays["mean"], np.float32).reshape(-1)
            basis = np.asarray(arrays["basis"], np.float32)
            var = np.asarray(arrays["variances"], np.float32).reshape(-1)
            res = float(np.asarray(arrays["residual_var"]).reshape(-1)[0])
        except (KeyError, IndexError, ValueError) as err:
            raise OODError(f"{where}: malformed ({err})") from None
        if basis.ndim != 2 or basis.shape != (len(var), len(mean)):
            raise OODError(f"{where}: basis {basis.shape} does not fit mean {mean.shape} / variances {var.shape}")
        if not (np.all(var > 0) and res > 0 and math.isfinite(res) and np.all(np.isfinite(basis))):
            raise OODError(f"{where}: variances must be positive and finite")
        return cls(mean, basis, var, res, feature)


def fit_stats(features: np.ndarray, components: int, feature: str = "centered_tokens") -> OODStats:
    """PPCA of (N, D) features (``frame_features(..., feature)``). The eigen-decomposition of the N x N
    Gram matrix: N (hundreds of frames) is far below D (P * d, thousands), so this is the cheap side."""
    x = np.asarray(features, np.float64)
    n, dim = x.shape
    k = int(min(components, n - 1, dim - 1))
    if k < 1:
        raise OODError(f"need at least 3 frames to fit OOD statistics, got {n}")
    mean = x.mean(axis=0)
    xc = x - mean
    evals, evecs = np.linalg.eigh(xc @ xc.T)
    order = np.argsort(evals)[::-1]
    evals, evecs = np.maximum(evals[order], 0.0), evecs[:, order]
    top = evals[:k]
    basis = (evecs[:, :k].T @ xc) / np.sqrt(np.maximum(top, 1e-12))[:, None]
    total = float((xc * xc).sum())
    residual_var = max(total - float(top.sum()), 1e-12) / n / (dim - k)
    return OODStats(mean.astype(np.float32), basis.astype(np.float32), (top / n).astype(np.float32),
                    float(residual_var), feature)


def window_means(scores: np.ndarray, window: int) -> np.ndarray:
    """Mean of every run of ``window`` consecutive scores (all of them when there are fewer)."""
    s = np.asarray(scores, np.float64)
    if len(s) == 0:
        return np.zeros(0)
    if len(s) < window:
        return np.array([s.mean()])
    c = np.concatenate([[0.0], np.cumsum(s)])
    return (c[window:] - c[:-window]) / window


def save_stats(path: str | Path, stats: OODStats) -> None:
    from safetensors.numpy import save_file

    from edge_runtime.atomic_write import atomic_writer

    # through atomic_writer for its mode too: safetensors creates files 0600, and a bundle copied to a
    # kiosk is read by the runtime's own user
    with atomic_writer(Path(path)) as tmp:
        save_file(stats.arrays(), str(tmp))


def load_stats(path: str | Path, feature: str = "centered_tokens") -> OODStats:
    from safetensors.numpy import load_file

    try:
        arrays = load_file(str(path))
    except Exception as err:  # safetensors raises several types for damaged files
        raise OODError(f"{path}: unreadable ({' '.join(str(err).split())[:120]})") from None
    return OODStats.from_arrays(arrays, str(path), feature)


@dataclass(frozen=True)
class OODConfig:
    """The manifest's "ood" section, checked."""
    stats: OODStats
    threshold: float
    window: int
    min_frames: int


OOD_UNUSABLE = "OOD statistics unusable"  # a bundle's statistics that are there but cannot be used


def ood_from_bundle(bundle) -> tuple[OODConfig | None, str | None]:
    """-> (config, None), or (None, why there is no OOD signal) for bundles without usable stats."""
    from edge_runtime.file_hash import sha256_file

    sec = bundle.manifest.get("ood")
    if not isinstance(sec, dict):
        return None, ("bundle has no OOD statistics (exported before lvm-export wrote them, or from too little "
                      "training footage to set a threshold)")
    try:
        feature = sec.get("feature")
        if feature not in FEATURES:
            raise OODError(f"feature {feature!r}, this runtime computes {', '.join(FEATURES)}")
        path = Path(bundle.path) / str(sec.get("file", OOD_FILE))
        if not path.is_file():
            raise OODError(f"{path.name} listed in the manifest is missing")
        if sec.get("sha256") and sha256_file(path) != sec["sha256"]:
            raise OODError(f"{path.name} does not match its sha256 in the manifest")
        stats = load_stats(path, feature)
        if stats.dim != bundle.cfg.backbone.tokens_per_frame * bundle.cfg.backbone.dim:
            raise OODError(f"{path.name} is for {stats.dim}-value features, the model's tokens have "
                           f"{bundle.cfg.backbone.tokens_per_frame * bundle.cfg.backbone.dim}")
        threshold, window = float(sec["threshold"]), int(sec["window_frames"])
        min_frames = int(sec.get("min_frames", window))
        if not (math.isfinite(threshold) and threshold > 0 and window >= 1 and 1 <= min_frames <= window):
            raise OODError("threshold, window_frames or min_frames out of range")
    except (OODError, KeyError, TypeError, ValueError) as err:
        return None, f"{OOD_UNUSABLE} ({' '.join(str(err).split())[:160]})"
    return OODConfig(stats, threshold, window, min_frames), None


class OODMonitor:
    """The last ``window`` frames' scores in a ring buffer (constant memory) and their mean.

    ``update`` is called by the engine for every ingested stream frame (under its intake lock);
    ``status`` may be called from any thread."""

    def __init__(self, config: OODConfig | None, note: str | None = None) -> None:
        self.config = config
        self.note = note
        self._lock = threading.Lock()
        self._scores = np.zeros(config.window if config else 0, np.float64)
        self.reset()

    @classmethod
    def for_bundle(cls, bundle) -> "OODMonitor":
        return cls(*ood_from_bundle(bundle))

    @property
    def enabled(self) -> bool:
        return self.config is not None

    def reset(self) -> None:
        with self._lock:
            self._n = 0      # scores held (at most window)
            self._next = 0   # ring position of the next score
            self._seen = 0   # frames scored since the last reset

    def update(self, tokens: np.ndarray) -> None:
        """Score (N, P, d) or (P, d) tokens of consecutive stream frames."""
        if self.config is None:
            return
        scores = self.config.stats.scores(tokens)
        w = self.config.window
        with self._lock:
            for s in scores[-w:]:
                self._scores[self._next] = s
                self._next = (self._next + 1) % w
                self._n = min(self._n + 1, w)
            self._seen += len(scores)

    def status(self) -> dict[str, Any]:
        """{"score", "threshold", "flag", "frames", "window"}: score is the mean of the last
        ``frames`` frames' scores; flag is None until ``min_frames`` frames were scored (and always
        for bundles without statistics, with a note saying why)."""
        c = self.config
        if c is None:
            return {"score": None, "threshold": None, "flag": None, "frames": 0, "window": None,
                    "note": self.note}
        with self._lock:
            n = self._n
            score = float(self._scores[:n].mean()) if n else None
        out: dict[str, Any] = {"score": None if score is None else round(score, 4),
                               "threshold": round(c.threshold, 4),
                               "flag": None if n < c.min_frames else bool(score > c.threshold),
                               "frames": n, "window": c.window}
        if n < c.min_frames:
            out["note"] = f"{n} of the {c.min_frames} frames needed for a decision"
        return out
