"""Online low-rank summary of a stream (MeMSVD, Ross et al. 2008 incremental SVD).

The state is a rank-r basis of the rows seen so far, their singular values, the running mean and
an effective count. Each update folds a block of new rows in with a forgetting factor f: old data is
weighted by f per update, so f=1 keeps everything and f<1 follows the recent stream.

This is the only implementation: the device runs it, and training and evaluation run it too
(``export.model.svd_torch`` only converts tensors), so the heads learn from the state they are given.
"""
from __future__ import annotations

import numpy as np


class OnlineSVD:
    """Incremental SVD with forgetting, mean tracking, energy cut-off and a rank cap.

    ``basis`` is (r, dim) with orthonormal rows, ``singular_values`` (r,) descending, ``mean`` (dim,).
    With ``center=False`` the summary is of the raw rows (the mean is still tracked but unused).
    """

    def __init__(
        self,
        dim: int,
        n_components: int,
        forgetting: float = 1.0,
        center: bool = True,
        *,
        energy_cutoff: float = 1e-6,
        reorth_every: int = 100,
        dtype: np.dtype | type = np.float64,
    ) -> None:
        if dim <= 0 or n_components <= 0:
            raise ValueError("dim and n_components must be positive")
        if not 0.0 < forgetting <= 1.0:
            raise ValueError(f"forgetting must be in (0, 1], got {forgetting}")
        self.dim = int(dim)
        self.n_components = int(n_components)
        self.forgetting = float(forgetting)
        self.center = bool(center)
        self.energy_cutoff = float(energy_cutoff)
        self.reorth_every = int(reorth_every)
        self.dtype = np.dtype(dtype)
        self.reset()

    # -- state -----------------------------------------------------------------------------
    def reset(self) -> None:
        self._u = np.zeros((self.dim, 0), self.dtype)  # columns are basis vectors
        self._s = np.zeros((0,), self.dtype)
        self._mean = np.zeros((self.dim,), self.dtype)
        self.count = 0.0
        self.updates = 0

    @property
    def basis(self) -> np.ndarray:
        return self._u.T

    @property
    def singular_values(self) -> np.ndarray:
        return self._s

    @property
    def mean(self) -> np.ndarray:
        return self._mean

    @property
    def rank(self) -> int:
        return int(self._s.shape[0])

    def state_dict(self) -> dict[str, np.ndarray]:
        """Fixed-shape arrays (padded to n_components) so snapshots are constant-size."""
        r, k = self.rank, self.n_components
        basis = np.zeros((k, self.dim), self.dtype)
        basis[:r] = self.basis
        sv = np.zeros((k,), self.dtype)
        sv[:r] = self._s
        return {
            "svd_basis": basis,
            "svd_singular_values": sv,
            "svd_mean": self._mean.copy(),
            "svd_meta": np.array([r, self.count, self.updates], np.float64),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        basis = np.asarray(state["svd_basis"], self.dtype)
        if basis.shape != (self.n_components, self.dim):
            raise ValueError(f"SVD state has basis {basis.shape}, expected {(self.n_components, self.dim)}")
        r, count, updates = (float(x) for x in state["svd_meta"])
        r = int(r)
        self._u = basis[:r].T.copy()
        self._s = np.asarray(state["svd_singular_values"], self.dtype)[:r].copy()
        self._mean = np.asarray(state["svd_mean"], self.dtype).copy()
        self.count, self.updates = count, int(updates)

    # -- update ----------------------------------------------------------------------------
    def update(self, rows: np.ndarray) -> "OnlineSVD":
        rows = np.asarray(rows, self.dtype)
        if rows.ndim == 1:
            rows = rows[None, :]
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"rows must be (b, {self.dim}), got {rows.shape}")
        if rows.shape[0] == 0:
            return self
        if not np.all(np.isfinite(rows)):
            raise ValueError("rows contain NaN or Inf")
        f = self.forgetting
        b = rows.shape[0]
        new = rows.T  # (dim, b) columns
        if self.center:
            block_mean = new.mean(axis=1)
            cols = new - block_mean[:, None]
            n_old = f * self.count
            if n_old > 0:
                # The mean shift between the old data and this block is itself a direction of variance.
                shift = np.sqrt(n_old * b / (n_old + b)) * (self._mean - block_mean)
                cols = np.concatenate([cols, shift[:, None].astype(self.dtype)], axis=1)
            self._mean = ((n_old * self._mean + b * block_mean) / (n_old + b)).astype(self.dtype)
            self.count = n_old + b
        else:
            cols = new
            n_old = f * self.count
            self._mean = ((n_old * self._mean + new.sum(axis=1)) / (n_old + b)).astype(self.dtype)
            self.count = n_old + b
        self._fold_in(cols, f)
        self.updates += 1
        if self.updates % self.reorth_every == 0:
            self.reorthogonalize()
        return self

    def _fold_in(self, cols: np.ndarray, f: float) -> None:
        u, s = self._u, self._s
        proj = u.T @ cols
        resid = cols - u @ proj
        # Second Gram-Schmidt pass: one pass loses orthogonality when cols lie mostly in span(u).
        corr = u.T @ resid
        resid -= u @ corr
        proj += corr
        # Orthonormal basis of the residual from its SVD, not QR: when the rank saturates
        # (r + b > dim) QR would hand back columns that are not orthogonal to u.
        q, qs, _ = np.linalg.svd(resid, full_matrices=False)
        tol = max(resid.shape) * np.finfo(self.dtype).eps * max(float(qs[0]) if qs.size else 0.0,
                                                                 float(s[0]) if s.size else 0.0, 1e-30)
        q = q[:, qs > tol]
        r, k, b = s.shape[0], q.shape[1], cols.shape[1]
        core = np.zeros((r + k, r + b), self.dtype)
        core[:r, :r] = np.diag(f * s)
        core[:r, r:] = proj
        core[r:, r:] = q.T @ resid
        uc, sc, _ = np.linalg.svd(core, full_matrices=False)
        energy = sc**2
        keep = energy >= self.energy_cutoff * energy.sum() if energy.sum() > 0 else np.zeros_like(sc, bool)
        keep_n = min(int(keep.sum()), self.n_components)
        self._u = (np.concatenate([u, q], axis=1) @ uc[:, :keep_n]).astype(self.dtype)
        self._s = sc[:keep_n].astype(self.dtype)

    def reorthogonalize(self) -> None:
        """Remove round-off drift without changing the summarised matrix U diag(s)."""
        if self.rank == 0:
            return
        q, rq = np.linalg.qr(self._u)
        ur, sr, _ = np.linalg.svd(rq * self._s[None, :])
        self._u = (q @ ur).astype(self.dtype)
        self._s = sr.astype(self.dtype)


def svd_from_config(cfg, *, forgetting: float | None = None) -> OnlineSVD:
    """An empty summary of a model's per-frame mean tokens, with the model config's settings: the
    one way the device, training, calibration and the benchmarks build it. ``forgetting`` replaces
    the config's factor, for studies of that setting."""
    return OnlineSVD(cfg.backbone.dim, cfg.svd.n_components, cfg.svd.forgetting if forgetting is None else forgetting,
                     energy_cutoff=cfg.svd.energy_cutoff, reorth_every=cfg.svd.reorth_every)
