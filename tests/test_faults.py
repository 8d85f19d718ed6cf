"""Faults the reliability suite (tools/reliability.py) found, each pinned by a test."""
import os

import numpy as np

from edge_runtime import snapshot as snap


def test_a_power_cut_mid_snapshot_leaves_no_temp_file_after_the_restart(tmp_path):
    # A SIGKILL inside a snapshot write leaves the atomic writer's temp file behind; 100 power cuts
    # left ~60 of them (up to a snapshot's size each) until a restart started removing them.
    good = snap.write_snapshot(tmp_path / snap.SNAPSHOT_NAME, {"x": np.arange(4.0)}, {"bundle_id": "b@1"})
    (tmp_path / f".{snap.SNAPSHOT_NAME}.abc123.tmp").write_bytes(good.read_bytes()[:100])
    (tmp_path / "user-notes.tmp").write_text("not ours")
    restored, warning = snap.restore(tmp_path, "b@1")
    assert warning is None and restored is not None
    np.testing.assert_array_equal(restored.arrays["x"], np.arange(4.0))
    assert sorted(os.listdir(tmp_path)) == [snap.SNAPSHOT_NAME, "user-notes.tmp"]
