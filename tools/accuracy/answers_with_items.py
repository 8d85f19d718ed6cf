"""The reader's answers alone beside the same answers with the stream's item events (whether it was
seen, and where: edge_runtime/query/item_answers.py), on present and absent queries of every type.

Used by ``python -m tools.accuracy.happened_eval --queries N`` on the videos it streamed. Each video
gets ``n`` ReST queries (every type and window) and ``n // 2`` absent ones (truth "not seen":
edge_runtime/checkout/absent_queries.py). An object is asked by its product class's name, as a
person would ask (edge_runtime/query/by_product.py: the class's drawn pictures), or with
``ask_by="picture"`` by the generator's picture of the asked item alone, as a product with no bundle
class is asked (a picture or a catalog entry of the store's own): the item events then judge it by
the tracks' identity (``IDENTITY_MATCH``). Per type and overall: absent queries answered "not seen",
present ones wrongly so, beside the reader with each type's cut moved to call as many present ones not
seen (``matched_reader``); per type and window (object and time: also per activity), the present answers' R@1x.
``grid``: the same answers judged at other ``SEEN_WITH_ITEMS``, to choose it.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from edge_runtime.checkout import sample_queries
from edge_runtime.checkout.metrics import score_query
from edge_runtime.checkout.absent_queries import sample_absent_queries
from edge_runtime.query import by_product, item_answers
from edge_runtime.query.item_events import covers
from edge_runtime.query.types import BY_NAME, NAMES

GRID = (0.2, 0.3, 0.4, 0.5, 0.6)  # SEEN_WITH_ITEMS tried
IDENTITY_GRID = (0.3, 0.4, 0.5, 0.6, 0.7)  # IDENTITY_MATCH tried (ask_by "picture")


def requests(qs, product: dict[int, str], pictures: dict[int, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """Engine requests for generator queries, the object named by its product class (``pictures``:
    asked by the item's picture instead)."""
    out = []
    for q in qs:
        row = BY_NAME[q.type]
        obj = ({"object_image": pictures[q.instance_id]} if pictures is not None else
               {"product": product[q.instance_id]}) if row.takes_object else {}
        out.append({"type": q.type, "start": q.start, "end": q.end, "k": 3,
                    "activity": q.activity_id if row.takes_activity else None, **obj})
    return out


def shares(rows: list[tuple[str, bool, bool]]) -> dict:
    """(type, absent, said not seen) rows -> per type and overall: absent -> not seen, present -> not seen."""
    out = {}
    for t in (*NAMES, "all"):
        mine = [r for r in rows if t == "all" or r[0] == t]
        ab = [r[2] for r in mine if r[1]]
        pr = [r[2] for r in mine if not r[1]]
        out[t] = {"absent": len(ab), "present": len(pr),
                  "absent_not_seen": round(sum(ab) / len(ab), 4) if ab else None,
                  "present_not_seen": round(sum(pr) / len(pr), 4) if pr else None}
    return out


def matched_reader(rows: list[tuple[str, bool, bool, float]], judged: list[tuple[str, bool, bool]]) -> dict:
    """The reader alone with each type's cut moved (up or down) until it calls as many present queries
    "not seen" as ``judged`` does, or as near under: what the item events add over the reader's own
    evidence at the same cost. ``rows``: (type, absent, the reader said not seen, p_seen)."""
    out = []
    for t in NAMES:
        mine = [r for r in rows if r[0] == t]
        goal = sum(j[2] for j in judged if j[0] == t and not j[1])
        cut = 0.0
        for c in sorted({r[3] for r in mine if not r[1]}) + [1.01]:  # not seen: p_seen under the cut
            if sum(r[3] < c for r in mine if not r[1]) > goal:
                break
            cut = c
        out += [(t, r[1], r[3] < cut) for r in mine]
    return shares(out)


def recall(rows: list[tuple[str, str, float]]) -> dict:
    """(type, window, R@1x) rows of present queries -> mean R@1x in % per type and window (the type
    "object by activity" and "time by activity": per asked activity instead of window)."""
    out: dict = {}
    for t, w in sorted({(r[0], r[1]) for r in rows}):
        got = [r[2] for r in rows if r[0] == t and r[1] == w]
        out.setdefault(t, {})[w] = {"n": len(got), "r@1x": round(100 * sum(got) / len(got), 1)}
    return out


def queries(eng, streams: list, n: int, seed: int, grid: bool = False, ask_by: str = "class") -> dict:
    """Per (stream, video): ``n`` present and ``n // 2`` absent queries; the reader alone and with the
    item events (as the API answers them), and with ``grid`` every cut of ``GRID`` (asked by picture:
    of ``IDENTITY_GRID``)."""
    reader, judged, covered = [], [], 0
    scored: dict[str, list] = {"reader": [], "with_items": []}
    by_picture = ask_by == "picture"
    cuts = (list(IDENTITY_GRID) if by_picture else list(GRID)) if grid else []
    graded: list[list] = [[] for _ in cuts]
    for i, (stream, video) in enumerate(streams):
        ann = video.annotations()
        product = {int(x["instance_id"]): x["product"] for x in ann["instances"]}
        rng = np.random.default_rng(seed * 100 + i)
        qs = sample_queries(ann, n, rng) + sample_absent_queries(ann, n // 2, rng)
        pictures = ({iid: video.object_crop(iid, eng.frame_size) for iid in {q.instance_id for q in qs
                                                                            if BY_NAME[q.type].takes_object}}
                    if by_picture else None)
        reqs = requests(qs, product, pictures)
        alone = SimpleNamespace(engine=eng, stream=None, catalog=None)  # no stream: no item events
        flat, finish_alone = by_product.prepare(alone, reqs)
        flat_answers = eng.answer(stream, flat)
        _, finish = by_product.prepare(SimpleNamespace(engine=eng, stream=stream, catalog=None), reqs)
        a_alone, a_judged = finish_alone(flat_answers), finish(flat_answers)
        for q, r, a, b in zip(qs, reqs, a_alone, a_judged):
            reader.append((q.type, q.absent, a["status"] == "not_seen", float(a.get("p_seen") or 0.0)))
            judged.append((q.type, q.absent, b["status"] == "not_seen"))
            if not q.absent:  # the answer's content, whatever it says of seen (as lvm-eval scores it)
                for who, x in (("reader", a), ("with_items", b)):
                    r1 = score_query(q, x)["recall@1x"]
                    scored[who].append((q.type, q.window, r1))
                    if q.type in ("object", "time"):
                        scored[who].append((f"{q.type} by activity", eng.labels[q.activity_id], r1))
            inside = covers(eng, stream, (q.start, q.end))
            covered += inside
            for c, out in zip(cuts, graded):
                if not inside:
                    x = a
                elif by_picture:
                    x = item_answers.judge(eng, stream, r, a, None, pictures=[r["object_image"]] if "object_image" in r
                                           else None, identity_match=c)
                else:
                    x = item_answers.judge(eng, stream, r, a, r.get("product"), seen_with=c)
                out.append((q.type, q.absent, x["status"] == "not_seen"))
    result = {"per_video": n, "absent_per_video": n // 2, "covered_by_items": covered, "asked_by": ask_by,
              "seen_with_items": item_answers.SEEN_WITH_ITEMS, "identity_match": item_answers.IDENTITY_MATCH,
              "reader": shares([r[:3] for r in reader]), "with_items": shares(judged),
              "reader_matched": matched_reader(reader, judged),
              "recall": {who: recall(rows) for who, rows in scored.items()}}
    if grid:
        key = "identity_match" if by_picture else "seen_with_items"
        result["grid"] = [{key: c, **shares(g)["all"], "activity": shares(g)["activity"]} for c, g in zip(cuts, graded)]
    return result
