"""The online SVD update in torch, step for step the same as ``edge_runtime.svd.OnlineSVD``.

Training computes the SVD state the heads read with this version so that train and device agree;
``tests/test_model.py`` checks both against each other.
"""
from __future__ import annotations

import math

import numpy as np
import torch


class TorchOnlineSVD:
    def __init__(self, dim: int, n_components: int, forgetting: float = 1.0, center: bool = True, *,
                 energy_cutoff: float = 1e-6, reorth_every: int = 100, dtype: torch.dtype = torch.float64) -> None:
        if not 0.0 < forgetting <= 1.0:
            raise ValueError(f"forgetting must be in (0, 1], got {forgetting}")
        self.dim, self.n_components = dim, n_components
        self.forgetting, self.center = forgetting, center
        self.energy_cutoff, self.reorth_every, self.dtype = energy_cutoff, reorth_every, dtype
        self.reset()

    def reset(self) -> None:
        self._u = torch.zeros(self.dim, 0, dtype=self.dtype)
        self._s = torch.zeros(0, dtype=self.dtype)
        self._mean = torch.zeros(self.dim, dtype=self.dtype)
        self.count, self.updates = 0.0, 0

    @property
    def basis(self) -> torch.Tensor:
        return self._u.T

    @property
    def singular_values(self) -> torch.Tensor:
        return self._s

    @property
    def mean(self) -> torch.Tensor:
        return self._mean

    @property
    def rank(self) -> int:
        return int(self._s.shape[0])

    def padded(self, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(n_components, dim) basis and (n_components,) values, zero-padded: the heads' input."""
        basis = torch.zeros(self.n_components, self.dim, dtype=dtype)
        sv = torch.zeros(self.n_components, dtype=dtype)
        basis[: self.rank] = self.basis.to(dtype)
        sv[: self.rank] = self._s.to(dtype)
        return basis, sv

    @torch.no_grad()
    def update(self, rows: torch.Tensor) -> "TorchOnlineSVD":
        rows = torch.as_tensor(rows).to(self.dtype)
        if rows.ndim == 1:
            rows = rows[None]
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"rows must be (b, {self.dim}), got {tuple(rows.shape)}")
        if rows.shape[0] == 0:
            return self
        f, b = self.forgetting, rows.shape[0]
        new = rows.T
        n_old = f * self.count
        if self.center:
            block_mean = new.mean(dim=1)
            cols = new - block_mean[:, None]
            if n_old > 0:
                shift = math.sqrt(n_old * b / (n_old + b)) * (self._mean - block_mean)
                cols = torch.cat([cols, shift[:, None]], dim=1)
            self._mean = (n_old * self._mean + b * block_mean) / (n_old + b)
        else:
            cols = new
            self._mean = (n_old * self._mean + new.sum(dim=1)) / (n_old + b)
        self.count = n_old + b
        self._fold_in(cols, f)
        self.updates += 1
        if self.updates % self.reorth_every == 0:
            self.reorthogonalize()
        return self

    def _fold_in(self, cols: torch.Tensor, f: float) -> None:
        u, s = self._u, self._s
        proj = u.T @ cols
        resid = cols - u @ proj
        corr = u.T @ resid
        resid = resid - u @ corr
        proj = proj + corr
        q, qs, _ = torch.linalg.svd(resid, full_matrices=False)
        eps = torch.finfo(self.dtype).eps
        top = max(float(qs[0]) if qs.numel() else 0.0, float(s[0]) if s.numel() else 0.0, 1e-30)
        q = q[:, qs > max(resid.shape) * eps * top]
        r, k, b = s.shape[0], q.shape[1], cols.shape[1]
        core = torch.zeros(r + k, r + b, dtype=self.dtype)
        core[:r, :r] = torch.diag(f * s)
        core[:r, r:] = proj
        core[r:, r:] = q.T @ resid
        uc, sc, _ = torch.linalg.svd(core, full_matrices=False)
        energy = sc**2
        total = float(energy.sum())
        keep_n = int((energy >= self.energy_cutoff * total).sum()) if total > 0 else 0
        keep_n = min(keep_n, self.n_components)
        self._u = torch.cat([u, q], dim=1) @ uc[:, :keep_n]
        self._s = sc[:keep_n].clone()

    def reorthogonalize(self) -> None:
        if self.rank == 0:
            return
        q, rq = torch.linalg.qr(self._u)
        ur, sr, _ = torch.linalg.svd(rq * self._s[None, :])
        self._u, self._s = q @ ur, sr

    def state_dict(self) -> dict[str, np.ndarray]:
        """Same keys and layout as the numpy OnlineSVD's snapshot."""
        basis, sv = self.padded(self.dtype)
        return {"svd_basis": basis.numpy(), "svd_singular_values": sv.numpy(),
                "svd_mean": self._mean.numpy().copy(),
                "svd_meta": np.array([self.rank, self.count, self.updates], np.float64)}
