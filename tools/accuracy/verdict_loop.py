"""The verdict loop, measured: staff's verdicts on one seed's alerts teach the verifier, which then
holds alerts on another seed; false alerts and targets found, before and after.

    python -m tools.accuracy.head_replay save --eval-seed 1 --videos 8 --shrink 0.45,0.45,0.1 --out /tmp/h-s1r
    python -m tools.accuracy.verdict_loop --learn /tmp/h-s1r --learn /tmp/h-s1 --judge /tmp/h-s2r --judge /tmp/h-s2

Each ``--learn`` folder of saved event-head outputs (``head_replay save``) is replayed through the
item path and the rules as the runtime runs them; every alert gets the verdict staff would give it,
from the generator's ground truth (an alert that found a target ``confirmed``, any other
``false_alert``), and ``edge_runtime.alerts.verifier.fit`` fits the verifier on them with the
runtime's defaults (``alerts.verifier``) and ``--hold-below`` (0.5). Each ``--judge`` folder is replayed the same way and scored
twice: every alert, and the alerts the verifier does not hold (``Verifier.judge``).
Learn on the tuning seed (1), judge on a report seed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_runtime.alerts.settings import VerifierSettings
from edge_runtime.alerts.verifier import fit
from tools.accuracy import alerts_eval as ae
from tools.accuracy import head_replay as hr

STREAM = "lane"   # one lane: every folder is one camera's videos


def _replayed(folder: Path, scans: str):
    """(meta, [(annotations, alerts raised)]) of one folder of saved head outputs."""
    meta = hr.load_meta(folder)
    out = []
    for video, ann, raised in hr.replayed(folder, meta, {r: {} for r in hr.ITEM_RULES}, scans, meta["threshold"]):
        out.append((ann, raised))
        print(f"{folder.name} seed {video.seed}: {len(raised)} alerts", file=sys.stderr, flush=True)
    return meta, out


def verdicts(ann: dict, raised: list[tuple[dict, float]]) -> list[tuple[str, dict, str]]:
    """(stream, alert, outcome) of each alert of one video as staff would judge it from the ground truth:
    ``confirmed`` when it found a target, else ``false_alert``. Early nudges are not alerts (nothing is
    stored, so staff never see them): they get no verdict."""
    want, out = ae.targets(ann), []
    for rule in hr.ITEM_RULES:
        alerts = ae.rule_alerts(raised, rule)
        for draft, _, hit in ae.matches(alerts, want[rule]):
            out.append((STREAM, draft, "confirmed" if hit is not None else "false_alert"))
    return out


def _described(folder: Path) -> str:
    """What a folder of saved outputs holds, in words (the result names no path of this machine)."""
    meta = hr.load_meta(folder)
    rates = ",".join(f"{v:g}" for v in (meta.get("shrink") or {}).values()) or "off"
    return f"seed {meta['eval_seed']}, shrink {rates} ({meta['videos']} videos)"


def _verdicts(folders: list[Path], scans: str) -> list[tuple[str, dict, str]]:
    judged = []
    for folder in folders:
        _, videos = _replayed(folder, scans)
        for ann, raised in videos:
            judged += verdicts(ann, raised)
    return judged


def _judge(folders: list[Path], scans: str, verifier, hold_below: float) -> dict:
    out = {}
    for folder in folders:
        meta, videos = _replayed(folder, scans)
        per = {r: {"all": [], "kept": []} for r in hr.ITEM_RULES}
        scanned = n_tx = 0
        for ann, raised in videos:
            want, paid = ae.targets(ann), ae.paid_bags(ann)
            kept = [x for x in raised if not verifier.judge(STREAM, x[0], hold_below)[1]]
            for r in hr.ITEM_RULES:
                near = ae.unbought_in_basket(ann) if r in ae.ITEM_TARGETS else paid
                per[r]["all"].append(ae.score([x for x in raised if x[0]["rule"] == r], want[r], near))
                per[r]["kept"].append(ae.score([x for x in kept if x[0]["rule"] == r], want[r], near))
            scanned += sum(bool(x["scanned"]) for x in ann["instances"])
            n_tx += sum(s["end"] < meta["video_s"] for s in ann["sessions"])
        hours = len(videos) * meta["video_s"] / 3600
        out[folder.name] = {"eval_seed": meta["eval_seed"], "shrink": meta["shrink"], "videos": len(videos),
                            "scanned_items": scanned, "transactions": n_tx, "hours": round(hours, 3),
                            "rules": {r: {k: ae.summarise(v, scanned, hours, n_tx) for k, v in per[r].items()}
                                      for r in hr.ITEM_RULES}}
    return out


def table(result: dict) -> str:
    rows = ["| videos | rule | targets | found: every alert → verifier | false: every alert → verifier | "
            "false per 100 scanned |", "|---|---|---|---|---|---|"]
    for name, v in result["judged"].items():
        for rule, s in v["rules"].items():
            a, k = s["all"], s["kept"]
            if not a["alerts"] and not a["targets"]:
                continue
            per = f"{a['false_per_100_scanned']} → {k['false_per_100_scanned']}"
            rows.append(f"| {name} (seed {v['eval_seed']}, {v['videos']}) | `{rule}` | {a['targets']} | "
                        f"{a['found']} → {k['found']} | {a['false_alerts']} → {k['false_alerts']} | {per} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.accuracy.verdict_loop", description=__doc__.split("\n\n")[0])
    ap.add_argument("--learn", action="append", required=True, metavar="FOLDER",
                    help="saved head outputs whose alerts staff judge (repeatable)")
    ap.add_argument("--judge", action="append", required=True, metavar="FOLDER",
                    help="saved head outputs of another seed, scored before and after (repeatable)")
    ap.add_argument("--scans", choices=("pos", "vision"), default="pos", help="pos (default): the till's reads")
    ap.add_argument("--hold-below", type=float, default=0.5, metavar="P",
                    help="hold alerts whose p_right is below P (default 0.5; the runtime's default, 0, holds none)")
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args(argv)
    settings = VerifierSettings()
    try:
        judged = _verdicts([Path(f) for f in args.learn], args.scans)
        verifier = fit(judged, min_verdicts=settings.min_verdicts, hold_below=args.hold_below)
        result = {"tool": "tools/accuracy/verdict_loop.py", "scans": args.scans, "hold_below": args.hold_below,
                  "learnt_from": [_described(Path(f)) for f in args.learn], "verdicts": len(judged),
                  "verifier": verifier.summary()["pairs"],
                  "judged": _judge([Path(f) for f in args.judge], args.scans, verifier, args.hold_below)}
    except (OSError, ValueError, KeyError) as err:
        print(f"verdict_loop: {err}", file=sys.stderr)
        return 2
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
