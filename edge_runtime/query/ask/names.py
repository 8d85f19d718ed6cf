"""Matching the words of a question to activity labels and product names.

Two scorers share one interface (a similarity matrix between spans of the question and phrases):
- ``EncoderScorer``: cosine similarity of WordLlama embeddings (token embeddings of a small LLM's
  vocabulary, mean-pooled). The weights and tokenizer ship inside the ``wordllama`` wheel, read here
  with numpy: no hub, no torch, under a second to load, 32 MB of float32.
- ``StringScorer``: plain string similarity (difflib's ratio), the baseline it is measured against.

Each name is matched through its phrases: the name itself (underscores read as spaces), the
variants the encoder gives it (``EncoderScorer.variants``: each word swapped for its nearest words
in the encoder's own vocabulary, e.g. inspect -> examine, put back -> put return) and the synonyms a
user gives it (``<state-dir>/ask-synonyms.yaml``, ``load_synonyms``). Nothing here knows any
particular label: no ways of saying a label are written down here.
"""
from __future__ import annotations

import difflib
import importlib.util
import logging
import re
import unicodedata
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

# Function words carry no name; dropped from the question and the phrases alike so "put in the bag"
# and "put it into a bag" compare the same. Particles that change a verb's meaning (pick UP, put BACK,
# hand OVER) are kept.
STOPWORDS = frozenset("""
a an the this that these those it its it's what's where's who's they them their there here i me my we our you your he she his her
is are was were be been being am do does did done doing has have had having get gets got gotten getting
of in into onto on at to by for from with within about as than then and or but so if
when where what which who whom whose why how whether
any anything some something someone somebody anyone every everything all
please can could would will shall should may might must just also ever yet still
show tell find give me let know see list
happen happened happens happening occur occurred
time times moment point ago
""".split())

# letters and digits of any script (a product named in Chinese or with accents is words too, not
# dropped); an apostrophe's suffix stays on its word ("shopper's")
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")

# English irregular forms -> the plain verb or noun (general English, not any label's): a question
# says "held", "stood", "took out"; a label says hold, stand, pick_up.
IRREGULAR = {
    "held": "hold", "stood": "stand", "met": "meet", "took": "take", "taken": "take", "gave": "give",
    "given": "give", "rang": "ring", "rung": "ring", "brought": "bring", "left": "leave", "ran": "run",
    "threw": "throw", "thrown": "throw", "caught": "catch", "sold": "sell", "bought": "buy", "kept": "keep",
    "saw": "see", "seen": "see", "laid": "lay", "hung": "hang", "stole": "steal", "stolen": "steal",
    "fell": "fall", "fallen": "fall", "hid": "hide", "hidden": "hide", "shook": "shake", "broke": "break",
    "broken": "break", "wore": "wear", "chose": "choose", "drove": "drive", "driven": "drive", "ate": "eat",
    "made": "make", "came": "come", "sat": "sit", "stuck": "stick", "swept": "sweep", "dug": "dig",
    "people": "person", "men": "man", "women": "woman", "children": "child", "knives": "knife",
    "loaves": "loaf", "leaves": "leaf", "shelves": "shelf", "boxes": "box", "dishes": "dish",
}


def stem(w: str) -> str:
    """A light English stem, the same for question and names: bagged, bagging, bags -> bag;
    browsed, browse -> brows; bananas -> banana. Crude on purpose: both sides get the same cut."""
    if w in IRREGULAR:
        return IRREGULAR[w]
    if len(w) <= 3 or not w.isalpha():
        return w
    for suf in ("ing", "ed"):
        if w.endswith(suf) and len(w) - len(suf) >= 3:
            w = w[: -len(suf)]
            if w[-1] == w[-2] and w[-1] not in "lsz":   # bagg -> bag, scann -> scan
                w = w[:-1]
            break
    else:
        if w.endswith("ies") and len(w) > 4:
            w = w[:-3] + "y"
        elif w.endswith(("ches", "shes", "xes", "sses", "zes")):
            w = w[:-2]
        elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
            w = w[:-1]
    return w[:-1] if len(w) > 3 and w.endswith("e") else w


def words(text: str) -> list[str]:
    """Lower-case words; underscores, hyphens and punctuation split words ("pick_up" -> pick, up).
    NFKC first: full-width letters are their ASCII selves, an accent typed apart joins its letter."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold().replace("_", " "))


def content(text: str) -> str:
    return " ".join(w for w in words(text) if w not in STOPWORDS)


def stemmed(text: str) -> str:
    return " ".join(stem(w) for w in text.split())


# -- scorers -----------------------------------------------------------------------------------
class StringScorer:
    name = "string"

    def matrix(self, spans: list[str], phrases: list[str]) -> np.ndarray:
        return np.array([[difflib.SequenceMatcher(None, s, p).ratio() for p in phrases] for s in spans],
                        np.float64).reshape(len(spans), len(phrases))


class EncoderUnavailable(RuntimeError):
    """The wordllama package or its shipped files are missing (one line)."""


_ENCODER = None
_ENCODER_LOCK = threading.Lock()


def _load_wordllama():
    """WordLlama's default model (l2_supercat, 256 dims) from the files inside its wheel.

    WordLlama.load() looks for the tokenizer in a folder the wheel does not have and then downloads
    it from the hub; read both files from the package instead. The package's import also calls
    logging.basicConfig(level=INFO), which would change what this service logs: undone here."""
    spec = importlib.util.find_spec("wordllama")
    if spec is None or spec.origin is None:
        raise EncoderUnavailable("the wordllama package is not installed (pip install '.[runtime]')")
    pkg = Path(spec.origin).parent
    weights = pkg / "weights" / "l2_supercat_256.safetensors"
    tokenizer = pkg / "tokenizers" / "l2_supercat_tokenizer_config.json"
    for f in (weights, tokenizer):
        if not f.is_file():
            raise EncoderUnavailable(f"wordllama is installed without its model file {f.name}")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer
        from wordllama.inference import WordLlamaInference
    finally:
        root.handlers[:], root.level = handlers, level
    embedding = load_file(str(weights))["embedding.weight"]
    return WordLlamaInference(embedding, Tokenizer.from_file(str(tokenizer)))


def encoder():
    """The one WordLlama model of this process (loaded on first use)."""
    global _ENCODER
    with _ENCODER_LOCK:
        if _ENCODER is None:
            _ENCODER = _load_wordllama()
        return _ENCODER


class EncoderScorer:
    name = "encoder"

    def __init__(self) -> None:
        self.model = encoder()
        self._cache: dict[str, np.ndarray] = {}

    def _embed(self, texts: list[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if new:
            for t, v in zip(new, self.model.embed(new, norm=True)):
                self._cache[t] = np.asarray(v, np.float64)
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 1))

    def matrix(self, spans: list[str], phrases: list[str]) -> np.ndarray:
        if not spans or not phrases:
            return np.zeros((len(spans), len(phrases)))
        return self._embed(spans) @ self._embed(phrases).T

    def variants(self, phrase: str) -> list[str]:
        """The phrase with one word swapped for one of its ``NEIGHBOURS`` nearest whole words of the
        encoder's vocabulary (cosine >= ``NEIGHBOUR_MIN``): ways of saying a name that come from the
        encoder, not from a list. Both settings chosen on the tuning part of the phrasing set (docs/ask.md)."""
        ws = phrase.split()
        out = []
        for i, w in enumerate(ws):
            out += [" ".join(ws[:i] + [n] + ws[i + 1:]) for n in _neighbours(self.model, w)]
        return list(dict.fromkeys(out))


NEIGHBOURS = 3
NEIGHBOUR_MIN = 0.5


@lru_cache(maxsize=1)
def _vocabulary(model) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Whole-word tokens of the encoder's vocabulary (ASCII letters, 3+): their ids, their words
    (lower case) and their unit embeddings."""
    inv = {i: t for t, i in model.tokenizer.get_vocab().items()}
    ids = [i for i, t in sorted(inv.items()) if t.startswith("\u2581") and len(t) >= 4 and t[1:].isascii() and t[1:].isalpha()]
    emb = np.asarray(model.embedding, np.float64)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return np.asarray(ids), [inv[i][1:].lower() for i in ids], emb


@lru_cache(maxsize=4096)
def _neighbours(model, word: str) -> tuple[str, ...]:
    """A one-token word's nearest whole words in the encoder (none for a word of several tokens:
    its pooled pieces are no word's neighbour)."""
    tok = model.tokenizer.encode(word, add_special_tokens=False).ids
    if len(tok) != 1:
        return ()
    ids, names, emb = _vocabulary(model)
    sim = emb[ids] @ emb[tok[0]]
    out: list[str] = []
    for j in np.argsort(-sim)[: 4 * NEIGHBOURS + 1]:
        if sim[j] < NEIGHBOUR_MIN or len(out) == NEIGHBOURS:
            break
        if names[j] != word and names[j] not in out:
            out.append(names[j])
    return tuple(out)


class HybridScorer:
    """The better of the two per pair: the encoder knows meanings ("rucksack" ~ "backpack"), string
    similarity knows spelling ("palette" ~ "pallet", "choclate" ~ "chocolate") where the encoder's
    subword tokens of a misspelt word land far from the word's."""
    name = "hybrid"

    def __init__(self) -> None:
        self.encoder, self.string = EncoderScorer(), StringScorer()

    def matrix(self, spans: list[str], phrases: list[str]) -> np.ndarray:
        return np.maximum(self.encoder.matrix(spans, phrases), self.string.matrix(spans, phrases))

    def variants(self, phrase: str) -> list[str]:
        return self.encoder.variants(phrase)

    @property
    def meaning(self) -> EncoderScorer:
        """The scorer of the encoder's own variants."""
        return self.encoder


SCORERS = {"hybrid": HybridScorer, "encoder": EncoderScorer, "string": StringScorer}


def make_scorer(kind: str = "hybrid"):
    if kind not in SCORERS:
        raise ValueError(f"unknown scorer '{kind}' ({', '.join(SCORERS)})")
    return SCORERS[kind]()


# -- synonyms ----------------------------------------------------------------------------------
class SynonymError(ValueError):
    """A synonyms file that cannot be read (one line naming the file)."""


def load_synonyms(path: str | Path) -> dict[str, list[str]]:
    """A YAML mapping of name -> list of other ways to say it. Names that the bundle or catalog does
    not have are ignored where they are used, so one file can serve several bundles."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except OSError as err:
        raise SynonymError(f"{p}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise SynonymError(f"{p}: not valid YAML ({' '.join(str(err).split())[:120]})") from None
    if not isinstance(data, dict):
        raise SynonymError(f"{p}: must map names to lists of phrases")
    out: dict[str, list[str]] = {}
    for name, phrases in data.items():
        if isinstance(phrases, str):
            phrases = [phrases]
        if not isinstance(phrases, list) or not all(isinstance(x, str) for x in phrases):
            raise SynonymError(f"{p}: '{name}' must have a list of phrases")
        out[str(name)] = phrases
    return out


def merge_synonyms(*tables: dict[str, list[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for t in tables:
        for name, phrases in t.items():
            out.setdefault(name.strip().lower(), []).extend(phrases)
    return out


# -- names -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Match:
    name: str       # the label or product as the bundle / catalog spells it
    said: str       # the words of the question it was read from
    phrase: str     # the name or synonym those words matched
    score: float
    first: int      # word positions [first, last) in the question's content words
    last: int


def _both(scorer, spans: list[str], phrases: list[str]) -> np.ndarray:
    raw = scorer.matrix(spans, phrases)
    return np.maximum(raw, scorer.matrix([stemmed(s) for s in spans], [stemmed(p) for p in phrases]))


class NameIndex:
    """One kind of name (activity labels, or products) with their phrases, scored against spans."""

    def __init__(self, kind: str, names: list[str], synonyms: dict[str, list[str]], scorer) -> None:
        self.kind, self.names, self.scorer = kind, list(names), scorer
        self.phrases: list[str] = []
        self.owner: list[int] = []
        self.variant: set[str] = set()  # phrases only the encoder gave: scored by meaning alone
        variants = getattr(scorer, "variants", None)
        for i, name in enumerate(self.names):
            own = content(name) or " ".join(words(name))
            given = [name] + synonyms.get(name.strip().lower(), [])
            extra = variants(own) if variants is not None and own else []
            for ph in given + extra:
                c = content(ph) or " ".join(words(ph))
                if c and c not in (self.phrases[j] for j in range(len(self.phrases)) if self.owner[j] == i):
                    self.phrases.append(c)
                    self.owner.append(i)
                    if ph in extra:
                        self.variant.add(c)

    def _matrix(self, spans: list[str], phrases: list[str]) -> np.ndarray:
        """Words as said and as stems, whichever matches better: stems catch inflections ("scanned"),
        the words as said keep what a stem cuts off ("examined" is closer to "inspect" than "examin").
        The encoder's variants are compared by meaning only: spelling alike a variant is no evidence
        ("hello" is spelt like "held", a variant of hold, and means nothing like it)."""
        out = _both(self.scorer, spans, phrases)
        meaning = getattr(self.scorer, "meaning", self.scorer)
        cols = [j for j, p in enumerate(phrases) if p in self.variant]
        if cols and meaning is not self.scorer and spans:
            out[:, cols] = _both(meaning, spans, [phrases[j] for j in cols])
        return out

    def score(self, spans: list[str]) -> np.ndarray:
        """(spans, names): each name's best phrase score per span."""
        out = np.full((len(spans), len(self.names)), -1.0)
        if not spans or not self.phrases:
            return out
        m = self._matrix(spans, self.phrases)
        for j, i in enumerate(self.owner):
            out[:, i] = np.maximum(out[:, i], m[:, j])
        return out

    def best_phrase(self, span: str, name_i: int) -> str:
        cols = [j for j, i in enumerate(self.owner) if i == name_i]
        m = self._matrix([span], [self.phrases[j] for j in cols])[0]
        return self.phrases[cols[int(np.argmax(m))]]

    def nearest(self, text: str, n: int = 3) -> list[str]:
        """The ``n`` names closest to any span of ``text`` (all names when it has no content words)."""
        spans = [s for s, _, _ in spans_of(words(text))] or [text]
        if not self.names:
            return []
        best = self.score(spans).max(axis=0)
        return [self.names[i] for i in np.argsort(-best, kind="stable")[:n]]


MAX_SPAN = 4  # words; the longest names and synonyms people use are about this long


def spans_of(tokens: list[str]) -> list[tuple[str, int, int]]:
    """Every run of up to MAX_SPAN content words: (text, first, last)."""
    keep = [(i, w) for i, w in enumerate(tokens) if w not in STOPWORDS]
    out = []
    for a in range(len(keep)):
        for b in range(a + 1, min(a + MAX_SPAN, len(keep)) + 1):
            out.append((" ".join(w for _, w in keep[a:b]), keep[a][0], keep[b - 1][0] + 1))
    return out
