"""Scan avoidance ("shrink") in the checkout generator: how often, and which items.

Three behaviours, each given to an item the shopper would otherwise buy (its chain scans and bags it):

- ``bagged_unscanned``: bagged straight from the basket, or from the counter after picking it up
  (any hold or inspect of its chain kept), never scanned;
- ``pass_around``: moved over the scanner without the scanner flashing (activity ``pass_around``),
  then bagged;
- ``left_in_basket``: never taken out of the basket; the shopper leaves with it.

Rates are probabilities per such item, one draw choosing at most one behaviour: ``B,P,L`` =
``0.5,0.5,0`` gives every bought item a behaviour (none is scanned: half are bagged unscanned, half
passed around), ``0.25,0.25,0`` about half of them. Items the shopper does not buy keep their chain. The choices come from their own random stream per session
(``[seed, SHRINK_STREAM, session]``), drawn whatever the rates, so shrink off leaves every video,
annotation and query exactly as without this module, and the same rates give the same items.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

BEHAVIOURS: tuple[str, ...] = ("bagged_unscanned", "pass_around", "left_in_basket")
SHRINK_STREAM = 8          # script_builder's random streams 0-7 are taken
FROM_BASKET_SHARE = 0.5    # of bagged_unscanned items: straight from the basket (else from the counter)


@dataclass(frozen=True)
class ShrinkRates:
    """Per-item probabilities of each behaviour (0-1, summing to at most 1)."""

    bagged_unscanned: float = 0.0
    pass_around: float = 0.0
    left_in_basket: float = 0.0

    def __post_init__(self) -> None:
        for name in BEHAVIOURS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0.0 <= v <= 1.0:
                raise ValueError(f"shrink rate {name} must be a number in 0..1, got {v!r}")
            object.__setattr__(self, name, float(v))
        if self.total > 1.0 + 1e-9:
            raise ValueError(f"shrink rates sum to {self.total:g}; at most 1 (they are shares of the same items)")

    @classmethod
    def default(cls) -> ShrinkRates:
        """A few percent of bought items: 3 % bagged unscanned, 2 % passed around, 2 % left in the basket."""
        return cls(0.03, 0.02, 0.02)

    @classmethod
    def parse(cls, text: str) -> ShrinkRates:
        """'0' / 'off', 'default', or three rates 'B,P,L' (bagged_unscanned, pass_around,
        left_in_basket); ValueError naming what is wrong."""
        s = str(text).strip().lower()
        if s in ("0", "off", "none", "false"):
            return cls()
        if s in ("default", "on", "true"):
            return cls.default()
        parts = [p.strip() for p in s.split(",")]
        if len(parts) != 3:
            raise ValueError(f"shrink {text!r}: expected 0, default, or three rates B,P,L "
                             f"({', '.join(BEHAVIOURS)})")
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"shrink {text!r}: {', '.join(parts)} are not all numbers") from None
        return cls(*vals)

    @property
    def total(self) -> float:
        return self.bagged_unscanned + self.pass_around + self.left_in_basket

    @property
    def on(self) -> bool:
        return self.total > 0.0

    def tag(self) -> str:
        """Short text for video ids and URIs: '0.03,0.02,0.02'."""
        return ",".join(f"{getattr(self, n):g}" for n in BEHAVIOURS)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def resolve_shrink(shrink) -> ShrinkRates | None:
    """None, a ShrinkRates, a mapping or a text (``ShrinkRates.parse``) -> rates that are on, or None."""
    if shrink is None:
        return None
    if isinstance(shrink, ShrinkRates):
        rates = shrink
    elif isinstance(shrink, dict):
        unknown = sorted(set(shrink) - set(BEHAVIOURS))
        if unknown:
            raise ValueError(f"shrink: unknown behaviour {unknown[0]!r} (known: {', '.join(BEHAVIOURS)})")
        rates = ShrinkRates(**shrink)
    elif isinstance(shrink, str):
        rates = ShrinkRates.parse(shrink)
    else:
        raise ValueError(f"shrink must be ShrinkRates, a mapping or a text, got {type(shrink).__name__}")
    return rates if rates.on else None


def eligible(chain: tuple[str, ...]) -> bool:
    """An item the shopper means to buy: its chain scans it and bags it."""
    return "scan" in chain and "bag" in chain


def choose(rates: ShrinkRates | None, seed: int, session: int, chains: list[tuple[str, ...]]
           ) -> list[tuple[str | None, tuple[str, ...]]]:
    """Per item of one session (its chain, in order): (behaviour or None, the chain it follows)."""
    if rates is None:
        return [(None, c) for c in chains]
    r = np.random.default_rng([seed, SHRINK_STREAM, session])
    u, v = r.random(len(chains)), r.random(len(chains))  # drawn for every item whatever the rates
    cuts = np.cumsum([getattr(rates, n) for n in BEHAVIOURS])
    out = []
    for chain, ui, vi in zip(chains, u.tolist(), v.tolist()):
        k = int(np.searchsorted(cuts, ui, side="right"))
        if not eligible(chain) or k >= len(BEHAVIOURS):
            out.append((None, chain))
            continue
        b = BEHAVIOURS[k]
        if b == "bagged_unscanned":
            new = ("bag",) if vi < FROM_BASKET_SHARE else tuple(a for a in chain if a != "scan")
        elif b == "pass_around":
            new = tuple("pass_around" if a == "scan" else a for a in chain)
        else:
            new = ()
        out.append((b, new))
    return out


def till_transactions(ann: dict) -> list[tuple[str, float]]:
    """The till's transactions, as a store's point-of-sale system would send them: ("start" | "end",
    stream time) of each customer's session, in time order. A transaction starts when the customer
    comes to the lane and ends when they pay: at the end of their last event (the hand then goes to
    rest, and they leave with the basket 2-6 s later), or, having touched nothing, 2 s before they
    leave. A session the video cuts off has no end."""
    duration = float(ann["duration_s"])
    last: dict[int, float] = {}
    for e in ann["events"]:
        last[e["session"]] = max(last.get(e["session"], 0.0), float(e["end"]))
    out = []
    for s in ann["sessions"]:
        start, end = float(s["start"]), float(s["end"])
        out.append(("start", start))
        if end < duration:
            out.append(("end", min(last.get(s["session"], end - 2.0), end)))
    return sorted(out, key=lambda m: m[1])


def pos_scans(ann: dict) -> list[tuple[str, float]]:
    """What the till recorded, as a store's point-of-sale system would send it: (product, stream time)
    of each scan's good read, the green flash inside the scan event, in time order. Red flashes (a
    failed read) and the scanner's stray blinks outside any scan record nothing."""
    product = {i["instance_id"]: i["product"] for i in ann["instances"]}
    greens = sorted(float(f[0]) for f in ann.get("scanner_flashes", ()) if f[2] == "green")
    out = []
    for e in ann["events"]:
        if e["activity"] != "scan":
            continue
        read = next((t for t in greens if float(e["start"]) <= t <= float(e["end"])), None)
        if read is not None:
            out.append((product[e["instance_id"]], read))
    return sorted(out, key=lambda x: x[1])
