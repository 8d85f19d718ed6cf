"""Staff's verdicts, learnt: per lane and rule, how likely a new alert is right, and a gate that holds
back the alerts staff would likely call false.

``fit`` takes the alerts staff judged (``confirmed`` and ``customer_fixed`` are right, ``false_alert``
is not) and fits one logistic regression per (stream, rule) on what an alert says about itself when it
is raised (``features``): its confidence, how long its event lasted, where the item was and how large.
The rules' thresholds are the same for every lane; the verdicts are this lane's camera and staff. A
pair is fitted once it has ``min_verdicts`` verdicts with at least ``MIN_EACH`` of each kind; until then
its alerts carry no p(right).

With ``alerts.verifier.hold_below`` set (0, the default, holds none: measured on held-out generator
videos, holding at 0.5 held more right alerts than false ones, docs/alerts.md), an alert whose
p(right) is below it is held: stored and listed with ``held`` true, not
sent to the sinks and not nudged, so staff can still judge it (and the next fit learns from that).
A model that would hold more than ``MAX_RIGHT_HELD`` of its own right verdicts does not tell this
lane's right alerts from its false ones, it only learnt that the rule is mostly wrong here: it scores
its alerts and holds none (silencing a rule is a decision for its thresholds, or for turning it off).
The model is a JSON file (``<state dir>/verifier.json``, written atomically), not a pickle: its means,
scales and weights. Numpy's Newton steps fit it in milliseconds; scikit-learn would add SciPy's
~100 MB to a kiosk's install for the same seven weights.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from edge_runtime.atomic_write import atomic_write_bytes

FILE = "verifier.json"
FORMAT = "lvm-edge/alert-verifier/1"
FEATURES = ("confidence", "log_seconds", "box_w", "box_h", "box_cx", "box_cy", "has_box")
RIGHT = ("confirmed", "customer_fixed")
OUTCOMES = (*RIGHT, "false_alert")
MIN_EACH = 3      # verdicts of each kind (right, false) before a pair is fitted: fewer learn a prior, not a pattern
MAX_RIGHT_HELD = 0.1  # of a pair's right verdicts its model may hold (fitted on them) and still hold alerts
L2 = 1.0          # ridge on the standardised weights: a few dozen verdicts must not fit noise
NEWTON_STEPS = 25


class VerifierError(ValueError):
    """A verifier file that cannot be used (one line)."""


def features(alert: Mapping[str, Any]) -> list[float]:
    """What an alert (or a rule's draft) says about itself when it is raised, as numbers (FEATURES)."""
    box = alert.get("box")
    seconds = max(0.0, float(alert["end"]) - float(alert["start"]))
    if box is None:
        w = h = cx = cy = 0.0
    else:
        x1, y1, x2, y2 = (float(v) for v in box)
        w, h, cx, cy = x2 - x1, y2 - y1, (x1 + x2) / 2, (y1 + y2) / 2
    return [float(alert.get("confidence", 0.0)), math.log1p(seconds), w, h, cx, cy, float(box is not None)]


@dataclass
class PairModel:
    """One (stream, rule)'s logistic regression on standardised FEATURES."""
    mean: list[float]
    scale: list[float]
    weights: list[float]          # intercept first
    right: int
    false: int
    right_held: int = 0           # of its own verdicts, what it would hold at the fit's hold_below
    false_held: int = 0
    holds: bool = True            # False: it scores, holds nothing (MAX_RIGHT_HELD)

    def p_right(self, alert: Mapping[str, Any]) -> float:
        z = (np.asarray(features(alert)) - np.asarray(self.mean)) / np.asarray(self.scale)
        logit = float(self.weights[0] + np.dot(self.weights[1:], z))
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, logit))))


def _fit_logistic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean, scale, weights, p of each row): L2-regularised logistic regression by Newton's method (convex:
    it converges)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-6] = 1.0      # a feature that never varies (no box on any alert) gets weight 0
    z = np.c_[np.ones(len(x)), (x - mean) / scale]
    ridge = L2 * np.diag(np.r_[0.0, np.ones(z.shape[1] - 1)])
    w = np.zeros(z.shape[1])
    for _ in range(NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -60, 60)))
        grad = z.T @ (p - y) + ridge @ w
        hess = (z * (p * (1 - p))[:, None]).T @ z + ridge
        step = np.linalg.solve(hess + 1e-9 * np.eye(len(w)), grad)
        w -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return mean, scale, w, 1.0 / (1.0 + np.exp(-np.clip(z @ w, -60, 60)))


@dataclass
class Verifier:
    """The fitted pairs, and what each pair without a model lacks."""
    pairs: dict[tuple[str, str], PairModel] = field(default_factory=dict)
    unfitted: dict[tuple[str, str], str] = field(default_factory=dict)
    fitted_at: float = 0.0

    def p_right(self, stream: str, alert: Mapping[str, Any]) -> float | None:
        """p(staff call it right) for an alert (or draft) of ``stream``; None when its pair has no model."""
        model = self.pairs.get((stream, str(alert["rule"])))
        return None if model is None else model.p_right(alert)

    def judge(self, stream: str, alert: Mapping[str, Any], hold_below: float) -> tuple[float | None, bool]:
        """(p_right or None, whether the alert is held)."""
        model = self.pairs.get((stream, str(alert["rule"])))
        if model is None:
            return None, False
        p = model.p_right(alert)
        return p, model.holds and p < hold_below

    def summary(self) -> dict[str, Any]:
        """stream -> rule -> {fitted, right, false, note}: what /v1/status and the learn command show."""
        out: dict[str, dict[str, Any]] = {}
        for (stream, rule), m in sorted(self.pairs.items()):
            out.setdefault(stream, {})[rule] = {
                "fitted": True, "right": m.right, "false": m.false, "holds": m.holds,
                "would_hold": {"right": m.right_held, "false": m.false_held},
                **({} if m.holds else {"note": f"it would hold {m.right_held} of its {m.right} right verdicts: "
                                               f"scores only (the rule is mostly wrong here: its thresholds)"})}
        for (stream, rule), why in sorted(self.unfitted.items()):
            out.setdefault(stream, {})[rule] = {"fitted": False, "note": why}
        return {"fitted_at": self.fitted_at or None, "features": list(FEATURES), "pairs": out}

    # -- the file --------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "fitted_at": self.fitted_at, "features": list(FEATURES),
                           "pairs": [{"stream": s, "rule": r, "mean": m.mean, "scale": m.scale, "weights": m.weights,
                                      "right": m.right, "false": m.false, "right_held": m.right_held,
                                      "false_held": m.false_held, "holds": m.holds}
                                     for (s, r), m in sorted(self.pairs.items())],
                           "unfitted": [{"stream": s, "rule": r, "note": n} for (s, r), n in sorted(self.unfitted.items())]},
                          indent=1) + "\n"

    def save(self, state_dir: str | Path) -> Path:
        path = Path(state_dir) / FILE
        atomic_write_bytes(path, self.to_json().encode())
        return path

    @classmethod
    def load(cls, state_dir: str | Path) -> Verifier | None:
        """The lane's verifier, None when none was fitted; VerifierError (one line) for a file it cannot use."""
        path = Path(state_dir) / FILE
        if not path.is_file():
            return None
        try:
            d = json.loads(path.read_text())
            if d.get("format") != FORMAT or d.get("features") != list(FEATURES):
                raise VerifierError(f"{path}: not a verifier of this version ({d.get('format')!r}); fit it again")
            n = len(FEATURES)
            pairs = {}
            for p in d["pairs"]:
                m = PairModel([float(v) for v in p["mean"]], [float(v) for v in p["scale"]],
                              [float(v) for v in p["weights"]], int(p["right"]), int(p["false"]),
                              int(p["right_held"]), int(p["false_held"]), bool(p["holds"]))
                if len(m.mean) != n or len(m.scale) != n or len(m.weights) != n + 1 or min(m.scale) <= 0 \
                        or not all(math.isfinite(v) for v in (*m.mean, *m.scale, *m.weights)):
                    raise VerifierError(f"{path}: the model of {p['stream']}/{p['rule']} is damaged; fit it again")
                pairs[(str(p["stream"]), str(p["rule"]))] = m
            unfitted = {(str(u["stream"]), str(u["rule"])): str(u["note"]) for u in d.get("unfitted", [])}
            return cls(pairs, unfitted, float(d.get("fitted_at", 0.0)))
        except VerifierError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise VerifierError(f"{path}: cannot be read ({' '.join(str(err).split())[:120]}); fit it again") from None


def fit(judged: Iterable[tuple[str, Mapping[str, Any], str]], *, min_verdicts: int, hold_below: float,
        now: float | None = None) -> Verifier:
    """A Verifier from ``judged``: (stream, alert or its dict, outcome) of the alerts staff judged (the
    outcome that counts). Pairs with fewer than ``min_verdicts`` verdicts, or fewer than MIN_EACH right
    or false, get no model and a note saying what they lack; a model that would hold more than
    MAX_RIGHT_HELD of its right verdicts at ``hold_below`` holds nothing."""
    by_pair: dict[tuple[str, str], list[tuple[list[float], float]]] = {}
    for stream, alert, outcome in judged:
        if outcome not in OUTCOMES:
            raise ValueError(f"{outcome!r} is not an outcome ({', '.join(OUTCOMES)})")
        by_pair.setdefault((stream, str(alert["rule"])), []).append((features(alert), float(outcome in RIGHT)))
    out = Verifier(fitted_at=time.time() if now is None else now)
    for pair, rows in by_pair.items():
        y = np.asarray([r[1] for r in rows])
        right, false = int(y.sum()), int(len(y) - y.sum())
        if len(rows) < min_verdicts or min(right, false) < MIN_EACH:
            out.unfitted[pair] = (f"{len(rows)} verdicts ({right} right, {false} false): a model needs "
                                  f"{min_verdicts}, at least {MIN_EACH} of each")
            continue
        mean, scale, w, p = _fit_logistic(np.asarray([r[0] for r in rows]), y)
        held = p < hold_below
        right_held, false_held = int((held & (y == 1)).sum()), int((held & (y == 0)).sum())
        out.pairs[pair] = PairModel(mean.tolist(), scale.tolist(), w.tolist(), right, false, right_held, false_held,
                                    holds=right_held <= MAX_RIGHT_HELD * right)
    return out
