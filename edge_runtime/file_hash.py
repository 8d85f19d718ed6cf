"""The sha256 of a file, read in chunks: one routine for every hash a manifest, a snapshot or a
reader records (bundles, OOD statistics, readers, calibration inputs)."""
from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
