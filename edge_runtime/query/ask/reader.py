"""A question in plain words -> the structured query it means (or AskError naming what it lacks).

Reading a question, in order:
1. the time phrase (``times.find_window``) becomes [start, end] and is cut out of the text;
2. the question's kind from its wording: "when" asks a time query (needs an activity and a
   product), "what did ... do with" / "what happened to" an activity query (needs a product),
   "where" / "which item" an object query (needs an activity). Without such words the names found
   decide: both -> time, a product -> activity, an activity -> object;
3. the names: the best-matching run of words for a product (catalog names), then for an activity
   (the bundle's labels) among the words the product did not use. Products go first because they are
   longer and may contain a label's word ("chips bag").
A name counts when its score reaches the scorer's threshold (``THRESHOLDS``, tuned on the tuning
part of tests/data/ask/phrasings.jsonl only).
4. a time or activity question (or one with no cue) that names no catalog product: its last run of
   unmatched content words is named as not in the catalog ("banana: not in the catalog"); with no
   such words it asks about every product: a reading of type "happened" (what happened in the
   window, of the activity named if any), which /v1/ask answers from /v1/happened.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_runtime.query.ask.names import (STOPWORDS, Match, NameIndex, make_scorer, merge_synonyms,
                                    spans_of, words)
from edge_runtime.query.ask.times import StreamClock, TimeError, Window, find_window
from edge_runtime.query.types import BY_NAME, QUERY_TYPES

# Middles of the plateaus of a sweep on the tuning part (docs/ask.md); the held-out part was not used.
# hybrid's product threshold is where questions about a catalog product are still read (99 %) and
# those about a product missing from it stop being read as another (87 %, "oat milk" -> "whole milk"
# being the rest): tools/accuracy/ask_accuracy.py's catalog sweep.
THRESHOLDS = {"hybrid": {"product": 0.68, "activity": 0.58},
              "encoder": {"product": 0.52, "activity": 0.5},
              "string": {"product": 0.55, "activity": 0.6}}

_TIME_CUE = re.compile(r"\bwhen\b|\bwhat\s+time\b|\bat\s+what\s+point\b|\bhow\s+long\s+ago\b")
_ACTIVITY_CUE = re.compile(r"\bwhat\b.*\b(?:do|doing|done)\b|\bhappen(?:ed|s|ing)?\b|\bwent\s+on\b"
                           r"|\bactivit(?:y|ies)\b|\bactions?\b|\binvolv")
_OBJECT_CUE = re.compile(r"\bwhere\b|\bwhere's\b|\bwhich\b|\bwho\b"
                         r"|\bwhat\s+(?:item|product|thing|object|article)s?\b"
                         r"|\bwhat\s+(?:was|were|got|did|has\s+been|have\s+been)\b")
# words that ask, not name: never matched to a label or product
# (nor the words for "some thing" a question asks about: "show me the item that was held")
_ASKING = frozenset("activities activity action actions involved involve involves went go goes "
                    "recent recently lately latest most last first "
                    "item items product products thing things object objects article articles "
                    "many often times".split())  # "how many items were bagged": the events answer it

# English words around a run of words that is not the thing acted on: a place ("at the checkout"),
# or the one doing ("what did the shopper do")
_ARTICLES = frozenset("the a an this that these those".split())
_PLACE = frozenset("at in on near by behind under from inside beside around".split())
_DOING = frozenset("do doing does did".split())
# a question about what did not happen cannot be answered from what the memory holds: refused, not
# read as the question without its "not"
_NEGATION = frozenset("not never without no".split())
# words nearly every English question has: a refused question with none of them is likely in another
# language, and its refusal says questions are read in English (not only "not in the catalog")
_ENGLISH = frozenset("when what where which who whom how were is are did does has have had the of to at for it "
                     "its this that last first minutes minute hour hours ago some any all me my you your show tell give "
                     "please can could would will with and or from by about many much".split())  # not "was", "a", "on", "in":
# words of German, French or Spanish questions too
# a time phrase that find_window could not read leaves these: refused rather than the whole memory answered
_TIME_LEFT = frozenset("minute minutes min mins hour hours hr hrs second seconds sec secs ago".split())
HAPPENED = "happened"  # not a query type: POST /v1/happened (edge_runtime/query/happened.py)
PLURAL = {"activity": "activities", "product": "products"}
# what a question must name for each type: its given activity, its object as a catalog product
NEEDS = {t.name: tuple("product" if g == "object" else g for g in t.given if g != "window") for t in QUERY_TYPES}
# a type whose cue is missing is still read when the question names exactly what it is given
CUES = (("time", _TIME_CUE), ("activity", _ACTIVITY_CUE), ("object", _OBJECT_CUE))


class AskError(ValueError):
    """A question that could not be read: one line saying what is missing, and the nearest names."""

    def __init__(self, message: str, nearest: list[str] | None = None) -> None:
        super().__init__(message)
        self.message, self.nearest = message, list(nearest or [])


@dataclass
class Reading:
    query: dict[str, Any]                 # what /v1/query/<type> takes: type, start, end, activity, product
    understood: str                       # the query in words, to show beside the answer
    matched: list[dict[str, Any]] = field(default_factory=list)
    time: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"read_as": self.query, "understood": self.understood, "matched": self.matched, "time": self.time}


class Reader:
    """Reads questions against one set of labels and products with one scorer (names.SCORERS; the
    default "hybrid" is the better of the WordLlama encoder and string similarity per pair).
    ``synonyms``: the user's own ways of saying names (``<state-dir>/ask-synonyms.yaml``); None: none."""

    def __init__(self, labels: list[str], products: list[str], *, scorer: Any = "hybrid",
                 synonyms: dict[str, list[str]] | None = None, thresholds: dict[str, float] | None = None) -> None:
        self.scorer = make_scorer(scorer) if isinstance(scorer, str) else scorer
        syn = merge_synonyms(synonyms or {})
        self.labels = NameIndex("activity", labels, syn, self.scorer)
        self.products = NameIndex("product", products, syn, self.scorer)
        self.thresholds = dict(THRESHOLDS[self.scorer.name], **(thresholds or {}))

    def read(self, text: str, clock: StreamClock) -> Reading:
        question = " ".join(str(text).split())
        if not question:
            raise AskError("the question is empty", self.labels.names[:3] + self.products.names[:3])
        if len(question) > 500:
            raise AskError(f"the question is {len(question)} characters; at most 500")
        try:
            window = find_window(question, clock)
        except TimeError as err:
            raise AskError(str(err)) from None
        english = bool(_ENGLISH & set(re.findall(r"[a-z]+", question.lower())))
        names = {w for n in (*self.products.names, *self.labels.names) for w in words(n)}
        foreign = [w for w in re.findall(r"\w+", question.lower()) if not w.isascii() and w not in names]
        if foreign and not english:  # "¿cuándo se escaneó el cartón de leche?" read 'cartón' as egg carton
            raise AskError(f"'{' '.join(foreign[:3])}': questions are read in English only")
        try:
            return self._read(question, window)
        except AskError as err:
            if any(c.isalpha() for c in question) and not english:
                raise AskError(f"{err.message}; questions are read in English only", err.nearest) from None
            raise

    def _read(self, question: str, window: Window) -> Reading:
        rest = question.replace(window.said, " ") if window.said else question
        lowered = " ".join(words(rest))
        kind = self._kind(lowered)
        self._said = words(rest)
        neg = next((w for w in self._said if w in _NEGATION or w.endswith("n't")), None)
        if neg is not None:
            raise AskError(f"'{neg}': a question about what did not happen cannot be read (the memory holds what "
                           f"happened); ask what did, e.g. 'when was it scanned?' (items bagged without a scan: "
                           f"lvm-edge alerts)")
        tokens = [("" if w in _ASKING else w) for w in self._said]

        found, used = self._names(NEEDS[kind] if kind else ("product", "activity"), tokens)
        if kind == "object" and "activity" in found:
            # "where was the milk carton": read for names of both kinds, the words are a product and no
            # activity ('carton' is no "scan" then): the question names no activity
            both, both_used = self._names(("product", "activity"), tokens)
            if "product" in both and "activity" not in both:
                raise self._missing(kind, "activity", question, tokens, both_used)
        if "product" not in found and (kind in ("time", "activity") or (kind is None and found)):
            # a question about a product that names none of the catalog's: say which words were not
            # matched rather than answer about another product; naming none, it asks about all of them
            unknown = self._unknown(tokens, used)
            if unknown:
                raise self._not_in_catalog(unknown, tokens, used)
            if kind is not None:
                return self._happened(kind, found, tokens, used, window)
        if kind is None and "product" in found and "activity" not in found:
            # "was the cheese stolen?": a word left where the activity would be is not one of the bundle's
            left = self._unknown(tokens, used)
            if left:
                near = self._nearest(tokens, used, "activity", 3)
                raise AskError(f"'{left}' is not close to any activity (nearest activities: {', '.join(near)})", near)
        if kind is None:
            kind = next((name for name, needs in NEEDS.items() if found and set(needs) == set(found)), None)
        if kind is None:
            acts, prods = self._nearest(tokens, used, "activity", 3), self._nearest(tokens, used, "product", 3)
            raise AskError(f"could not find an activity or a product in '{question}' (nearest activities: "
                           f"{', '.join(acts) or 'none'}; nearest products: {', '.join(prods) or 'none'})", acts + prods)
        for what in NEEDS[kind]:
            if what not in found:
                raise self._missing(kind, what, question, tokens, used)
        self._nothing_left_out(question, kind, found, tokens, used)

        query: dict[str, Any] = {"type": kind}
        if "activity" in NEEDS[kind]:
            query["activity"] = found["activity"].name
        if "product" in NEEDS[kind]:
            query["product"] = found["product"].name
        query.update(start=round(window.start, 3), end=round(window.end, 3))
        matched = [{"kind": w, "said": m.said, "name": m.name, "phrase": m.phrase, "score": round(m.score, 3)}
                   for w, m in found.items() if w in NEEDS[kind]]
        return Reading(query, _understood(query, window.meaning), matched,
                       {"said": window.said, "meaning": window.meaning})

    # -- parts ---------------------------------------------------------------------------------
    def _nothing_left_out(self, question: str, kind: str, found: dict[str, Match], tokens: list[str],
                          used: set[int]) -> None:
        """AskError for a name or a time the reading would drop: a product in a where-question (it
        finds every item of an activity), a second product, or a time phrase that was not read."""
        other = self._best(self.products, tokens, used)
        if other is not None and other.score >= self.thresholds["product"]:
            if kind == "object":
                act = found["activity"].name
                raise AskError(f"'{other.said}': a where-question finds every item of an activity ({act}) and takes "
                               f"no product; ask when of the {other.name} (its times, with boxes), or where without it",
                               [other.name])
            if "product" in found:
                both = [m.name for m in sorted((found["product"], other), key=lambda m: m.first)]  # as said
                raise AskError(f"two products named ({', '.join(both)}): ask about one at a time", both)
        if "product" in found:
            other_said = self._conjoined(found["product"], tokens, used)
            if other_said:  # "the milk carton and the kombucha": the second is named, not dropped
                raise self._not_in_catalog(other_said, tokens, used)
        time_left = [w for i, w in enumerate(self._said) if i not in used and (w in _TIME_LEFT or w.isdigit())]
        if time_left:
            raise AskError(f"could not read the time in '{question}' ('{' '.join(time_left)}' left over): say "
                           f"it as 'in the last 5 minutes', 'in the first 10 minutes', '5 minutes ago', "
                           f"'since 14:05' or 'between 2:05 and 2:20 pm'")

    def _conjoined(self, m: Match, tokens: list[str], used: set[int]) -> str | None:
        """Unmatched words joined to the product's by "and" or "or", on either side ("the milk carton
        and the kombucha", "the kombucha or the eggs"): a second product the catalog lacks."""
        said = self._said

        def past_articles(i: int, step: int) -> int:
            while 0 <= i < len(said) and said[i] in _ARTICLES:
                i += step
            return i

        for start, step in ((m.last, 1), (m.first - 1, -1)):
            conj = past_articles(start, step)
            if not (0 <= conj < len(said)) or said[conj] not in ("and", "or", "&"):
                continue
            run, i = [], past_articles(conj + step, step)
            while 0 <= i < len(said) and i not in used and tokens[i] and said[i] not in STOPWORDS:
                run.append(i)
                i += step
            if run:
                return " ".join(said[min(run):max(run) + 1])
        return None

    def _unknown(self, tokens: list[str], used: set[int]) -> str | None:
        """The last run of unmatched content words that could name the thing acted on ("when did
        the cashier scan the kombucha" -> "kombucha": English puts it after the verb and the actor
        before it). English grammar, not labels, rules out two kinds of run: a place after a
        preposition ("what happened at the checkout") and the one doing ("what did the shopper do")."""
        runs: list[tuple[int, int]] = []
        start = None
        for i, w in enumerate(tokens + [""]):
            if w and i not in used and w not in STOPWORDS:
                start = i if start is None else start
            elif start is not None:
                runs.append((start, i))
                start = None
        said = self._said
        for a, b in reversed(runs):
            before = next((w for w in reversed(said[:a]) if w not in _ARTICLES), "")
            after = said[b] if b < len(said) else ""
            if before in _PLACE or after in _DOING:
                continue
            return " ".join(said[a:b])
        return None

    def _not_in_catalog(self, unknown: str, tokens: list[str], used: set[int]) -> AskError:
        if not self.products.names:
            return AskError(f"{unknown}: not in the catalog (the catalog is empty: add products with "
                            f"lvm-edge catalog add)")
        near = self.products.nearest(unknown, 3)
        return AskError(f"{unknown}: not in the catalog (nearest products: {', '.join(near)})", near)

    def _happened(self, kind: str, found: dict[str, Match], tokens: list[str], used: set[int], window) -> Reading:
        """A question that names no product: what happened in the window, to every product (of the
        activity it names, if any)."""
        act = found.get("activity")
        if act is None and kind == "activity":  # "what happened" asked no activity; one may still be named
            m = self._best(self.labels, tokens, used)
            act = m if m is not None and m.score >= self.thresholds["activity"] else None
        if act is None and kind == "time":
            raise self._missing(kind, "activity", " ".join(self._said), tokens, used)
        query: dict[str, Any] = {"type": HAPPENED}
        if act is not None:
            query["activity"] = act.name
        query.update(start=round(window.start, 3), end=round(window.end, 3))
        matched = [] if act is None else [{"kind": "activity", "said": act.said, "name": act.name,
                                           "phrase": act.phrase, "score": round(act.score, 3)}]
        return Reading(query, _understood(query, window.meaning), matched,
                       {"said": window.said, "meaning": window.meaning})

    @staticmethod
    def _kind(lowered: str) -> str | None:
        return next((name for name, cue in CUES if name in NEEDS and cue.search(lowered)), None)

    def _names(self, wanted: tuple[str, ...], tokens: list[str]) -> tuple[dict[str, Match], set[int]]:
        """The names the question gives, each from its own words. Tried product first (a product's
        name may hold a label's word: "chips bag") and activity first ("when was the kombucha bagged":
        'bagged' is the activity, not a fuzzy "chips bag"); the reading that finds more names, then
        the one with the higher total score, wins; ties go to product first."""
        best: tuple[tuple[int, float], dict[str, Match], set[int]] | None = None
        for order in (("product", "activity"), ("activity", "product")):
            found: dict[str, Match] = {}
            used: set[int] = set()
            for what in order:
                if what not in wanted:
                    continue
                m = self._best(self.products if what == "product" else self.labels, tokens, used)
                if m is not None and m.score >= self.thresholds[what]:
                    found[what] = m
                    used.update(range(m.first, m.last))
            key = (len(found), sum(m.score for m in found.values()))
            if _split_name(found, self.products.names):  # "milk carton": 'carton' read as an activity, 'milk' as the product
                key = (0, 0.0)
            if best is None or key > best[0]:
                best = (key, found, used)
        return best[1], best[2]

    @staticmethod
    def _free(tokens: list[str], used: set[int]) -> list[str]:
        return [("" if i in used else w) for i, w in enumerate(tokens)]

    def _best(self, index: NameIndex, tokens: list[str], used: set[int]) -> Match | None:
        spans = [s for s in _spans(self._free(tokens, used))]
        if not spans or not index.names:
            return None
        scores = index.score([s for s, _, _ in spans])
        # of (all but) equal scores the longest span: "person with bag" is the product person_with_bag, read
        # from all three words, not from its last ("bag") leaving "person" to read as a second product
        tied = np.argwhere(scores >= scores.max() - 0.01)
        si, ni = (int(x) for x in max(tied, key=lambda c: (spans[c[0]][2] - spans[c[0]][1], -c[0], -c[1])))
        text, first, last = spans[si]
        said = " ".join(w for w in self._said[first:last])
        return Match(index.names[ni], said, index.best_phrase(text, ni), float(scores[si, ni]), first, last)

    def _nearest(self, tokens: list[str], used: set[int], what: str, n: int) -> list[str]:
        index = self.labels if what == "activity" else self.products
        free = " ".join(w for w in self._free(tokens, used) if w)
        return index.nearest(free, n) if free else index.names[:n]

    def _missing(self, kind: str, what: str, question: str, tokens: list[str], used: set[int]) -> AskError:
        index = self.labels if what == "activity" else self.products
        asks = BY_NAME[kind].asks
        if not index.names:
            where = "the catalog is empty (add products: lvm-edge catalog add)" if what == "product" \
                else "the bundle has no activity labels"
            return AskError(f"'{question}' asks {asks}, which needs a {what}, but {where}")
        left = " ".join(w for w in self._free(tokens, used) if w and w not in STOPWORDS)
        said = f" ('{left}' is not close to any)" if left else ""
        near = self._nearest(tokens, used, what, 3)
        return AskError(f"'{question}' asks {asks}, which needs {'an' if what == 'activity' else 'a'} {what}: "
                        f"none named{said}; nearest {PLURAL[what]}: {', '.join(near)}", near)


def _split_name(found: dict[str, Match], products: list[str]) -> bool:
    """A reading that took words of one product's name as the activity: of the product it read, or of
    another whose name holds both readings' words ("milk carton": 'carton' as "scan", 'milk' as "oat milk")."""
    if "product" not in found or "activity" not in found:
        return False
    act, prod = set(words(found["activity"].said)), set(words(found["product"].said))
    return act <= set(words(found["product"].name)) or any(
        act | prod <= set(words(p)) for p in products)


def _spans(tokens: list[str]) -> list[tuple[str, int, int]]:
    """Spans of the free words: a cut-out word (used, or asking) breaks a span."""
    out, run = [], []
    for i, w in enumerate(tokens + [""]):
        if w:
            run.append(i)
            continue
        if run:
            for s, a, b in spans_of([tokens[j] for j in run]):
                out.append((s, run[0] + a, run[0] + b))
        run = []
    return out


def _understood(q: dict[str, Any], meaning: str) -> str:
    # "in the last 10 min", but "since 1:05" and "1:05 ± 60 s" take no "in"
    win = f"{'in ' if meaning.startswith('the ') else ''}{meaning} (stream {q['start']:g}-{q['end']:g} s)"
    if q["type"] == HAPPENED:
        said = "what happened" + (f" ('{q['activity']}', to any product)" if q.get("activity") else "")
    else:
        said = BY_NAME[q["type"]].reads.format(activity=f"'{q.get('activity')}'", object=f"'{q.get('product')}'")
    return f"{said}, {win}"


def read_question(text: str, *, labels: list[str], products: list[str], clock: StreamClock,
                  scorer: Any = "hybrid", synonyms: dict[str, list[str]] | None = None) -> Reading:
    """One question -> its Reading (AskError when it cannot be read)."""
    return Reader(labels, products, scorer=scorer, synonyms=synonyms).read(text, clock)
