"""Which product an item track shows, by appearance: each track's identity in the memory reader's space,
kept past the track's end, and its match against a product's pictures.

A bundle whose event head was exported with the memory reader gives every detection the reader's token
identity of its cell (``det_embed``), and embeds a picture of one product as the reader embeds a query
crop (``crop_embed``; edge_runtime/backends/bundle.py). The reader was trained to match the one against
the other: it is how its object answers find a pictured product. A track's identity is the
score-weighted mean of its detections' (tracker.py ``Track.identity``); its match with a product is the
best cosine over the product's pictures. So a product the bundle has no class for (a catalog entry of
the store's own) can still be matched to the tracks that handled it.

``TrackIdentities`` keeps the identity of each ended track (the newest ``MAX_KEPT``, as many as the item
events a stream keeps), so an event's track can be matched after the track is gone; live tracks are
read from the tracker.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .tracker import Track, unit

MAX_KEPT = 512   # ended tracks whose identity is kept (the item-event ring holds 512 events)


def match(identity: np.ndarray, pictures: np.ndarray) -> float:
    """Cosine of a track's identity (E,) with the best of a product's pictures (Q, E), unit rows."""
    return float(np.max(np.asarray(pictures, np.float32).reshape(-1, len(identity)) @ identity))


class TrackIdentities:
    """Identities of ended tracks, newest ``maxlen``; with the tracker's live ones, every event's track."""

    def __init__(self, maxlen: int = MAX_KEPT) -> None:
        self.maxlen = int(maxlen)
        self.ended: OrderedDict[int, np.ndarray] = OrderedDict()

    def record(self, tracks: list[Track]) -> None:
        for tr in tracks:
            ident = tr.identity
            if ident is None:
                continue
            self.ended[tr.track_id] = ident
            self.ended.move_to_end(tr.track_id)
        while len(self.ended) > self.maxlen:
            self.ended.popitem(last=False)

    def of(self, track_id: int, live: list[Track]) -> np.ndarray | None:
        """The identity of track ``track_id`` (live or ended), None when it has none or was forgotten."""
        for tr in live:
            if tr.track_id == track_id:
                return tr.identity
        return self.ended.get(int(track_id))

    def clear(self) -> None:
        self.ended.clear()

    # -- snapshots: ended identities (unit rows) and live tracks' sums, each row [track id, *vector]
    def state_dict(self, live: list[Track], dim: int) -> dict[str, np.ndarray]:
        """``dim``: the identities' width (rows of 1 + dim, an empty table too)."""
        sums = [(tr.track_id, tr.ident_sum) for tr in live if tr.ident_sum is not None]
        return {"identities": _rows(self.ended.items(), dim), "ident_live": _rows(sums, dim)}

    def load_state_dict(self, sd: dict[str, np.ndarray], live: list[Track]) -> None:
        """Arrays of ``state_dict``; a snapshot without them (a head without identity) restores none."""
        self.clear()
        for row in np.asarray(sd.get("identities", np.zeros((0, 1))), np.float64):
            self.ended[int(row[0])] = unit(row[1:])
        by_id = {tr.track_id: tr for tr in live}
        for row in np.asarray(sd.get("ident_live", np.zeros((0, 1))), np.float64):
            if int(row[0]) in by_id:
                by_id[int(row[0])].ident_sum = row[1:].astype(np.float32)
        while len(self.ended) > self.maxlen:
            self.ended.popitem(last=False)

    @staticmethod
    def max_nbytes(dim: int, max_tracks: int, maxlen: int = MAX_KEPT) -> int:
        return 0 if dim <= 0 else 8 * (1 + dim) * (int(maxlen) + int(max_tracks))


def _rows(pairs, dim: int) -> np.ndarray:
    return np.array([[tid, *v] for tid, v in pairs], np.float64).reshape(-1, 1 + dim)
