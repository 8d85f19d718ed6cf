"""Staff's verdicts on a runtime's alerts as an own-footage annotation set (``lvm-data verdicts``).

The runtime keeps no video, only its alerts (``<state dir>/alerts.db``, read here read-only) and the
verdicts staff gave them. Each alert with a verdict becomes one dataset item, a clip of its stream
around the alert (``pad_s`` each side), annotated in the clip's own seconds:

- ``confirmed`` and ``customer_fixed`` (the alert was real): an event of the rule's activity (``bag``
  for ``bagged_without_scan``, ``pass_around`` for ``pass_around``) on the alert's product, its
  instance marked with the checkout behaviour (``shrink``) and ``scanned: false``;
- ``false_alert``: the same activity and interval under ``negatives`` (annotation version 3): the
  rule's claim did not hold there (not an unpaid item; whether the item moved at all, the verdict
  does not say).

The alert's box (where the product was, at the middle of its interval) is the instance's one box
row. What is written: ``annotations/<stem>.json``, labels.yaml (the folder's own when it has one,
else the generator's labels with the verdicts' products and activities added), an empty
``videos/`` and ``verdicts.json``: per item the footage it needs (stream, start and end in stream
seconds; unix seconds for a live camera's alerts) and ``evidence``, the alert's evidence pictures
(none kept yet: ``[]``).
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from edge_runtime.alerts.outbox import DB_NAME
from edge_runtime.alerts.record import Alert

from .folder import ANNOTATIONS, LABELS_FILE, VIDEOS
from .labels import DatasetError, LabelSet, read_labels_file

ANNOTATION_VERSION = 3      # version 3: ``negatives`` (docs/annotation-format.md)
VERDICTS_FILE = "verdicts.json"
DEFAULT_PAD_S = 20.0        # a clip of an alert of a few seconds is then over 32 s: lvm-tiny's two clips
# a rule's alert -> (the activity it says happened, the checkout behaviour a real one is)
RULE_LABELS = {"bagged_without_scan": ("bag", "bagged_unscanned"), "pass_around": ("pass_around", "pass_around")}


def read_verdicts(state_dir) -> list[Alert]:
    """The alerts with a verdict in ``state_dir``'s outbox, oldest first; the file is opened read-only
    (a running runtime may hold it). DatasetError (one line) when there is no readable outbox."""
    path = Path(state_dir) / DB_NAME
    if not path.is_file():
        raise DatasetError(f"{path}: no such file (the runtime's --state-dir holds its alerts.db)")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as err:
        raise DatasetError(f"{path}: cannot be opened ({err})") from None
    try:
        columns = {r[1] for r in db.execute("PRAGMA table_info(alerts)")}
        if not columns:
            raise DatasetError(f"{path}: holds no alerts table (not a runtime's alert store)")
        if "outcome" not in columns:  # written before verdicts were kept, and not opened since
            return []
        rows = db.execute("SELECT body FROM alerts WHERE outcome IS NOT NULL ORDER BY seq").fetchall()
    except sqlite3.Error as err:
        raise DatasetError(f"{path}: cannot be read ({' '.join(str(err).split())})") from None
    finally:
        db.close()
    return [Alert.model_validate_json(body) for (body,) in rows]


def rule_labels(alert: Alert) -> tuple[str, str | None]:
    """(activity, checkout behaviour) an alert of its rule is about; a rule the table does not know:
    its first evidence event's activity, no behaviour."""
    if alert.rule in RULE_LABELS:
        return RULE_LABELS[alert.rule]
    for e in alert.evidence:
        if e.get("activity"):
            return str(e["activity"]), None
    raise DatasetError(f"alert {alert.id}: rule {alert.rule!r} names no activity, and its evidence none")


def verdict_item(alert: Alert, pad_s: float) -> tuple[str, dict, dict[str, Any]]:
    """(stem, annotation, its verdicts.json entry) of one alert with a verdict."""
    activity, behaviour = rule_labels(alert)
    verdict = alert.verdicts[-1]
    clip_start = max(0.0, alert.start - pad_s)
    clip_end = alert.end + pad_s
    stem = f"{alert.stream}-{alert.id}"
    real = verdict.outcome != "false_alert"
    instance: dict[str, Any] = {"instance_id": 0, "product": alert.product}
    if real:
        instance.update(scanned=False, shrink=behaviour)
    event = {"activity": activity, "instance_id": 0, "start": round(alert.start - clip_start, 3),
             "end": round(alert.end - clip_start, 3)}
    ann: dict[str, Any] = {
        "format": "lvm-edge/checkout-rest", "version": ANNOTATION_VERSION, "video_id": stem,
        "duration_s": round(clip_end - clip_start, 3), "fps_boxes": 5.0,
        "instances": [instance], "events": [event] if real else [], "negatives": [] if real else [event],
        "boxes": {}}
    box = _box_row(alert, (alert.start + alert.end) / 2 - clip_start)
    if box is not None:
        ann["boxes"]["0"] = [box]
    wall = None if alert.wall_start is None else alert.wall_start - alert.start   # the stream's time 0, unix s
    entry = {"stem": stem, "alert_id": alert.id, "site": alert.site, "stream": alert.stream, "rule": alert.rule,
             "product": alert.product, "activity": activity, "outcome": verdict.outcome, "verdict_at": verdict.at,
             "note": verdict.note, "by": verdict.by, "alert_start": alert.start, "alert_end": alert.end,
             "confidence": alert.confidence, "box": alert.box,
             "footage": {"stream": alert.stream, "start": clip_start, "end": clip_end,
                         "wall_start": None if wall is None else wall + clip_start,
                         "wall_end": None if wall is None else wall + clip_end,
                         "file": f"{VIDEOS}/{stem}.<ext>"},
             "evidence": []}
    return stem, ann, entry


def _box_row(alert: Alert, t: float) -> list[float] | None:
    """[t, x1, y1, x2, y2] of the alert's box, clipped to the frame; None without a usable one."""
    if alert.box is None or len(alert.box) != 4:
        return None
    x1, y1, x2, y2 = (min(1.0, max(0.0, float(v))) for v in alert.box)
    return [round(t, 3), x1, y1, x2, y2] if x2 > x1 and y2 > y1 else None


def labels_for(root: Path, alerts: list[Alert]) -> tuple[LabelSet, bool]:
    """(the labels the items are written against, whether labels.yaml is to be written): the folder's
    labels.yaml, every activity and product of the verdicts in it; else the generator's labels (the
    shipped model's), the verdicts' activities and products not among them added at the end."""
    acts = list(dict.fromkeys(rule_labels(a)[0] for a in alerts))
    products = list(dict.fromkeys(a.product for a in alerts))
    path = root / LABELS_FILE
    if path.exists():
        labels, problems = read_labels_file(path)
        if labels is None:
            field, msg = problems[0]
            raise DatasetError(f"{path}: {field + ': ' if field else ''}{msg}")
        for kind, names, known in (("activities", acts, labels.activities), ("objects", products, labels.objects)):
            missing = [n for n in names if n not in known]
            if missing:
                raise DatasetError(f"{path}: {kind}: {', '.join(missing)} not listed (the verdicts name them; add "
                                   f"them at the end, or export into another folder)")
        return labels, False
    base = LabelSet.generator(shrink="pass_around" in acts)
    return LabelSet(tuple(dict.fromkeys([*base.activities, *acts])),
                    tuple(dict.fromkeys([*base.objects, *products]))), True


def export_verdicts(state_dir, out, *, pad_s: float = DEFAULT_PAD_S) -> dict[str, Any]:
    """Write the verdicts of ``state_dir``'s outbox into the dataset folder ``out`` (an item exported
    before is written again: its verdict may have changed); -> the verdicts.json written."""
    from edge_runtime.atomic_write import atomic_write_bytes

    if not pad_s >= 0:
        raise DatasetError(f"pad: {pad_s} is not a number of seconds >= 0")
    alerts = read_verdicts(state_dir)
    if not alerts:
        raise DatasetError(f"{Path(state_dir) / DB_NAME}: no alert has a verdict yet (give them on the dashboard, "
                           f"or lvm-edge alerts ack ID --outcome confirmed|false_alert|customer_fixed)")
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    labels, write_labels = labels_for(root, alerts)
    items = [verdict_item(a, pad_s) for a in alerts]
    for sub in (ANNOTATIONS, VIDEOS):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for stem, ann, _ in items:
        atomic_write_bytes(root / ANNOTATIONS / f"{stem}.json", (json.dumps(ann, indent=1) + "\n").encode())
    if write_labels:
        atomic_write_bytes(root / LABELS_FILE, labels.to_yaml().encode())
    old = _read_listing(root / VERDICTS_FILE)
    new = {e["stem"]: e for _, _, e in items}
    listing = {"format": "lvm-edge/verdicts", "version": 1,
               "items": [e for e in old if e.get("stem") not in new] + list(new.values())}
    atomic_write_bytes(root / VERDICTS_FILE, (json.dumps(listing, indent=1) + "\n").encode())
    return listing


def _read_listing(path: Path) -> list[dict]:
    """The items of a verdicts.json written before (another state dir's, or this one's earlier)."""
    if not path.is_file():
        return []
    try:
        items = json.loads(path.read_text(encoding="utf-8")).get("items")
    except (OSError, ValueError, AttributeError) as err:
        raise DatasetError(f"{path}: not a verdicts listing ({' '.join(str(err).split())})") from None
    return [e for e in items if isinstance(e, dict)] if isinstance(items, list) else []
