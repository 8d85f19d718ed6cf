"""The track labeler's model: a small bidirectional GRU over one track's per-frame features, in numpy.

It reads a track's frames (``track_rows.features``: detected or not, score, held, box, zone of the
centre, scanner light, motion) and gives each frame p(activity) over ``none`` and the item
activities. Trained by ``export/train/track_labels.py`` on the event head's own detections of
training videos (the tracker and zones the runtime uses), so it learns the head's habits (an item
read as held while it rests on the scanner, a scan whose light the hand hides) that the geometric
labeler's fixed rules cannot follow. The runtime never imports torch: the weights are a safetensors
file and the recurrences are PyTorch's GRU equations here (``export`` checks the two agree).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = "lvm-track-labels/1"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


@dataclass
class SequenceModel:
    """Weights (PyTorch's names: ``inp.*``, ``gru.weight_ih_l{k}[_reverse]`` ..., ``out.*``), the
    feature normalisation and the class names (``none`` first)."""

    weights: dict[str, np.ndarray]
    mean: np.ndarray
    sd: np.ndarray
    classes: tuple[str, ...]
    layers: int
    meta: dict

    @classmethod
    def load(cls, path: str | Path) -> SequenceModel:
        """ValueError (one line) for a file that is not a track labeler's weights."""
        from safetensors.numpy import load_file
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
            arrays = load_file(str(path))
        except Exception as err:  # noqa: BLE001 - any unreadable file is one line to the user
            raise ValueError(f"{path}: not readable as track labeler weights ({err})") from None
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not track labeler weights (format {meta.get('format')!r}, needs {FORMAT})")
        info = json.loads(meta.get("info", "{}"))
        classes = tuple(json.loads(meta.get("classes", "[]")))
        layers = int(meta.get("layers", 0))
        need = ["inp.weight", "inp.bias", "out.weight", "out.bias", "feature_mean", "feature_sd"]
        need += [f"gru.{w}_l{k}{s}" for k in range(layers) for s in ("", "_reverse")
                 for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        if missing := [n for n in need if n not in arrays]:
            raise ValueError(f"{path}: track labeler weights lack {', '.join(missing[:3])}")
        if not classes or classes[0] != "none" or arrays["out.weight"].shape[0] != len(classes):
            raise ValueError(f"{path}: track labeler classes do not match its output layer")
        w = {k: v.astype(np.float32) for k, v in arrays.items()}
        return cls(w, w.pop("feature_mean"), w.pop("feature_sd"), classes, layers, info)

    @property
    def activities(self) -> tuple[str, ...]:
        return self.classes[1:]

    @property
    def fps(self) -> float | None:
        """The frame rate it was trained at (its features count frames), None if the file does not say."""
        return float(self.meta["fps"]) if "fps" in self.meta else None

    def fits(self, fps: float) -> bool:
        """Whether it reads frames at ``fps`` (a file that does not say is taken at its word)."""
        return self.fps is None or abs(self.fps - float(fps)) <= 1e-6

    @property
    def features(self) -> int:
        return len(self.mean)

    def probs(self, seqs: list[np.ndarray]) -> list[np.ndarray]:
        """Per-frame features of B tracks ((T_b, F) each) -> p(class) per frame ((T_b, C) each), all
        tracks through the recurrence at once (the time loop is the cost: one step serves every track)."""
        if not seqs:
            return []
        lengths = [len(s) for s in seqs]
        if any(n == 0 for n in lengths) or any(s.shape[1] != self.features for s in seqs):
            raise ValueError(f"each track needs at least one frame of {self.features} features")
        w = self.weights
        T, B = max(lengths), len(seqs)
        x = np.zeros((B, T, self.features), np.float32)
        for b, s in enumerate(seqs):
            x[b, :lengths[b]] = (s - self.mean) / self.sd
        h = np.maximum(x @ w["inp.weight"].T + w["inp.bias"], 0.0)
        for k in range(self.layers):
            fwd = self._direction(h, lengths, f"_l{k}", reverse=False)
            bwd = self._direction(h, lengths, f"_l{k}_reverse", reverse=True)
            h = np.concatenate([fwd, bwd], axis=-1)
        logits = h @ w["out.weight"].T + w["out.bias"]
        logits -= logits.max(-1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(-1, keepdims=True)
        return [p[b, :n] for b, n in enumerate(lengths)]

    def _direction(self, x: np.ndarray, lengths: list[int], suffix: str, *, reverse: bool) -> np.ndarray:
        """One GRU direction over (B, T, I) -> (B, T, H). The reverse one reads each track from its own
        last frame (tracks are padded at the end, so each is flipped within its length)."""
        w = self.weights
        w_ih, w_hh = w[f"gru.weight_ih{suffix}"], w[f"gru.weight_hh{suffix}"]
        b_ih, b_hh = w[f"gru.bias_ih{suffix}"], w[f"gru.bias_hh{suffix}"]
        B, T, _ = x.shape
        H = w_hh.shape[1]
        if reverse:
            x = np.stack([np.concatenate([x[b, :n][::-1], x[b, n:]]) for b, n in enumerate(lengths)])
        # the input's share of every step at once, time-major so each step's slice is contiguous
        gi = np.ascontiguousarray((x @ w_ih.T + b_ih).transpose(1, 0, 2))   # (T, B, 3H)
        w_hh_t = np.ascontiguousarray(w_hh.T)
        out = np.empty((T, B, H), np.float32)
        h = np.zeros((B, H), np.float32)
        for t in range(T):
            gh = h @ w_hh_t
            gh += b_hh
            g = gi[t]
            rz = _sigmoid(g[:, :2 * H] + gh[:, :2 * H])
            n = np.tanh(g[:, 2 * H:] + rz[:, :H] * gh[:, 2 * H:])
            h = n + rz[:, H:] * (h - n)   # (1 - z) * n + z * h
            out[t] = h
        out = out.transpose(1, 0, 2)
        if reverse:
            out = np.stack([np.concatenate([out[b, :n][::-1], out[b, n:]]) for b, n in enumerate(lengths)])
        return out
