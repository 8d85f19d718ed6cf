"""The online SVD for training and evaluation: the device's own ``edge_runtime.memory.svd.OnlineSVD`` behind
torch tensors, so that the heads learn from exactly the SVD state the runtime gives them.

The SVD state is an input of the heads, never a function they differentiate (it is built from the
frozen backbone's tokens), so running its update in numpy loses nothing. One algorithm also means
one LAPACK: a torch update would pick other signs for the basis rows than the device does, and the
heads read those rows as tokens.
"""
from __future__ import annotations

import numpy as np
import torch

from edge_runtime.memory.svd import OnlineSVD, svd_from_config

_NUMPY_DTYPES = {torch.float64: np.float64, torch.float32: np.float32}


class TorchOnlineSVD:
    """``OnlineSVD`` taking and giving tensors (CPU); same constructor arguments and state."""

    def __init__(self, dim: int, n_components: int, forgetting: float = 1.0, center: bool = True, *,
                 energy_cutoff: float = 1e-6, reorth_every: int = 100, dtype: torch.dtype = torch.float64) -> None:
        if dtype not in _NUMPY_DTYPES:
            raise ValueError(f"dtype must be torch.float64 or torch.float32, got {dtype}")
        self._wrap(OnlineSVD(dim, n_components, forgetting, center, energy_cutoff=energy_cutoff,
                             reorth_every=reorth_every, dtype=_NUMPY_DTYPES[dtype]))

    @classmethod
    def from_config(cls, cfg) -> "TorchOnlineSVD":
        """An empty summary with the model config's settings (``svd_from_config``, as on the device)."""
        out = cls.__new__(cls)
        out._wrap(svd_from_config(cfg))
        return out

    def _wrap(self, svd: OnlineSVD) -> None:
        self.svd = svd
        self.dim, self.n_components = svd.dim, svd.n_components

    def reset(self) -> None:
        self.svd.reset()

    @property
    def basis(self) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.svd.basis))

    @property
    def singular_values(self) -> torch.Tensor:
        return torch.from_numpy(self.svd.singular_values)

    @property
    def mean(self) -> torch.Tensor:
        return torch.from_numpy(self.svd.mean)

    @property
    def rank(self) -> int:
        return self.svd.rank

    def padded(self, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(n_components, dim) basis and (n_components,) values, zero-padded: the heads' input."""
        st = self.svd.state_dict()
        return torch.from_numpy(st["svd_basis"]).to(dtype), torch.from_numpy(st["svd_singular_values"]).to(dtype)

    def update(self, rows: torch.Tensor | np.ndarray) -> "TorchOnlineSVD":
        if torch.is_tensor(rows):
            rows = rows.detach().cpu().numpy()
        self.svd.update(rows)
        return self

    def reorthogonalize(self) -> None:
        self.svd.reorthogonalize()

    def state_dict(self) -> dict[str, np.ndarray]:
        """The numpy OnlineSVD's snapshot arrays."""
        return self.svd.state_dict()
