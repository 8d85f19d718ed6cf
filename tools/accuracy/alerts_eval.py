"""How well the standing alert rules find scan avoidance on held-out generator videos.

    python -m tools.accuracy.alerts_eval --threads 1 --json docs/accuracy/alerts.json
    python -m tools.accuracy.alerts_eval --events truth --videos 100     # the oracle alone: no rendering, seconds

Videos: ``heldout_video(eval_seed, i)`` (seeds and, for even i, looks that training never used) with
the generator's default scan-avoidance rates (``ShrinkRates.default()``; ``--shrink B,P,L`` for others). Each video is played as
the runtime plays a stream: the rules are evaluated at every commit (every clip of the bundle,
16 s for lvm-tiny) over the events of the window since the previous evaluation with the service's
overlap before it (edge_runtime/alerts/evaluation.py), with each rule's default thresholds.

Two sources of events:
- ``truth``: the annotated events, complete once they have ended (confidence 1). An oracle: it
  checks the rules and this scoring, and must find every target with no false alert.
- ``model``: ``what_happened`` on the bundle's memory of the video, as the runtime computes it.

Every rule of the registry (edge_runtime/alerts/rules/) runs that has targets here (``TARGETS``).
Targets, per rule, from the annotations: ``bagged_without_scan``: every item bagged and never
scanned (the shrink behaviours bagged_unscanned and pass_around); ``pass_around``: every
pass_around event; ``left_in_basket``: every item given that behaviour whose shopper left within the
video (its interval: the item's time in view). An alert is right when it names the target's product and its interval overlaps
the target's, widened by ``MATCH_TOL_S`` on each side (one alert per target, earliest first); other
alerts are false (``false_on_scanned_bags``: of those, the ones at a real bag of a scanned item, i.e.
the scan was missed; for ``left_in_basket``, the ones at an item the shopper left in the basket
without buying it, never touched or put back, which the generator does not count as scan avoidance).
Latency: stream time from the end of the target event to the commit whose evaluation raised the alert
(for ``left_in_basket``, from the shopper leaving with it: negative when raised at the till's
transaction end before that). False alerts
are also counted per 100 transactions (customers whose session ended within the video).
``left_in_basket`` reads item tracks (its basket stays): ``--events tracks`` or a bundle with an event
head; with ``--scans pos`` the till also sends each customer's transaction start and end
(``edge_runtime.checkout.shrink.till_transactions``), and the rule judges the basket at each end.

Where the scans come from (``--scans``): ``vision`` (default), the events' own scans; ``pos``, what the
till recorded (``edge_runtime.checkout.shrink.pos_scans``: each scan's good read, product and time), given
to the rules as the runtime's point-of-sale feed gives them: a till scan is known from its own time on.

Tuning thresholds without streaming again:
- ``--set RULE.KEY=VALUE`` (repeatable) runs a rule with another threshold than its default (checked as
  the runtime checks ``alerts.rules``: an unknown rule or key, a value out of range or not a number
  stops it with one line); the result's "rules" holds the thresholds used.
- ``--save-events FILE`` (with ``--events model|both``) writes, per video and per commit, the commit's
  stream time, the memory's coverage start and each window the rules read with the model's events in
  it (JSON), with what makes it valid: the bundle, its checkpoint and reader sha256, the eval seed,
  video count and length, shrink rates and each video's seed, look and targets. The windows depend on
  the commit times only, not on the thresholds.
- ``--events-from FILE`` replays the rules over the saved events instead of streaming (seconds, not
  minutes): the same evaluation loop, scoring and table, with "model" results identical to the
  streamed run's at the same thresholds. Eval seed, videos, video length and shrink rates come from the
  file (giving other values is refused); the ground truth is generated again from the annotations
  (no rendering). ``--events both`` adds the oracle; ``--events truth`` is refused.

Choose thresholds on held-out seed 1 (stream once, replay many settings), then report the chosen ones
on the default seed 2:

    python -m tools.accuracy.alerts_eval --events model --eval-seed 1 --save-events /tmp/alerts-seed1.json
    python -m tools.accuracy.alerts_eval --events-from /tmp/alerts-seed1.json --set bagged_without_scan.lookback_s=90
    python -m tools.accuracy.alerts_eval --events-from /tmp/alerts-seed1.json \
        --set bagged_without_scan.other_product_scans=0 --set bagged_without_scan.min_confidence=0.6
    python -m tools.accuracy.alerts_eval --threads 1 --set bagged_without_scan.lookback_s=90 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import itertools
import sys
import time
from collections.abc import Iterable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from edge_runtime.alerts.cleared import ClearWatch
from edge_runtime.alerts.record import alert_id
from edge_runtime.alerts.rule_events import entering_events, rule_events
from edge_runtime.alerts.rules import RULES, RuleEngine
from edge_runtime.checkout import ACTIVITIES, CheckoutVideo, ShrinkRates, heldout_video
from edge_runtime.checkout.shrink import pos_scans, till_transactions
from edge_runtime.items.basket import ACTIVITIES as BASKET_ACTIVITIES
from edge_runtime.query.events import Event
from tools.repo_paths import REPO

MATCH_TOL_S = 5.0          # an alert's interval may miss its target's by this much and still name it
OVERLAP_S = 30.0           # as edge_runtime/alerts/evaluation.py: each evaluation re-reads this much
TICKS = True               # as the service: decisions due between commits are made then (tick_s), not at the next commit
DEFAULT_EVAL_SEED = 2      # heldout seed 1 chose what_happened's settings, seed 0 reports them
TRACK_FPS = 5.0            # --events tracks: the event path's rate
TRACK_JITTER, TRACK_MISS = 0.02, 0.1  # --events tracks: box jitter (share of the frame) and missed detections


def truth_events(ann: dict) -> list[Event]:
    product = {i["instance_id"]: i["product"] for i in ann["instances"]}
    return [Event(e["activity"], e["activity_id"], product[e["instance_id"]], float(e["start"]), float(e["end"]),
                  1.0, None, ("truth",)) for e in ann["events"]]


def paid_bags(ann: dict) -> list[tuple[str, float, float]]:
    """(product, start, end) of every bag of a scanned item: where a missed scan makes a false alert."""
    inst = {i["instance_id"]: i for i in ann["instances"]}
    return [(inst[e["instance_id"]]["product"], float(e["start"]), float(e["end"])) for e in ann["events"]
            if e["activity"] == "bag" and inst[e["instance_id"]]["scanned"]]


def _near(d: dict, target: tuple[str, float, float]) -> bool:
    p, s, e = target
    return p == d["product"] and d["start"] < e + MATCH_TOL_S and d["end"] > s - MATCH_TOL_S


# rule -> whether an annotated event (and its item) is one the rule should raise an alert for; a
# registered rule without an entry here is listed as not run, with NO_TARGETS
TARGETS = {"bagged_without_scan": lambda e, item: e["activity"] == "bag" and not item["scanned"],
           "pass_around": lambda e, item: e["activity"] == "pass_around"}
# rule -> whether an annotated item (instance) is one the rule should raise an alert for
ITEM_TARGETS = {"left_in_basket": lambda item: item["shrink"] == "left_in_basket"}
NO_TARGETS = "no targets for it in tools/accuracy/alerts_eval.py (TARGETS)"
NO_STAYS = "reads the item tracks' basket stays, which annotated events do not have (--events tracks or model)"


def targets(ann: dict) -> dict[str, list[tuple[str, float, float]]]:
    """rule -> [(product, start, end)] of what it should raise an alert for (the rules of TARGETS)."""
    inst = {i["instance_id"]: i for i in ann["instances"]}
    out = {rule: [(inst[e["instance_id"]]["product"], float(e["start"]), float(e["end"])) for e in ann["events"]
                  if is_target(e, inst[e["instance_id"]])] for rule, is_target in TARGETS.items()}
    return out | {rule: [(i["product"], float(i["appear"]), float(i["vanish"])) for i in ann["instances"]
                         if is_target(i)] for rule, is_target in ITEM_TARGETS.items()}


def unbought_in_basket(ann: dict) -> list[tuple[str, float, float]]:
    """(product, appear, vanish) of every item its shopper left in the basket without buying it (never
    touched, or put back last) and without a shrink behaviour: where a ``left_in_basket`` alert is false
    by the ground truth, though no camera tells it from one left behind."""
    last: dict[int, str] = {}
    for e in sorted(ann["events"], key=lambda e: e["start"]):
        if e["activity"] != "browse":
            last[e["instance_id"]] = e["activity"]
    ended = {s["session"] for s in ann["sessions"] if s["end"] < ann["duration_s"]}
    return [(i["product"], float(i["appear"]), float(i["vanish"])) for i in ann["instances"]
            if i.get("shrink") is None and i["session"] in ended and last.get(i["instance_id"], "put_back") == "put_back"]


def transactions(ann: dict) -> list[Event]:
    """The till's transactions of ``ann`` that ended, as the rules take them (till_transactions.py)."""
    from edge_runtime.alerts.till_transactions import transaction_event

    out, start = [], None
    for kind, t in till_transactions(ann):
        if kind == "start":
            start = t
        elif start is not None:
            out.append(transaction_event(start, t))
    return out


def till_events(ann: dict) -> list[Event]:
    """The till's record of ``ann`` as the rules take it with ``scans`` pos: instants, confidence 1."""
    return [Event("scan", -1, product, t, t, 1.0, None, ("pos",)) for product, t in pos_scans(ann)]


class Evaluations:
    """The alert service's loop for one stream: at each commit, the rules over the events of the window
    since the previous evaluation, with OVERLAP_S of it read again, and the till's scans known by then."""

    def __init__(self, engine: RuleEngine, events_in, till: list[Event] = (), tx: list[Event] = (),
                 entering=None) -> None:
        self.engine, self.events_in, self.last, self.till = engine, events_in, None, list(till)
        self.tx = list(tx)   # the till's transactions: among the events once ended, as the service gives them
        self.entering = entering or list   # () -> the bags under way now (item tracks), for the early nudges
        # (draft, stream time of the commit or tick that raised it); an early nudge's draft says early
        self.raised: list[tuple[dict, float]] = []
        self.ticks = TICKS

    def commit(self, now: float, cov_start: float) -> None:
        self.tick(now)
        start = cov_start if self.last is None else max(cov_start, self.last - OVERLAP_S)
        self.last = now
        if now > start:
            till = [s for s in self.till if s.start <= now]
            events = self.events_in((start, now)) + [x for x in self.tx if x.end <= now]
            self.raised += [(d, now) for d in self.engine.evaluate(events, now, till, self.entering())]

    def tick(self, until: float) -> None:
        """The service's ticks between commits: each waiting decision due before ``until`` is made at its
        due time, with the till's scans known by then (no new events: the next commit brings those)."""
        if not self.ticks:
            return
        while (due := self.engine.next_due()) is not None and due < until:
            till = [s for s in self.till if s.start <= due]
            self.raised += [(d, due) for d in self.engine.evaluate([x for x in self.tx if x.end <= due], due, till)]


def oracle(ann: dict, rules: dict, clip_s: float, scans: str = "vision") -> list[tuple[dict, float]]:
    events = truth_events(ann)
    dur = float(ann["duration_s"])
    now = [0.0]

    def known(window):  # an event is in the memory once it has ended
        return [e for e in events if e.end <= now[0] and e.end > window[0] and e.start < window[1]]

    ev = Evaluations(RuleEngine(rules, list(ACTIVITIES), scans), known, till_events(ann) if scans == "pos" else ())
    for k in range(1, int(np.ceil(dur / clip_s)) + 1):
        now[0] = min(k * clip_s, dur)
        ev.commit(now[0], 0.0)
    return ev.raised


def model(eng, video: CheckoutVideo, rules: dict, record: list | None = None, scans: str = "vision",
          till: list[Event] = (), tx: list[Event] = ()) -> tuple[list[tuple[dict, float]], dict]:
    """Stream ``video`` through the engine from an empty memory, evaluating at every commit. ``record``:
    a list to append each commit to, as ``--save-events`` writes it (``replay`` reads it)."""
    stream = eng.new_stream()

    def events_in(window):
        events = rule_events((eng, stream), None, window)
        if record is not None:
            record[-1]["reads"].append({"window": [float(window[0]), float(window[1])],
                                        "events": [e.to_dict() for e in events]})
        return events

    items = stream.items is not None
    ev = Evaluations(RuleEngine(rules, rule_labels(eng), scans), events_in, till, tx,
                     lambda: entering_events((eng, stream)))
    reads = sorted((e.start, _product_id(eng, e.product)) for e in till) if items else []
    t0, commits, evaluations, step = time.perf_counter(), 0, 0, eng.intake_batch
    frames = video.frames(eng.intake_fps)
    while chunk := list(itertools.islice(frames, step)):
        times = np.asarray([t for t, _ in chunk], np.float64)
        taken = []
        while reads and reads[0][0] <= times[-1]:  # the till's reads reach the stream as it goes
            taken.append(reads.pop(0))
        if taken:
            stream.items.add_till_reads(taken)
        n = eng.ingest(stream, np.stack([f for _, f in chunk]), times)
        if len(chunk) < step or times[-1] + 1.5 / eng.intake_fps >= video.duration_s:
            n += int(bool(eng.flush(stream)))
            if items:
                stream.items.flush()
        if n or items:
            commits, evaluations = commits + bool(n), evaluations + 1
            cov = stream.coverage
            now, first = (float(stream.last_input), 0.0) if items else (float(cov["end"]), float(cov["start"]))
            if record is not None:
                record.append({"now": now, "cov_start": first, "reads": []})
            ev.commit(now, first)
    return ev.raised, {"seconds": round(time.perf_counter() - t0, 1), "commits": commits, "evaluations": evaluations}


def rules_over_items(detections: Iterable, items, products: list[str], labels: list[str], rules: dict,
                     scans: str = "vision", till: list[Event] = (), tx: list[Event] = (), *,
                     per_second: int = 5, frames: Iterable | None = None,
                     clear_within_s: float = 60.0) -> list[tuple[dict, float]]:
    """The rules over item events as the runtime runs them: each frame's ``Detections`` (in time order)
    into ``items`` (an ItemState), with its RGB frame from ``frames`` (the light zone's pixels) when given,
    the till's reads first as they happen, the rules after every ``per_second`` frames and at the last
    frame (the stream's end, its live tracks decided). An alert or early nudge the runtime would clear (its
    item scanned or put back within ``clear_within_s``: edge_runtime/alerts/cleared.py) has ``cleared`` in
    its draft."""
    from types import SimpleNamespace

    target = (SimpleNamespace(products=list(products), events="item detections"), SimpleNamespace(items=items))
    ev = Evaluations(RuleEngine(rules, labels, scans), lambda w: rule_events(target, None, w), till, tx,
                     lambda: entering_events(target))
    reads = sorted((e.start, products.index(e.product) if e.product in products else None) for e in till)
    watch, by_id = ClearWatch(clear_within_s), {}
    dets = iter(detections)
    images = iter(frames) if frames is not None else None
    d, k = next(dets, None), 0
    while d is not None:
        after = next(dets, None)
        taken = []
        while reads and reads[0][0] <= d.t:
            taken.append(reads.pop(0))
        items.add_till_reads(taken)   # as the runtime's till feed gives them: matched as the frame comes
        items.update(d, next(images) if images is not None else None)
        if (k + 1) % per_second == 0 or after is None:
            if after is None:
                items.flush()
            n = len(ev.raised)
            ev.commit(float(d.t), 0.0)
            for j in range(n, len(ev.raised)):   # watched by their alert id, as the service watches them
                draft, at = ev.raised[j]
                key = alert_id("replay", "s", draft["rule"], draft["product"], draft["start"])
                watch.watch(key, draft["rule"], draft["evidence"], at, draft if draft.get("early") else None)
                by_id[key] = draft
            for key, cleared, _ in watch.check(items, float(d.t)):
                by_id[key]["cleared"] = cleared
        d, k = after, k + 1
    return ev.raised


def tracked(video: CheckoutVideo, rules: dict, scans: str = "vision", till: list[Event] = (), tx: list[Event] = (), *,
            jitter: float = TRACK_JITTER, miss: float = TRACK_MISS) -> list[tuple[dict, float]]:
    """The rules over item events from the generator's boxes (oracle detections with ``jitter`` and
    ``miss``, the scanner light as drawn, the scene's zones) through the runtime's tracker and labeler
    (edge_runtime/items/): the event path with a perfect detector. No rendering."""
    from edge_runtime.checkout.catalog import PRODUCTS
    from edge_runtime.items.detections import from_frame_labels
    from edge_runtime.items.item_state import ItemState
    from edge_runtime.items.zones import scene_zones

    fps = TRACK_FPS
    rng = np.random.default_rng(video.seed)
    n = int(np.ceil(video.duration_s * fps - 1e-9))
    dets = (from_frame_labels(video.frame_labels(k / fps), jitter=jitter, miss=miss, rng=rng) for k in range(n))
    return rules_over_items(dets, ItemState(scene_zones(video), bundle_id="oracle", fps=fps), list(PRODUCTS),
                            list(ACTIVITIES) + list(BASKET_ACTIVITIES), rules, scans, till, tx, per_second=int(fps))


def rule_labels(eng) -> list[str]:
    """The activities the rules can read from ``eng`` (``Engine.event_activities``)."""
    return eng.event_activities


def _product_id(eng, name: str) -> int | None:
    return eng.products.index(name) if name in eng.products else None


def replay(commits: list[dict], rules: dict, labels: list[str], scans: str = "vision",
           till: list[Event] = (), tx: list[Event] = ()) -> list[tuple[dict, float]]:
    """The rules over saved model events (``load_events``), commit by commit as ``model`` ran them: each
    window the evaluation asks for must be the one saved at that commit."""
    reads: list[tuple[tuple[float, float], list[Event]]] = []

    def events_in(window):
        if not reads:
            raise ValueError(f"no saved events for the window {window} at this commit")
        saved, events = reads.pop(0)
        if saved != (float(window[0]), float(window[1])):
            raise ValueError(f"the rules read the window {window}, the file saved {saved}")
        return events

    ev = Evaluations(RuleEngine(rules, labels, scans), events_in, till, tx)
    for c in commits:
        reads[:] = c["reads"]
        ev.commit(c["now"], c["cov_start"])
        if reads:
            raise ValueError(f"the commit at {c['now']} s read fewer windows than the file saved")
    return ev.raised


EVENTS_FORMAT = "lvm-edge/alerts-eval-events"


def bundle_hashes(bundle: str | Path) -> dict:
    """The manifest's checkpoint and reader file sha256: which model the saved events came from."""
    m = json.loads(Path(bundle, "manifest.json").read_text())
    reader = (m.get("answers") or {}).get("reader") or {}
    return {"checkpoint_sha256": (m.get("checkpoint") or {}).get("sha256"), "reader_file_sha256": reader.get("file_sha256")}


def save_events(path: str | Path, head: dict, per_video: list[dict]) -> None:
    """``--save-events``: JSON, written atomically (temp file, fsync, rename)."""
    from edge_runtime.atomic_write import atomic_write_bytes

    def plain(o):  # numpy scalars, should an event carry one: their exact Python value
        if hasattr(o, "item"):
            return o.item()
        raise TypeError(f"{type(o).__name__} is not JSON serialisable")

    doc = {"format": EVENTS_FORMAT, "version": 1, **head, "per_video": per_video}
    atomic_write_bytes(path, (json.dumps(doc, default=plain, separators=(",", ":")) + "\n").encode())


def load_events(path: str | Path) -> dict:
    """A ``--save-events`` file with its events as ``Event`` objects; ValueError (one line) if it is not one."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read it ({type(err).__name__}: {err})".replace("\n", " ")) from None
    if not isinstance(doc, dict) or doc.get("format") != EVENTS_FORMAT:
        raise ValueError(f"not a --save-events file (no \"format\": \"{EVENTS_FORMAT}\")")
    if doc.get("version") != 1:
        raise ValueError(f"version {doc.get('version')!r}, this tool reads version 1")
    try:
        for key in ("bundle", "labels", "frame_size", "commit_every_s", "overlap_s", "eval_seed", "videos",
                    "video_s", "shrink", "per_video"):
            if key not in doc:
                raise KeyError(key)
        doc["eval_seed"], doc["videos"], doc["video_s"] = int(doc["eval_seed"]), int(doc["videos"]), float(doc["video_s"])
        doc["labels"] = [str(x) for x in doc["labels"]]
        doc["frame_size"], doc["commit_every_s"] = int(doc["frame_size"]), float(doc["commit_every_s"])
        doc["shrink"] = ShrinkRates(**doc["shrink"]).to_dict()
        if not isinstance(doc["per_video"], list) or len(doc["per_video"]) != doc["videos"]:
            raise ValueError(f"{doc['videos']} videos, but per_video has "
                             f"{len(doc['per_video']) if isinstance(doc['per_video'], list) else 'no list'}")
        for v in doc["per_video"]:
            v["seed"], v["look"] = int(v["seed"]), int(v["look"])
            v["commits"] = [{"now": float(c["now"]), "cov_start": float(c["cov_start"]),
                             "reads": [((float(r["window"][0]), float(r["window"][1])),
                                        [Event.from_dict(e) for e in r["events"]]) for r in c["reads"]]}
                            for c in v["commits"]]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"not a valid --save-events file ({type(err).__name__}: {err})".replace("\n", " ")) from None
    return doc


def parse_sets(items: list[str]) -> dict[str, dict[str, float]]:
    """``--set RULE.KEY=VALUE`` -> every rule's thresholds, the defaults with these over them, checked as
    RuleEngine checks a config's rules; ValueError (one line) naming what is wrong."""
    out: dict[str, dict] = {}
    for item in items:
        name, eq, value = item.partition("=")
        rule, dot, key = name.strip().partition(".")
        if not eq or not dot or not rule or not key:
            raise ValueError(f"{item!r}: expected RULE.KEY=VALUE, e.g. bagged_without_scan.lookback_s=90")
        try:
            number: object = float(value)
        except ValueError:
            number = value  # RuleEngine names it: not a number
        out.setdefault(rule, {})[key.strip()] = number
    every = sorted({a for spec in RULES.values() for a in spec.needs})
    try:
        known = {name: out.pop(name, {}) for name in RULES}  # what is left in ``out`` is refused by name
        return RuleEngine({**known, **out}, every).rules
    except ValueError as err:
        raise ValueError(str(err)) from None


def matches(raised: list[tuple[dict, float]], want: list[tuple[str, float, float]]
            ) -> list[tuple[dict, float, int | None]]:
    """Each alert (by start) with the target it found (its index in ``want``), None for a false one: a
    target is found by its first alert near it."""
    used: set[int] = set()
    out = []
    for d, at in sorted(raised, key=lambda x: (x[0]["start"], x[1])):
        hit = next((j for j, t in enumerate(want) if j not in used and _near(d, t)), None)
        if hit is not None:
            used.add(hit)
        out.append((d, at, hit))
    return out


def rule_alerts(raised: list[tuple[dict, float]], rule: str) -> list[tuple[dict, float]]:
    """``rule``'s alerts of ``raised``: its early nudges are no alerts (never stored, never judged)."""
    return [x for x in raised if x[0]["rule"] == rule and not x[0].get("early")]


def score(raised: list[tuple[dict, float]], want: list[tuple[str, float, float]],
          paid: list[tuple[str, float, float]]) -> dict:
    """One rule's alerts (its early nudges are no alerts: ``nudge_score``) against its targets."""
    raised = [x for x in raised if not x[0].get("early")]
    used, lat, false, on_paid = set(), [], 0, 0
    for d, at, hit in matches(raised, want):
        if hit is None:
            false += 1
            on_paid += any(_near(d, t) for t in paid)
        else:
            used.add(hit)
            lat.append(at - want[hit][2])
    return {"targets": len(want), "found": len(used), "alerts": len(raised), "false": false,
            "false_on_scanned_bags": on_paid, "latency_s": lat}


def nudge_score(raised: list[tuple[dict, float]], want: list[tuple[str, float, float]],
                paid: list[tuple[str, float, float]]) -> dict:
    """One rule's nudges as the kiosk's screen gets them, early ones and each alert's: a target is nudged
    by the first nudge near it (an alert's counts for the target its alert found); ``alerts`` and
    ``false`` count the early nudges, and those near no target."""
    first: dict[int, float] = {}
    for d, at, hit in matches(raised, want):
        if hit is not None and not d.get("early"):
            first[hit] = min(first.get(hit, at), at)
    early, false, on_paid = 0, 0, 0
    for d, at in raised:
        if not d.get("early"):
            continue
        early += 1
        near = [j for j, t in enumerate(want) if _near(d, t)]
        if not near:
            false += 1
            on_paid += any(_near(d, t) for t in paid)
            continue
        j = min(near, key=lambda j: abs(want[j][2] - d["end"]))
        first[j] = min(first.get(j, at), at)
    return {"targets": len(want), "found": len(first), "alerts": early, "false": false,
            "false_on_scanned_bags": on_paid, "latency_s": [at - want[j][2] for j, at in first.items()]}


def summarise(per_video: list[dict], scanned: int, hours: float, transactions: int = 0) -> dict:
    t = sum(v["targets"] for v in per_video)
    f = sum(v["found"] for v in per_video)
    false = sum(v["false"] for v in per_video)
    lat = [x for v in per_video for x in v["latency_s"]]
    return {"targets": t, "found": f, "recall": round(f / t, 4) if t else None,
            "alerts": sum(v["alerts"] for v in per_video), "false_alerts": false,
            "false_on_scanned_bags": sum(v["false_on_scanned_bags"] for v in per_video),
            "false_per_100_scanned": round(100 * false / scanned, 2) if scanned else None,
            "false_per_100_transactions": round(100 * false / transactions, 2) if transactions else None,
            "false_per_hour": round(false / hours, 2) if hours else None,
            "latency_s": {"median": round(float(np.median(lat)), 1), "p95": round(float(np.percentile(lat, 95)), 1),
                          "mean": round(float(np.mean(lat)), 1), "max": round(float(np.max(lat)), 1)} if lat else None}


def _refuse(message: str) -> int:
    print(f"alerts_eval: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.accuracy.alerts_eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", help="an exported bundle folder (default engines/lvm-tiny-fp32)")
    ap.add_argument("--events", choices=("truth", "tracks", "model", "both"),
                    help="truth: the annotated events (oracle); tracks: item events from the generator's boxes "
                         "through the runtime's tracker and labeler (a perfect detector); model: the bundle's "
                         "events (its item tracks when it has an event head, else what_happened on its memory) "
                         "(default both: truth and model; model with --events-from)")
    ap.add_argument("--eval-seed", type=int, help=f"heldout_video(seed, i), i < --videos (default {DEFAULT_EVAL_SEED})")
    ap.add_argument("--videos", type=int, help="default 12")
    ap.add_argument("--video-s", type=float, help="default 1800")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shrink", metavar="RATES",
                    help="scan avoidance in the videos: default (the generator's default rates) or B,P,L")
    ap.add_argument("--scans", choices=("vision", "pos"), default="vision",
                    help="where the rules' scans come from: vision (the events', default) or pos (the till's "
                         "record of each good read, as a point-of-sale feed gives it)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="RULE.KEY=VALUE",
                    help="a rule's threshold for this run instead of its default (repeatable), "
                         "e.g. bagged_without_scan.lookback_s=90")
    ap.add_argument("--save-events", metavar="FILE",
                    help="write every commit's model events here (JSON) for --events-from")
    ap.add_argument("--events-from", metavar="FILE",
                    help="replay the rules over events saved by --save-events instead of streaming")
    ap.add_argument("--no-items", action="store_true",
                    help="model: the memory's events alone, as a bundle without an event head")
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args(argv)
    try:
        rules = parse_sets(args.sets)  # the defaults, --set over them
    except ValueError as err:
        return _refuse(f"--set: {err}")
    saved = None
    if args.events_from is not None:
        src = args.events_from
        if args.events in ("truth", "tracks"):
            return _refuse(f"--events-from replays model events; --events {args.events} reads none (leave out --events-from)")
        if args.save_events is not None:
            return _refuse("--save-events with --events-from: the events are saved already")
        try:
            saved = load_events(src)
        except ValueError as err:
            return _refuse(f"--events-from {src}: {err}")
        if saved["overlap_s"] != OVERLAP_S:
            return _refuse(f"--events-from {src}: saved with an evaluation overlap of {saved['overlap_s']} s, "
                           f"this tool reads {OVERLAP_S:g} s")
        for flag, mine, theirs in (("--eval-seed", args.eval_seed, saved["eval_seed"]),
                                   ("--videos", args.videos, saved["videos"]),
                                   ("--video-s", args.video_s, saved["video_s"])):
            if mine is not None and mine != theirs:
                return _refuse(f"--events-from {src}: the file was saved with {flag} {theirs:g}, not {mine:g} "
                               f"(leave {flag} out to take the file's)")
        if args.shrink is not None:
            try:
                mine_rates = ShrinkRates.parse(args.shrink).to_dict()
            except ValueError as err:
                return _refuse(f"--shrink: {err}")
            if mine_rates != saved["shrink"]:
                return _refuse(f"--events-from {src}: the file was saved with --shrink "
                               f"{','.join(f'{v:g}' for v in saved['shrink'].values())}, not {args.shrink} "
                               "(leave --shrink out to take the file's)")
        if args.bundle is not None and Path(args.bundle).resolve() != (REPO / saved["bundle"]).resolve():
            return _refuse(f"--events-from {src}: the events are of the bundle {saved['bundle']}, not {args.bundle} "
                           "(leave --bundle out)")
        args.eval_seed, args.videos, args.video_s = saved["eval_seed"], saved["videos"], saved["video_s"]
        args.bundle, args.events = str(REPO / saved["bundle"]), args.events or "model"
    args.bundle = args.bundle or str(REPO / "engines" / "lvm-tiny-fp32")
    args.events = args.events or "both"
    args.eval_seed = DEFAULT_EVAL_SEED if args.eval_seed is None else args.eval_seed
    args.videos = 12 if args.videos is None else args.videos
    args.video_s = 1800.0 if args.video_s is None else args.video_s
    if args.videos < 1 or args.video_s <= 0 or args.threads < 1:
        return _refuse("--videos, --video-s and --threads must be positive")
    if args.save_events is not None:
        if args.events in ("truth", "tracks"):
            return _refuse("--save-events saves model events: use --events model or both")
        if not Path(args.save_events).resolve().parent.is_dir():
            return _refuse(f"--save-events {args.save_events}: no folder {Path(args.save_events).parent}")
    if saved is None and args.events not in ("truth", "tracks") and not Path(args.bundle, "manifest.json").is_file():
        return _refuse(f"--bundle {args.bundle}: no manifest.json (an exported bundle folder)")
    if saved is not None:
        rates = ShrinkRates(**saved["shrink"])
    else:
        try:
            rates = ShrinkRates.parse(args.shrink or "default")
        except ValueError as err:
            return _refuse(f"--shrink: {err}")
    if not rates.on:
        return _refuse("--shrink: rates of 0 leave nothing to alert on")
    sources = ["truth", "model"] if args.events == "both" else [args.events]
    per = {s: {r: [] for r in rules} for s in sources}
    not_run: dict[str, dict[str, str]] = {s: {r: NO_TARGETS for r in rules if r not in TARGETS | ITEM_TARGETS}
                                          for s in sources}
    if "truth" in not_run:
        not_run["truth"] |= {r: NO_STAYS for r in ITEM_TARGETS if r in rules}
    videos, scanned, left, hours, n_tx = [], 0, 0, 0.0, 0
    base, labels, hashes, to_save = None, None, {}, []
    if "model" in sources and saved is None:
        try:
            from edge_runtime.query.happened import what_happened  # noqa: F401
        except ImportError as err:
            return _refuse(f"model events unavailable: edge_runtime.query.happened cannot be imported ({err})")
        from edge_runtime.engine.engine import Engine

        hashes = bundle_hashes(args.bundle)
        base = Engine(args.bundle, threads=args.threads, events=not args.no_items)
        labels = rule_labels(base)
    elif saved is not None:
        labels = saved["labels"]
        hashes = {k: saved.get(k) for k in ("checkpoint_sha256", "reader_file_sha256")}
    if labels is not None:
        for name in (r for r in rules if r not in not_run["model"]):
            try:
                RuleEngine({name: {}}, labels, args.scans)
            except ValueError as err:
                not_run["model"][name] = str(err)
    if saved is not None:
        clip_s, size = saved["commit_every_s"], saved["frame_size"]
    else:
        clip_s = base.clip_frames / base.fps if base is not None else 16.0
        size = base.frame_size if base is not None else 112
    t_start = time.perf_counter()
    try:
        for i in range(args.videos):
            seed, look = heldout_video(args.eval_seed, i)
            video = CheckoutVideo(seed=seed, duration_s=args.video_s, size=size, look=look, shrink=rates)
            ann = video.annotations()
            want, paid = targets(ann), paid_bags(ann)
            near = {r: unbought_in_basket(ann) if r in ITEM_TARGETS else paid for r in rules}
            till = till_events(ann) if args.scans == "pos" else []
            tx = transactions(ann) if args.scans == "pos" else []
            info = {"seed": seed, "look": look, "duration_s": args.video_s,
                    "scanned_items": sum(bool(x["scanned"]) for x in ann["instances"]),
                    "targets": {r: len(v) for r, v in want.items()},
                    "left_in_basket": sum(x["shrink"] == "left_in_basket" for x in ann["instances"]),
                    "transactions": sum(s["end"] < args.video_s for s in ann["sessions"])}
            if saved is not None:
                sv = saved["per_video"][i]
                mine = {k: info[k] for k in ("seed", "look", "scanned_items", "targets")}
                theirs = {k: sv.get(k) for k in mine}
                if mine != theirs:
                    return _refuse(f"--events-from {args.events_from}: video {i}: the generator now gives {mine}, "
                                   f"the file saved {theirs}")
            scanned, left, hours = scanned + info["scanned_items"], left + info["left_in_basket"], hours + args.video_s / 3600
            n_tx += info["transactions"]
            if "truth" in sources:
                run_rules = {r: th for r, th in rules.items() if r not in not_run["truth"]}
                raised = oracle(ann, run_rules, clip_s, args.scans)
                for r in run_rules:
                    per["truth"][r].append(score([x for x in raised if x[0]["rule"] == r], want[r], near[r]))
            if "tracks" in sources:
                run_rules = {r: th for r, th in rules.items() if r not in not_run["tracks"]}
                raised = tracked(video, run_rules, args.scans, till, tx)
                for r in run_rules:
                    per["tracks"][r].append(score([x for x in raised if x[0]["rule"] == r], want[r], near[r]))
            if "model" in sources:
                run_rules = {r: th for r, th in rules.items() if r not in not_run["model"]}
                if saved is None:
                    record = [] if args.save_events is not None else None
                    raised, info["model_stream"] = model(base, video, run_rules, record, args.scans, till, tx)
                    if record is not None:
                        to_save.append({**{k: info[k] for k in ("seed", "look", "scanned_items", "targets",
                                                                 "left_in_basket", "model_stream")}, "commits": record})
                else:
                    try:
                        raised = replay(sv["commits"], run_rules, labels, args.scans, till, tx)
                    except ValueError as err:
                        return _refuse(f"--events-from {args.events_from}: video {i}: {err}")
                    info["replayed_commits"] = len(sv["commits"])
                    if "model_stream" in sv:
                        info["model_stream"] = sv["model_stream"]
                for r in run_rules:
                    per["model"][r].append(score([x for x in raised if x[0]["rule"] == r], want[r], near[r]))
            videos.append(info)
            how = ""
            if "replayed_commits" in info:
                how = f", {info['replayed_commits']} commits replayed"
            elif "model_stream" in info:
                how = f", streamed in {info['model_stream']['seconds']} s"
            print(f"video {i}: seed {seed} look {look}: targets {info['targets']}, {info['scanned_items']} scanned items"
                  + how, flush=True)
    finally:
        if base is not None:
            base.close()
    elapsed = round(time.perf_counter() - t_start, 2)
    result = {"tool": "tools/accuracy/alerts_eval.py",
              "bundle": saved["bundle"] if saved is not None else os.path.relpath(args.bundle, REPO)}
    if "model" in sources:
        result.update(hashes)
    if saved is not None:
        result["events_from"] = args.events_from
    result.update({"eval_seed": args.eval_seed, "videos": videos, "shrink": rates.to_dict(),
                   "threads": saved.get("threads", args.threads) if saved is not None else args.threads,
                   "rules": rules, "scans": args.scans, "commit_every_s": clip_s, "overlap_s": OVERLAP_S, "match_tol_s": MATCH_TOL_S,
                   "scanned_items": scanned, "hours": round(hours, 3), "left_in_basket_items": left,
                   "transactions": n_tx,
                   "seconds": elapsed,
                   "results": {s: {r: ({"not_run": not_run[s][r]} if r in not_run[s] else summarise(per[s][r], scanned, hours, n_tx))
                                   for r in rules} for s in sources}})
    if args.save_events is not None:
        head = {"tool": result["tool"], "bundle": result["bundle"], **hashes, "labels": labels,
                "frame_size": size, "commit_every_s": clip_s, "overlap_s": OVERLAP_S, "eval_seed": args.eval_seed,
                "videos": args.videos, "video_s": args.video_s, "shrink": rates.to_dict(), "threads": args.threads}
        try:
            save_events(args.save_events, head, to_save)
        except OSError as err:
            return _refuse(f"--save-events {args.save_events}: {err}")
        result["saved_events"] = args.save_events
    print(table(result))
    if args.save_events is not None:
        print(f"saved the model events to {args.save_events}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


def table(result: dict) -> str:
    rows = [f"{len(result['videos'])} videos, {result['hours']:g} h, {result['scanned_items']} scanned items, "
            f"{result['left_in_basket_items']} left in the basket, {result['transactions']} transactions",
            "| events | rule | targets | found | recall | false (at a scanned item's bag; left_in_basket: at an "
            "item left unbought) | per 100 scanned | per 100 transactions | per hour | latency median / p95 / max s |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for src, by_rule in result["results"].items():
        for rule, r in by_rule.items():
            if "not_run" in r:
                rows.append(f"| {src} | {rule} | not run: {r['not_run']} |")
                continue
            lat = "-" if r["latency_s"] is None else f"{r['latency_s']['median']} / {r['latency_s'].get('p95', '-')} / {r['latency_s']['max']}"
            rec = "n/a" if r["recall"] is None else f"{100 * r['recall']:.0f} %"
            rows.append(f"| {src} | {rule} | {r['targets']} | {r['found']} | {rec} | {r['false_alerts']} "
                        f"({r['false_on_scanned_bags']}) | "
                        f"{r['false_per_100_scanned']} | {r['false_per_100_transactions']} | {r['false_per_hour']} | "
                        f"{lat} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
