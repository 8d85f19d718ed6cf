"""lvm-train --resume keeps what a run finished after stage 1.

The reader stage (about 90 minutes for lvm-tiny) and the event stage are not resumable mid-way, but a
run stopped after one of them need not train it again. On --resume, when the final checkpoint already
holds the weights this run would write (``export.model.checkpoint.holds_checkpoint``: stage 1 had no
steps left), the file is left as it is, and a stage's file is kept when it was trained on that very
file (its ``checkpoint_sha256``) with the steps, seed and start this run asks for.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable


def finished_stage(path: Path, checkpoint: Path, read_meta: Callable[[Path], dict], wanted: dict) -> dict | None:
    """``path``'s metadata (JSON values decoded) when it is a finished stage this run would write again:
    trained on ``checkpoint`` as it is now, its ``train`` section agreeing with ``wanted``; else None."""
    from edge_runtime.file_hash import sha256_file

    if not path.is_file():
        return None
    try:
        meta = read_meta(path)
    except ValueError:  # damaged or foreign: trained again
        return None
    train = meta.get("train") if isinstance(meta.get("train"), dict) else {}
    if meta.get("checkpoint_sha256") != sha256_file(checkpoint):
        return None
    return meta if all(train.get(k) == v for k, v in wanted.items()) else None


def keep_or_train(stage: str, keep: bool, path: Path, checkpoint: Path, read_meta: Callable[[Path], dict],
                  wanted: dict, say, train: Callable[[], dict]) -> dict:
    """The stage's metadata: its finished file's when ``keep`` (a resumed run whose checkpoint was left as
    it is) and ``finished_stage`` accepts it, else ``train()``'s."""
    meta = finished_stage(path, checkpoint, read_meta, wanted) if keep else None
    if meta is None:
        return train()
    say(f"lvm-train: {stage}: {path} was trained on this checkpoint as asked: kept (--resume)")
    return meta


def read_reader_meta(cfg) -> Callable[[Path], dict]:
    from export.model.reader import load_reader

    return lambda path: load_reader(path, cfg)[2]


def read_event_meta(cfg) -> Callable[[Path], dict]:
    from export.model.event_head import load_event_head

    return lambda path: load_event_head(path, cfg.backbone.dim, cfg.backbone.grid)[1]
