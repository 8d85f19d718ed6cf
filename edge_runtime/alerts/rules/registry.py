"""The rule contract and the registry of rules by name.

A rule is one module holding one class derived from ``Rule`` and registered with ``@register_rule``:
what it reads (``needs``, ``needs_with_pos``), its thresholds (``thresholds``: name -> default,
``ranges``: name -> (lo, hi), else >= 0), and its judgement (``evaluate``, ``next_due``; optionally
``nudges``: early nudges from the bags under way, before any event is decided). The config
checks (edge_runtime/alerts/settings.py), the status, tools/accuracy/alerts_eval.py and the rule table
of docs/alerts.md (``thresholds_table``) read ``RULES``; the engine (engine.py) runs the rules a lane
is configured with and keeps their memory bounded.
"""
from __future__ import annotations

import math
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

if TYPE_CHECKING:
    from edge_runtime.alerts.rules.ledger import Ledger
    from edge_runtime.query.events import Event


class Rule:
    """One standing rule. The class says what it reads and its thresholds; an instance judges one lane,
    keeping the events it has taken in ``self.seen`` (its Ledger, which the engine has forget what is old)."""

    name: ClassVar[str]
    description: ClassVar[str]                          # one line
    needs: ClassVar[tuple[str, ...]]                    # activity labels the bundle must have
    needs_with_pos: ClassVar[tuple[str, ...] | None] = None  # with the till's scans (None: ``needs``)
    thresholds: ClassVar[Mapping[str, float]]           # name -> default
    ranges: ClassVar[Mapping[str, tuple[float, float]]] = MappingProxyType({})  # name -> (lo, hi), else >= 0

    def __init__(self, th: Mapping[str, float], pos: bool, seen: "Ledger") -> None:
        self.th, self.pos, self.seen = dict(th), pos, seen

    def evaluate(self, events: list["Event"], now: float, pos_scans: list["Event"]) -> list[dict]:
        """New alert drafts (``ledger.draft``) given ``events`` (sorted by start, none ended more than
        KEEP_S before ``now``) and, with ``pos``, the till's scans of the same span."""
        raise NotImplementedError

    def next_due(self) -> float | None:
        """The stream time at which the earliest decision that waits only for time falls due; None: none."""
        return None

    def nudges(self, entering: list["Event"], now: float) -> list[dict]:
        """Early nudge drafts (``ledger.draft`` with ``early`` True: sent to the kiosk's screen, never
        stored as alerts) given the bags under way at ``now`` (edge_runtime/query/item_events.py
        ``entering``), judged after ``evaluate`` of the same evaluation. None by default."""
        return []

    @classmethod
    def needs_for(cls, scans: str) -> tuple[str, ...]:
        return cls.needs_with_pos if scans == "pos" and cls.needs_with_pos is not None else cls.needs

    @classmethod
    def check_thresholds(cls, given: Mapping[str, Any] | None) -> dict[str, float]:
        """The defaults with ``given`` over them; ValueError (one line) for an unknown name, a value that
        is not a finite number, or one out of its range."""
        if given is None:
            given = {}
        if not isinstance(given, Mapping):
            raise ValueError(f"rule {cls.name}: thresholds must be a mapping, got {type(given).__name__}")
        out = dict(cls.thresholds)
        for key, value in given.items():
            if key not in cls.thresholds:
                raise ValueError(f"rule {cls.name}: unknown threshold {key!r} (known: {', '.join(cls.thresholds)})")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"rule {cls.name}: threshold {key} must be a number, got {value!r}")
            lo, hi = cls.range_of(key)
            if not lo <= value <= hi:
                raise ValueError(f"rule {cls.name}: threshold {key} must be in {lo:g}..{hi:g}, got {value:g}")
            out[key] = float(value)
        return out

    @classmethod
    def range_of(cls, key: str) -> tuple[float, float]:
        return cls.ranges.get(key, (0.0, math.inf))


RULES: dict[str, type[Rule]] = {}   # name -> rule class, in registration order


def register_rule(cls: type[Rule]) -> type[Rule]:
    """Class decorator: add a rule to ``RULES`` (its defaults and ranges made read-only). ValueError for a
    name taken, or thresholds that do not fit their ranges."""
    if not (isinstance(cls, type) and issubclass(cls, Rule)):
        raise TypeError(f"register_rule takes a Rule subclass, got {cls!r}")
    for attr in ("name", "description", "needs", "thresholds"):
        if not hasattr(cls, attr):
            raise ValueError(f"rule {cls.__name__}: no {attr}")
    if cls.name in RULES:
        raise ValueError(f"rule {cls.name!r} is registered already (by {RULES[cls.name].__module__})")
    if not cls.description or "\n" in cls.description:
        raise ValueError(f"rule {cls.name}: the description is one line")
    cls.thresholds = MappingProxyType({k: float(v) for k, v in cls.thresholds.items()})
    cls.ranges = MappingProxyType(dict(cls.ranges))
    for key in cls.ranges:
        if key not in cls.thresholds:
            raise ValueError(f"rule {cls.name}: a range for {key!r}, which is not one of its thresholds")
    for key, default in cls.thresholds.items():
        lo, hi = cls.range_of(key)
        if not lo <= default <= hi:
            raise ValueError(f"rule {cls.name}: the default {key} {default:g} is outside {lo:g}..{hi:g}")
    RULES[cls.name] = cls
    return cls


def thresholds_table() -> str:
    """The rules' thresholds as the markdown table of docs/alerts.md (tests/test_rules.py checks it is there)."""
    rows = ["| rule | threshold | default | range |", "|---|---|---|---|"]
    for name, rule in RULES.items():
        for key, default in rule.thresholds.items():
            lo, hi = rule.range_of(key)
            rows.append(f"| `{name}` | `{key}` | {default:g} | {lo:g}–{hi:g} |" if math.isfinite(hi)
                        else f"| `{name}` | `{key}` | {default:g} | ≥ {lo:g} |")
    return "\n".join(rows)
