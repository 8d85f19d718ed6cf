"""Where the export side keeps what it can reuse between runs: $LVM_EDGE_CACHE, default ~/.cache/lvm-edge.

Backbone tokens of generated videos live under ``tokens/``; deleting the folder only costs the time to
make them again."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("LVM_EDGE_CACHE") or Path.home() / ".cache" / "lvm-edge")
