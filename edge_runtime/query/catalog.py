"""The product catalog: named products, each with a few reference pictures (crops), kept in the state
directory so that a query can say ``"product": "oat milk 1l"`` instead of sending a picture.

Layout, under ``<state_dir>/catalog/``::

    index.json                      {"format": 1, "products": [{"name", "dir", "files", "sizes", "added"}]}
    p-<hash>-<stamp>/0.png 1.png    one folder per product version, lossless PNGs of what was added

Writes are crash-safe without a journal: a product's pictures go to a NEW folder (each file written
atomically), then the index is replaced atomically to point at it, and only then is the old folder
deleted. A crash at any point leaves the old index with its old folder intact; folders no index
names (what such a crash leaves behind) are removed the next time a valid index is loaded.

Reading never crashes the runtime: an index that does not parse is set aside with one warning and
the catalog starts empty; a product whose pictures are missing or damaged is dropped (one warning
naming how many). Names are matched case-insensitively with runs of whitespace as one space.

Bounds keep a kiosk's disk and a query's cost predictable: products, crops per product, pixels per
picture, bytes of the whole catalog, and the length and characters of a name.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
import time
import unicodedata
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edge_runtime.atomic_write import atomic_write_bytes, fsync_dir, set_aside

log = logging.getLogger("lvm_edge")

FORMAT = 1
INDEX_NAME = "index.json"
MAX_NAME_CHARS = 64
# besides letters and digits (any script): what product names on shelf labels use
NAME_PUNCTUATION = set(" -_.,'&+()%#:")


class CatalogError(ValueError):
    """A catalog request that cannot be done; ``status`` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


MIN_SIDE = 8   # pixels: a 1x1 or 60000x1 picture shows no product (a crop from a 112-px frame can be small)


def normalise_name(name: Any) -> str:
    """The name as stored and shown: whitespace runs as one space, ends trimmed (CatalogError if invalid)."""
    if not isinstance(name, str):
        raise CatalogError(f"product name must be a string, got {type(name).__name__}")
    # NFC: an accent typed as a separate mark (as macOS keyboards and some tills send it) joins its letter
    text = " ".join(unicodedata.normalize("NFC", name).split())
    if not text:
        raise CatalogError("product name is empty")
    if len(text) > MAX_NAME_CHARS:
        raise CatalogError(f"product name is {len(text)} characters; at most {MAX_NAME_CHARS}")
    bad = sorted({c for c in text if not (c.isalnum() or c in NAME_PUNCTUATION)})
    if bad:
        shown = " ".join(repr(c) for c in bad[:5])
        raise CatalogError(f"product name has characters not allowed: {shown} (letters, digits, spaces and "
                           f"{''.join(sorted(NAME_PUNCTUATION - {' '}))} are)")
    if not any(c.isalnum() for c in text):  # "." and ".." would be path steps in its URLs
        raise CatalogError(f"product name {text!r} has no letter or digit")
    return text


def shows_nothing(img: np.ndarray, what: str) -> str | None:
    """Why an (H, W, 3) picture shows no product (None if it may): such a picture matches whatever the
    memory holds, and then answers for the product. The catalog and a query's picture use this check."""
    h, w = img.shape[:2]
    if min(h, w) < MIN_SIDE:
        return f"{what} is {w}x{h}; a product needs at least {MIN_SIDE} pixels a side"
    if int(img.max()) - int(img.min()) < 8:
        return f"{what} is one flat colour (a transparent or blank picture?): it shows no product"
    return None


def name_key(name: str) -> str:
    """What two names must share to be the same product."""
    return " ".join(unicodedata.normalize("NFKC", name).split()).casefold()


def _png(image: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise CatalogError("picture could not be encoded as PNG")
    return buf.tobytes()


def _read_png(path: Path) -> np.ndarray | None:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class Catalog:
    """The products of one state directory. Thread-safe; every change is on disk when it returns."""

    def __init__(self, state_dir: str | Path, *, max_products: int = 200, max_crops_per_product: int = 8,
                 max_pixels: int = 4096 * 4096, max_bytes: int = 512 << 20,
                 warn: Callable[[str], None] | None = None) -> None:
        self.root = Path(state_dir) / "catalog"
        self.max_products = int(max_products)
        self.max_crops = int(max_crops_per_product)
        self.max_pixels = int(max_pixels)
        self.max_bytes = int(max_bytes)
        self._warn = warn or (lambda msg: log.warning(msg))
        self._lock = threading.Lock()
        self._products: dict[str, dict[str, Any]] = {}  # name_key -> index entry
        self._load()

    # -- reading -----------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Product names as added, in the order they were first added."""
        with self._lock:
            return [p["name"] for p in self._products.values()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name_key(name) in self._products

    def __len__(self) -> int:
        return len(self._products)

    def entry(self, name: str) -> dict[str, Any]:
        """{"name", "crops": n, "sizes": [[w, h], ...], "bytes", "added": ISO time (UTC)}."""
        with self._lock:
            return self._public(self._get(name))

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._public(p) for p in self._products.values()]

    def crops(self, name: str) -> list[np.ndarray]:
        """The product's pictures, RGB uint8, in the order they were added (CatalogError 404 if unknown)."""
        paths = self._crop_paths(name)
        out = []
        for path in paths:
            img = _read_png(path)
            if img is None:
                raise CatalogError(f"product '{name}': picture {path.name} is missing or damaged on disk; "
                                   f"add the product again", 409)
            out.append(img)
        return out

    def crop_png(self, name: str, index: int) -> bytes:
        """Picture ``index`` of a product, as the PNG file stored (CatalogError 404 if there is none)."""
        paths = self._crop_paths(name)
        if not 0 <= index < len(paths):
            raise CatalogError(f"product '{name}' has {len(paths)} pictures (0..{len(paths) - 1}); no {index}", 404)
        try:
            return paths[index].read_bytes()
        except OSError:
            raise CatalogError(f"product '{name}': picture {index} is missing on disk; add the product again",
                               409) from None

    def limits(self) -> dict[str, int]:
        return {"products": self.max_products, "crops_per_product": self.max_crops, "pixels": self.max_pixels,
                "bytes": self.max_bytes, "name_chars": MAX_NAME_CHARS}

    # -- changing ----------------------------------------------------------------------------
    def add(self, name: str, images: list[np.ndarray]) -> dict[str, Any]:
        """Add a product, or replace the pictures of one with the same name. Returns its entry, with
        "replaced": whether a product of that name was there before."""
        shown = normalise_name(name)
        self.check_count(len(images))
        for i, img in enumerate(images):
            self.check_image(img, f"picture {i}")
        blobs = [_png(np.ascontiguousarray(img)) for img in images]
        size = sum(len(b) for b in blobs)
        key = name_key(shown)
        with self._lock:
            old = self._products.get(key)
            if old is None and len(self._products) >= self.max_products:
                raise CatalogError(f"the catalog is full ({self.max_products} products); remove one first", 413)
            used = sum(p["bytes"] for k, p in self._products.items() if k != key)
            if used + size > self.max_bytes:
                raise CatalogError(f"the catalog would hold {(used + size) / 2**20:.1f} MiB of pictures; at most "
                                   f"{self.max_bytes / 2**20:.0f} MiB (remove products or send smaller pictures)", 413)
            folder = self._new_folder(key)
            try:
                folder.mkdir(parents=True)
                files = []
                for i, blob in enumerate(blobs):
                    atomic_write_bytes(folder / f"{i}.png", blob)
                    files.append(f"{i}.png")
                fsync_dir(self.root)
                entry = {"name": shown, "dir": folder.name, "files": files,
                         "sizes": [[int(img.shape[1]), int(img.shape[0])] for img in images], "bytes": size,
                         "added": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                products = dict(self._products)
                products[key] = entry
                self._write_index(products)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            self._products = products
            if old is not None:
                shutil.rmtree(self.root / old["dir"], ignore_errors=True)
            return {**self._public(entry), "replaced": old is not None}

    def remove(self, name: str) -> None:
        """Forget a product and delete its pictures (CatalogError 404 if unknown)."""
        with self._lock:
            entry = self._get(name)
            products = {k: p for k, p in self._products.items() if p is not entry}
            self._write_index(products)
            self._products = products
            shutil.rmtree(self.root / entry["dir"], ignore_errors=True)

    # -- checks the API runs before decoding (same messages as add) -----------------------------
    def check_count(self, n: int) -> None:
        if n < 1:
            raise CatalogError("a product needs at least one picture")
        if n > self.max_crops:
            raise CatalogError(f"{n} pictures; at most {self.max_crops} per product", 413)

    def check_image(self, img: Any, what: str) -> None:
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8 or min(img.shape[:2]) < 1:
            raise CatalogError(f"{what} must be an (H, W, 3) uint8 RGB image")
        h, w = img.shape[:2]
        if h * w > self.max_pixels:
            raise CatalogError(f"{what} is {w}x{h}; at most {self.max_pixels} pixels", 413)
        problem = shows_nothing(img, what)
        if problem:
            raise CatalogError(problem)

    # -- internals ---------------------------------------------------------------------------
    def _get(self, name: str) -> dict[str, Any]:
        entry = self._products.get(name_key(name)) if isinstance(name, str) else None
        if entry is None:
            known = ", ".join(p["name"] for p in list(self._products.values())[:10]) or "none yet"
            raise CatalogError(f"unknown product '{' '.join(str(name).split())[:80]}' (known: {known})", 404)
        return entry

    def _crop_paths(self, name: str) -> list[Path]:
        with self._lock:
            entry = self._get(name)
            return [self.root / entry["dir"] / f for f in entry["files"]]

    @staticmethod
    def _public(entry: dict[str, Any]) -> dict[str, Any]:
        return {"name": entry["name"], "crops": len(entry["files"]), "sizes": [list(s) for s in entry["sizes"]],
                "bytes": entry["bytes"], "added": entry["added"]}

    def _new_folder(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        folder, n = self.root / f"p-{digest}-{stamp}", 1
        while folder.exists():
            folder, n = self.root / f"p-{digest}-{stamp}.{n}", n + 1
        return folder

    def _write_index(self, products: dict[str, dict[str, Any]]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        doc = {"format": FORMAT, "products": list(products.values())}
        atomic_write_bytes(self.root / INDEX_NAME, json.dumps(doc, indent=1, ensure_ascii=False).encode())

    def _load(self) -> None:
        path = self.root / INDEX_NAME
        if not path.is_file():
            return
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("products"), list):
                raise ValueError(f"not a format-{FORMAT} catalog index")
        except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            try:
                aside = set_aside(path, "corrupt").name
            except OSError:
                aside = "left in place"
            self._warn(f"{path}: unreadable ({' '.join(str(err).split())[:120]}); the catalog starts empty "
                       f"(kept as {aside})")
            return
        dropped = []
        for raw in doc["products"]:
            entry = self._valid_entry(raw)
            if entry is None or name_key(entry["name"]) in self._products:
                dropped.append(str(raw.get("name", "?")) if isinstance(raw, dict) else "?")
                continue
            self._products[name_key(entry["name"])] = entry
        if dropped:
            self._warn(f"{path}: {len(dropped)} product(s) dropped, their pictures missing or damaged: "
                       f"{', '.join(dropped[:5])}")
        keep = {p["dir"] for p in self._products.values()}
        for folder in self.root.glob("p-*"):  # what an interrupted add or remove left behind
            if folder.is_dir() and folder.name not in keep:
                shutil.rmtree(folder, ignore_errors=True)

    def _valid_entry(self, raw: Any) -> dict[str, Any] | None:
        try:
            name = normalise_name(raw["name"])
            folder, files, sizes = str(raw["dir"]), list(raw["files"]), [list(map(int, s)) for s in raw["sizes"]]
            if "/" in folder or folder.startswith(".") or not files or len(files) != len(sizes):
                return None
            if any(not isinstance(f, str) or "/" in f or f.startswith(".") for f in files):
                return None
            if not all((self.root / folder / f).is_file() for f in files):
                return None
            return {"name": name, "dir": folder, "files": files, "sizes": sizes, "bytes": int(raw.get("bytes", 0)),
                    "added": str(raw.get("added", ""))}
        except (KeyError, TypeError, ValueError, CatalogError):
            return None
