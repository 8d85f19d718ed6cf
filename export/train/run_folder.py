"""The ``--out`` folder of a training run: what a new run there does with the files of one before."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path


def keep_previous_run(out: Path, name: str, inputs: list) -> Path | None:
    """Move a finished or stopped run's files in ``out`` (its checkpoint, reader, stage-1 state, log,
    summary) into ``out/previous-run-<UTC time>/``, so a new run there overwrites nothing; a file this
    run reads (``inputs``: --init-from and the like) is copied, not moved. None when there was none. A
    reader left beside this run's checkpoint would also be bundled with it by lvm-export."""
    files = [out / f for f in (f"{name}.safetensors", f"{name}-reader.safetensors", "checkpoint.safetensors",
                               "optimizer.safetensors", "train_state.json", "summary.json", "train_log.jsonl")]
    files = [f for f in files if f.is_file()]
    if not files:
        return None
    read = {Path(p).resolve() for p in inputs if p}
    dest = out / f"previous-run-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    n = 1
    while dest.exists():
        dest, n = out / f"previous-run-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.{n}", n + 1
    dest.mkdir()
    for f in files:
        (shutil.copy2 if f.resolve() in read else os.replace)(f, dest / f.name)
    return dest
