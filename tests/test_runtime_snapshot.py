"""Snapshots: atomic writes, checksums, corrupted files set aside (never deleted), no pickle."""
import os

import numpy as np
import pytest

from edge_runtime.engine import snapshot as snap


def _arrays():
    rng = np.random.default_rng(0)
    return {"memory_mem": rng.standard_normal((1, 8, 4)).astype(np.float32),
            "memory_mem_p": np.arange(8, dtype=np.int64)[None], "clock": np.array([0.0, 16.0, 20.0])}


def test_roundtrip_keeps_arrays_and_meta(tmp_path):
    p = snap.write_snapshot(tmp_path / "snapshot.npz", _arrays(), {"bundle_id": "b@1", "saved_at": 5.0})
    arrays, meta = snap.read_snapshot(p)
    assert meta["bundle_id"] == "b@1" and meta["format"] == snap.FORMAT and set(meta["arrays"]) == set(_arrays())
    for k, v in _arrays().items():
        np.testing.assert_array_equal(arrays[k], v)
    assert sorted(os.listdir(tmp_path)) == ["snapshot.npz"]  # no temp files left


def test_a_failed_write_leaves_the_old_snapshot(tmp_path, monkeypatch):
    p = snap.write_snapshot(tmp_path / "snapshot.npz", _arrays(), {"bundle_id": "b@1"})
    old = p.read_bytes()

    def crash(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(snap.np, "savez", crash)
    with pytest.raises(OSError):
        snap.write_snapshot(p, {"x": np.zeros(3)}, {"bundle_id": "b@1"})
    assert p.read_bytes() == old
    assert sorted(os.listdir(tmp_path)) == ["snapshot.npz"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_damaged_snapshot_is_set_aside_with_one_warning(tmp_path, damage):
    p = snap.write_snapshot(tmp_path / "snapshot.npz", _arrays(), {"bundle_id": "b@1"})
    data = bytearray(p.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        at = bytes(data).find(_arrays()["memory_mem"].tobytes())  # inside an array's payload
        data[at + 5] ^= 0x01
    elif damage == "garbage":
        data = bytearray(b"hello, not a zip")
    else:
        data = bytearray()
    p.write_bytes(bytes(data))
    restored, warning = snap.restore(tmp_path, "b@1")
    assert restored is None
    assert "starting fresh (kept as snapshot.npz.corrupt-" in warning and "\n" not in warning
    kept = [f for f in os.listdir(tmp_path) if f.startswith("snapshot.npz.corrupt-")]
    assert len(kept) == 1 and (tmp_path / kept[0]).read_bytes() == bytes(data)  # the user's bytes, untouched
    assert not p.exists()


def test_checksum_catches_a_rewritten_array(tmp_path):
    p = snap.write_snapshot(tmp_path / "snapshot.npz", _arrays(), {"bundle_id": "b@1"})
    arrays, meta = snap.read_snapshot(p)
    arrays["clock"] = arrays["clock"] + 1  # a valid zip whose content no longer matches its checksums
    import json
    blob = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(p, **{snap.META_KEY: blob}, **arrays)
    with pytest.raises(snap.SnapshotError, match="checksum mismatch in 'clock'"):
        snap.read_snapshot(p)


def test_pickled_content_is_never_loaded(tmp_path):
    p = tmp_path / "snapshot.npz"
    np.savez(p, evil=np.array([{"a": 1}], dtype=object))
    with pytest.raises(snap.SnapshotError, match="damaged snapshot"):
        snap.read_snapshot(p)
    with pytest.raises(snap.SnapshotError, match="object"):
        snap.write_snapshot(p, {"evil": np.array([{"a": 1}], dtype=object)}, {})


def test_snapshot_of_another_bundle_is_kept_aside(tmp_path):
    snap.write_snapshot(tmp_path / "snapshot.npz", _arrays(), {"bundle_id": "other@2"})
    restored, warning = snap.restore(tmp_path, "b@1")
    assert restored is None and "is for bundle other@2, not b@1" in warning
    assert any(f.startswith("snapshot.npz.other-bundle-") for f in os.listdir(tmp_path))


def test_no_snapshot_is_no_warning(tmp_path):
    assert snap.restore(tmp_path, "b@1") == (None, None)
