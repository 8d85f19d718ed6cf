"""How often `lvm-edge ask` reads a question as meant: the share of tests/data/ask/phrasings.jsonl
read to exactly the expected structured query (or refused, where a refusal is expected), for the
WordLlama encoder, plain string matching and the better of the two per pair (the default), each with
the encoder's name variants (names.EncoderScorer.variants) and without, on the tuning part and the
held-out part apart. No synonyms are given: a user's ask-synonyms.yaml is theirs.

    python -m tools.accuracy.ask_accuracy                    # everything -> docs/accuracy/ask.json
    python -m tools.accuracy.ask_accuracy --split tune -v    # while tuning: never look at the held-out part

It also sweeps the product threshold (``catalog_sweep``): questions about a catalog product should
be read, the same questions with that product removed from the catalog should be refused.

A reading is right when type, activity, product and refusal match and start / end are within 0.5 s.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from edge_runtime.query.ask import AskError, Reader, StreamClock
from edge_runtime.query.ask.names import make_scorer
from tools.repo_paths import REPO

DATA = REPO / "tests" / "data" / "ask"
TOLERANCE_S = 0.5


def load_set() -> tuple[list[dict], dict]:
    rows = [json.loads(line) for line in (DATA / "phrasings.jsonl").read_text().splitlines() if line.strip()]
    return rows, json.loads((DATA / "worlds.json").read_text())


def clock_of(spec: dict) -> StreamClock:
    origin = None
    if spec.get("wall_now"):
        origin = datetime.fromisoformat(spec["wall_now"]).timestamp() - spec["stream_now"]
    return StreamClock(stream_now=spec["stream_now"], memory_start=spec["memory_start"], wall_origin=origin,
                       tz=timezone.utc)


class _NoVariants:
    """A scorer as it is, without the encoder's name variants."""

    def __init__(self, scorer) -> None:
        self.name, self.matrix = scorer.name, scorer.matrix


def readers(worlds: dict, scorer: str, variants: bool = True) -> dict[str, Reader]:
    sc = make_scorer(scorer)
    return {name: Reader(w["labels"], w["products"], scorer=sc if variants else _NoVariants(sc))
            for name, w in worlds["worlds"].items()}


def judge(row: dict, reader: Reader, clock: StreamClock) -> tuple[bool, dict]:
    """(right?, what was read) for one phrasing."""
    exp = row["expect"]
    try:
        got = reader.read(row["text"], clock).query
    except AskError as err:
        return bool(exp.get("error")), {"error": err.message, "nearest": err.nearest}
    if exp.get("error"):
        return False, got
    same = all(got.get(k) == exp.get(k) for k in ("type", "activity", "product"))
    close = abs(got["start"] - exp["start"]) <= TOLERANCE_S and abs(got["end"] - exp["end"]) <= TOLERANCE_S
    return same and close, got


def measure(rows: list[dict], worlds: dict, scorer: str, variants: bool = True, verbose: bool = False) -> dict:
    rd = readers(worlds, scorer, variants)
    clocks = {k: clock_of(v) for k, v in worlds["clocks"].items()}
    wrong, t0 = [], time.perf_counter()
    for row in rows:
        ok, got = judge(row, rd[row["world"]], clocks[row["clock"]])
        if not ok:
            wrong.append({"id": row["id"], "text": row["text"], "expected": row["expect"], "read": got})
            if verbose:
                print(f"  {row['id']} {row['text']!r}\n      expected {row['expect']}\n      read     {got}")
    n = len(rows)
    return {"n": n, "right": n - len(wrong), "share": round((n - len(wrong)) / n, 4) if n else None,
            "ms_per_question": round(1000 * (time.perf_counter() - t0) / max(n, 1), 2), "wrong": wrong}


def catalog_sweep(rows: list[dict], worlds: dict, thresholds=(0.55, 0.6, 0.65, 0.68, 0.7, 0.75, 0.8)) -> dict:
    """Where the product threshold should be: each question naming a product is read, at each
    threshold, with the whole catalog (it should be read as its product) and with its product removed
    from the catalog (it should be refused, not read as another). The whole reader runs at each
    threshold, so a refusal for any reason (a word left over named as not in the catalog) counts as
    the user sees it. -> per threshold the share of each kept right."""
    clocks = {k: clock_of(v) for k, v in worlds["clocks"].items()}
    sc = make_scorer("hybrid")

    def product(row: dict, products: list[str], t: float) -> str | None:
        w = worlds["worlds"][row["world"]]
        try:
            got = Reader(w["labels"], products, scorer=sc, thresholds={"product": t}).read(row["text"],
                                                                                        clocks[row["clock"]])
        except AskError:
            return None
        return got.query.get("product")

    asked = [r for r in rows if r["expect"].get("product")]
    by_threshold = {}
    for t in thresholds:
        read = refused = 0
        for row in asked:
            want, prods = row["expect"]["product"], worlds["worlds"][row["world"]]["products"]
            read += product(row, prods, t) == want
            refused += product(row, [p for p in prods if p != want], t) is None
        by_threshold[f"{t:g}"] = {"present_read": round(read / max(len(asked), 1), 4),
                                  "missing_refused": round(refused / max(len(asked), 1), 4)}
    return {"present": len(asked), "missing": len(asked), "by_threshold": by_threshold}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.accuracy.ask_accuracy", description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=("tune", "heldout", "both"), default="both")
    ap.add_argument("--scorer", choices=("hybrid", "encoder", "string", "all"), default="all")
    ap.add_argument("--variants", choices=("on", "off", "both"), default="both",
                    help="the encoder's name variants")
    ap.add_argument("--json", default=str(REPO / "docs" / "accuracy" / "ask.json"),
                    help="where to write the result (only when everything ran)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every wrong reading")
    args = ap.parse_args(argv)
    rows, worlds = load_set()
    splits = {"tune": [r for r in rows if not r["heldout"]], "heldout": [r for r in rows if r["heldout"]]}
    if args.split != "both":
        splits = {args.split: splits[args.split]}
    scorers = ("hybrid", "encoder", "string") if args.scorer == "all" else (args.scorer,)
    variants = ("on", "off") if args.variants == "both" else (args.variants,)
    result = {"set": "tests/data/ask/phrasings.jsonl", "tolerance_s": TOLERANCE_S,
              "counts": {k: len(v) for k, v in splits.items()}, "runs": {}}
    for var in variants:
        for scorer in scorers:
            key = f"{scorer}/variants-{var}"
            result["runs"][key] = {}
            for split, part in splits.items():
                if args.verbose:
                    print(f"{key} / {split}:")
                r = measure(part, worlds, scorer, var == "on", verbose=args.verbose)
                result["runs"][key][split] = r
                print(f"{key:26s} {split:8s} {r['right']:4d}/{r['n']:<4d} = {100 * r['share']:5.1f} %  "
                      f"({r['ms_per_question']} ms per question)")
    result["catalog_sweep"] = {}
    for split, part in splits.items():
        sweep = result["catalog_sweep"][split] = catalog_sweep(part, worlds)
        print(f"product threshold, {split}: " + "; ".join(f"{t} read {v['present_read']:.3f} refused "
                                                          f"{v['missing_refused']:.3f}"
                                                          for t, v in sweep["by_threshold"].items()))
    if args.split == "both" and args.scorer == "all" and args.variants == "both":
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
