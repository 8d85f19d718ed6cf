"""Snapshots of the stream state: atomic, checksummed npz files, never pickle.

Layout of ``<state-dir>/snapshot.npz``: the engine's fixed-shape arrays plus ``__meta__``, a uint8
array holding JSON (format, bundle id, saved-at wall time, stream clock, source label, the source's
identity as ``source_uri`` — a memory is never continued with another source — and the sha256 of
every array). Written to a temp file in the same folder, fsync'd, renamed over the old snapshot,
then the folder is fsync'd: a crash leaves either the old snapshot or the new one, never half.

Reading checks the zip CRCs (numpy's zipfile does), the format, and every array's sha256. A file
that fails any check is renamed aside (``snapshot.npz.corrupt-<UTC time>``), never deleted: it is
the user's data. A snapshot written by another bundle is likewise moved aside (``.other-bundle-``)
so that the next periodic snapshot does not overwrite it.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.atomic_write import atomic_writer, set_aside

FORMAT = "lvm-edge-snapshot/1"
SNAPSHOT_NAME = "snapshot.npz"
META_KEY = "__meta__"


class SnapshotError(ValueError):
    """A snapshot that cannot be used; the message is one line."""


def _digest(arr: np.ndarray) -> str:
    arr = np.ascontiguousarray(arr)
    h = hashlib.sha256()
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def write_snapshot(path: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """Atomically write arrays + JSON meta (temp file, fsync, rename, fsync folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for k, v in arrays.items():
        if np.asarray(v).dtype == object:
            raise SnapshotError(f"array '{k}' has dtype object; snapshots hold plain arrays only")
    full = dict(meta, format=FORMAT, arrays={k: _digest(np.asarray(v)) for k, v in arrays.items()})
    blob = np.frombuffer(json.dumps(full, sort_keys=True).encode(), np.uint8)
    # private (0600): the stream's memory is the user's data
    with atomic_writer(path, mode=0o600) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{META_KEY: blob}, **{k: np.asarray(v) for k, v in arrays.items()})
    return path


def read_snapshot(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """-> (arrays, meta). Raises SnapshotError on anything wrong (truncated, bit flips, not ours)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SnapshotError(f"{path}: unreadable ({err.strerror})") from None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
        # numpy's own words for bytes it cannot read as arrays suggest loading pickles: never here
        why = "not an archive of arrays" if "pickle" in str(err) else " ".join(str(err).split())[:120]
        raise SnapshotError(f"{path}: damaged snapshot ({why or type(err).__name__})") from None
    blob = arrays.pop(META_KEY, None)
    if blob is None or blob.dtype != np.uint8:
        raise SnapshotError(f"{path}: not an lvm-edge snapshot (no metadata)")
    try:
        meta = json.loads(blob.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SnapshotError(f"{path}: damaged snapshot (metadata is not JSON)") from None
    if meta.get("format") != FORMAT:
        raise SnapshotError(f"{path}: snapshot format {meta.get('format')!r}, this runtime reads {FORMAT}")
    sums = meta.get("arrays") or {}
    if set(sums) != set(arrays):
        raise SnapshotError(f"{path}: damaged snapshot (array list differs from its checksum list)")
    for k, v in arrays.items():
        if _digest(v) != sums[k]:
            raise SnapshotError(f"{path}: damaged snapshot (checksum mismatch in '{k}')")
    return arrays, meta


@dataclass
class Restored:
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    path: Path


def remove_unfinished(state_dir: str | Path) -> int:
    """Delete the temp files of snapshot writes that a crash or power cut interrupted -> how many.

    They are never a complete snapshot (the rename is what completes one), yet each is up to a
    snapshot's size: a box that loses power often would otherwise fill its disk with them."""
    n = 0
    for tmp in Path(state_dir).glob(f".{SNAPSHOT_NAME}.*.tmp"):
        try:
            tmp.unlink()
            n += 1
        except OSError:
            pass
    return n


def restore(state_dir: str | Path, bundle_id: str) -> tuple[Restored | None, str | None]:
    """Load ``<state_dir>/snapshot.npz`` if it is sound and for ``bundle_id``, after removing the
    temp files of interrupted writes (the runtime starting here is the state dir's only writer).

    -> (restored or None, one warning line or None). Never raises for a bad file: it is set aside."""
    remove_unfinished(state_dir)
    path = Path(state_dir) / SNAPSHOT_NAME
    if not path.exists():
        return None, None
    try:
        arrays, meta = read_snapshot(path)
    except SnapshotError as err:
        try:
            aside = set_aside(path, "corrupt")
            return None, f"{err}; starting fresh (kept as {aside.name})"
        except OSError as move_err:
            return None, f"{err}; starting fresh (could not move it aside: {move_err.strerror})"
    if meta.get("bundle_id") != bundle_id:
        aside = set_aside(path, "other-bundle")
        return None, (f"{path}: snapshot is for bundle {meta.get('bundle_id')}, not {bundle_id}; "
                      f"starting fresh (kept as {aside.name}: renamed back to {path.name}, the bundle that wrote "
                      f"it restores it)")
    return Restored(arrays, meta, path), None
