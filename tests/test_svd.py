import numpy as np
import pytest

from edge_runtime.memory.svd import OnlineSVD


def _feed(svd, data, block):
    for i in range(0, len(data), block):
        svd.update(data[i : i + block])
    return svd


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("block", [1, 7, 30])
def test_equals_batch_svd_without_forgetting(center, block):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(90, 40)) @ rng.normal(size=(40, 40))
    svd = _feed(OnlineSVD(40, 40, forgetting=1.0, center=center, energy_cutoff=0.0), data, block)
    ref = data - data.mean(0) if center else data
    _, s_ref, vt = np.linalg.svd(ref, full_matrices=False)
    r = svd.rank
    assert r == 40
    np.testing.assert_allclose(svd.singular_values, s_ref[:r], rtol=1e-6)
    np.testing.assert_allclose(svd.mean, data.mean(0), rtol=1e-9, atol=1e-9)
    # Same subspace: projector difference is tiny.
    p = svd.basis.T @ svd.basis
    p_ref = vt[:r].T @ vt[:r]
    assert np.abs(p - p_ref).max() < 1e-6


def test_forgetting_equals_weighted_stack():
    rng = np.random.default_rng(1)
    f, block = 0.9, 5
    blocks = [rng.normal(size=(block, 12)) for _ in range(20)]
    svd = OnlineSVD(12, 12, forgetting=f, center=False, energy_cutoff=0.0)
    for b in blocks:
        svd.update(b)
    n = len(blocks)
    stack = np.concatenate([b * f ** (n - 1 - i) for i, b in enumerate(blocks)])
    s_ref = np.linalg.svd(stack, compute_uv=False)
    np.testing.assert_allclose(svd.singular_values, s_ref[: svd.rank], rtol=1e-6)


def test_truncated_residual_near_optimal():
    rng = np.random.default_rng(2)
    n, d, k = 600, 64, 10
    low = rng.normal(size=(n, k)) @ rng.normal(size=(k, d)) * 3.0
    data = low + 0.3 * rng.normal(size=(n, d))
    svd = _feed(OnlineSVD(d, k, forgetting=1.0, center=False), data, 8)
    u = svd.basis
    resid = np.linalg.norm(data - data @ u.T @ u)
    s = np.linalg.svd(data, compute_uv=False)
    optimal = np.sqrt((s[k:] ** 2).sum())
    assert resid <= 1.05 * optimal


def test_rank_saturation_stays_orthonormal():
    rng = np.random.default_rng(3)
    d = 8
    svd = OnlineSVD(d, 20, forgetting=0.95, center=True)
    for _ in range(30):
        svd.update(rng.normal(size=(13, d)))  # more columns than dim every time
    u = svd.basis
    assert svd.rank <= d
    assert np.abs(u @ u.T - np.eye(svd.rank)).max() < 1e-10
    assert np.all(np.isfinite(svd.singular_values))


def test_many_float32_rank1_updates_stay_orthonormal():
    rng = np.random.default_rng(4)
    d = 32
    svd = OnlineSVD(d, 10, forgetting=0.99, center=True, dtype=np.float32)
    mix = rng.normal(size=(6, d)).astype(np.float32)
    for _ in range(10_000):
        svd.update((rng.normal(size=(1, 6)).astype(np.float32) @ mix + 0.01 * rng.normal(size=(1, d))).astype(np.float32))
    u = svd.basis.astype(np.float64)
    assert svd.basis.dtype == np.float32
    assert np.abs(u @ u.T - np.eye(svd.rank)).max() < 1e-5


def test_state_roundtrip_and_bad_rows():
    rng = np.random.default_rng(5)
    a = OnlineSVD(16, 4, forgetting=0.95)
    a.update(rng.normal(size=(10, 16)))
    b = OnlineSVD(16, 4, forgetting=0.95)
    b.load_state_dict(a.state_dict())
    x = rng.normal(size=(5, 16))
    a.update(x)
    b.update(x)
    np.testing.assert_allclose(a.basis, b.basis)
    with pytest.raises(ValueError, match="rows must be"):
        a.update(np.zeros((3, 15)))
    with pytest.raises(ValueError, match="NaN"):
        a.update(np.full((2, 16), np.nan))


def test_torch_adapter_is_the_numpy_update():
    """Training and evaluation (export.model.svd_torch) run this same update: equal bits, tensors in and out."""
    torch = pytest.importorskip("torch")
    from export.model.svd_torch import TorchOnlineSVD

    rng = np.random.default_rng(6)
    a = OnlineSVD(24, 6, forgetting=0.95, reorth_every=5)
    b = TorchOnlineSVD(24, 6, forgetting=0.95, reorth_every=5)
    for _ in range(20):
        rows = rng.normal(size=(int(rng.integers(1, 12)), 24))
        a.update(rows)
        b.update(torch.from_numpy(rows))
    assert torch.is_tensor(b.basis) and b.rank == a.rank
    np.testing.assert_array_equal(b.basis.numpy(), a.basis)
    np.testing.assert_array_equal(b.singular_values.numpy(), a.singular_values)
    basis, sv = b.padded()
    assert basis.dtype == torch.float32 and basis.shape == (6, 24) and sv.shape == (6,)
    np.testing.assert_array_equal(basis.numpy(), a.state_dict()["svd_basis"].astype(np.float32))
    for key, val in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[key], val)
