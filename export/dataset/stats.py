"""What a dataset holds: videos, hours, events per activity and instances per object label, per split."""
from __future__ import annotations

from .folder import Dataset, DatasetItem


def _summary(items: list[DatasetItem], activities: tuple[str, ...], objects: tuple[str, ...]) -> dict:
    acts = dict.fromkeys(activities, 0)   # every label listed, unused ones at 0: a label nobody
    objs = dict.fromkeys(objects, 0)      # annotated is worth seeing before training on it
    total = 0.0
    for it in items:
        ann = it.annotations
        total += ann["duration_s"]
        for e in ann["events"]:
            acts[e["activity"]] += 1
        for inst in ann["instances"]:
            objs[inst["product"]] += 1
    n_events = sum(acts.values())
    return {"videos": len(items), "duration_s": round(total, 2),
            "mean_duration_s": round(total / len(items), 2) if items else 0.0,
            "events": n_events, "events_per_hour": round(n_events / (total / 3600.0), 2) if total > 0 else 0.0,
            "instances": sum(objs.values()), "activities": acts, "objects": objs}


def dataset_stats(ds: Dataset) -> dict:
    """{"all": summary, "splits": {name: summary}}; a summary counts videos, durations (s), events,
    events per hour, instances, and events per activity / instances per object label."""
    a, o = ds.labels.activities, ds.labels.objects
    names = sorted({it.split for it in ds.items})
    return {"root": str(ds.root), "all": _summary(ds.items, a, o),
            "splits": {s: _summary([it for it in ds.items if it.split == s], a, o) for s in names}}


def _hms(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def format_stats(stats: dict) -> str:
    """The stats as a table: one column per split plus the total."""
    cols = list(stats["splits"].items()) + [("all", stats["all"])]
    rows = [("videos", lambda x: str(x["videos"])),
            ("duration (h:mm:ss)", lambda x: _hms(x["duration_s"])),
            ("mean duration (s)", lambda x: f"{x['mean_duration_s']:.1f}"),
            ("events", lambda x: str(x["events"])),
            ("events per hour", lambda x: f"{x['events_per_hour']:.1f}"),
            ("instances", lambda x: str(x["instances"]))]
    rows += [(f"  activity {k}", lambda x, k=k: str(x["activities"][k])) for k in stats["all"]["activities"]]
    rows += [(f"  object {k}", lambda x, k=k: str(x["objects"][k])) for k in stats["all"]["objects"]]
    w0 = max(len(r[0]) for r in rows)
    cells = [[fn(c) for _, c in cols] for _, fn in rows]
    widths = [max(len(name), *(len(r[j]) for r in cells)) for j, (name, _) in enumerate(cols)]
    head = " " * w0 + "  " + "  ".join(name.rjust(w) for (name, _), w in zip(cols, widths))
    lines = [head] + [label.ljust(w0) + "  " + "  ".join(v.rjust(w) for v, w in zip(r, widths))
                      for (label, _), r in zip(rows, cells)]
    return "\n".join(lines)
