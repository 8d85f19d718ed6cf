"""Work a batch of queries need not do twice: identical heads rows and crops already encoded.

Many clients often ask the same thing at once (dashboards polling, a catalog product asked by
every kiosk), and the heads graph costs about the same per row however the batch is made up: its
encoder attends over memory + the query's object tokens for every row. So a row whose inputs equal
an earlier row's is computed once and its outputs copied; a crop whose pixels were encoded before
reuses those tokens. Answers are unchanged: the graph maps each row's inputs to its outputs alone.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Callable

import numpy as np

from edge_runtime.query.answers import HeadBatch
from edge_runtime.query.types import BY_NAME


def unique_rows(batch: HeadBatch | dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(keep, inverse): the rows of ``batch`` (a HeadBatch, or per-row arrays by name) with distinct
    inputs, and per row the index into ``keep`` of the row that answers it (``outputs[keep][inverse]``
    == ``outputs``)."""
    first: dict[bytes, int] = {}
    keep: list[int] = []
    feed = batch.as_feed() if isinstance(batch, HeadBatch) else batch
    inverse = np.empty(len(next(iter(feed.values()))), np.int64)
    if len(inverse) == 1:  # one row is its own: nothing to hash
        inverse[0] = 0
        return np.zeros(1, np.int64), inverse
    for i in range(len(inverse)):
        h = hashlib.blake2b(digest_size=16)
        for name in sorted(feed):
            h.update(np.ascontiguousarray(feed[name][i]).tobytes())
        j = first.setdefault(h.digest(), len(keep))
        if j == len(keep):
            keep.append(i)
        inverse[i] = j
    return np.asarray(keep, np.int64), inverse


def unique_queries(reqs: list[dict], windows: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """(keep, inverse) as ``unique_rows`` gives, for checked requests over their ``windows``, without
    hashing their object tokens: two requests ask the same when type, activity (where the type takes
    one), window and object tokens agree, and the tokens agree when they are the same array (crops are
    encoded once through ``CropTokens``, so every request for one crop holds one array). Hashing the
    tokens (tens of kB a row) cost more than the answer-step rows it saved."""
    first: dict[tuple, int] = {}
    keep: list[int] = []
    inverse = np.empty(len(reqs), np.int64)
    for i, (r, w) in enumerate(zip(reqs, windows)):
        qt = BY_NAME[r["type"]]
        tok = r.get("object_tokens") if qt.takes_object else None
        key = (qt.id, r.get("activity") if qt.takes_activity else None, float(w[0]), float(w[1]),
               None if tok is None else id(tok))
        j = first.setdefault(key, len(keep))
        if j == len(keep):
            keep.append(i)
        inverse[i] = j
    return np.asarray(keep, np.int64), inverse


class CropTokens:
    """A bounded LRU of object-crop tokens keyed by the crop's pixels (shape + bytes)."""

    def __init__(self, encode: Callable[[list[np.ndarray]], np.ndarray], size: int = 128) -> None:
        self._encode, self.size = encode, int(size)
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(img: np.ndarray) -> bytes:
        img = np.ascontiguousarray(img)
        h = hashlib.blake2b(repr((img.shape, img.dtype.str)).encode(), digest_size=16)
        h.update(img.tobytes())
        return h.digest()

    def __call__(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Tokens per image; the images not seen before go through one encode call together."""
        keys = [self.key(img) for img in images]
        with self._lock:
            found = {k: self._cache[k] for k in keys if k in self._cache}
            for k in found:
                self._cache.move_to_end(k)
        todo: dict[bytes, np.ndarray] = {}
        for k, img in zip(keys, images):
            if k not in found:
                todo.setdefault(k, img)
        if todo:
            toks = self._encode(list(todo.values()))
            with self._lock:
                for k, tok in zip(todo, toks):
                    tok = np.array(tok, np.float32)
                    tok.flags.writeable = False  # shared by every query that sends this crop
                    found[k] = self._cache[k] = tok
                    self._cache.move_to_end(k)
                while len(self._cache) > self.size:
                    self._cache.popitem(last=False)
        return [found[k] for k in keys]

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
