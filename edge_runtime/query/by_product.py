"""Queries that name a catalog product instead of sending a picture.

A request with ``"product": NAME`` (and no ``object_image``) is asked once per picture of that
product, all in the same heads call as the rest of the batch, and the per-picture answers are
combined into one answer shaped like a picture query's, by the combine of its type's row
(types.py):

- activity: per class, the highest score any picture got (``scores``), ranked best first. A class
  is reported if the product was seen doing it from any side; a picture that does not match the
  product at all only lowers its own scores, which the max ignores.
- time: the intervals of every picture pooled, one interval of an event (tIoU > 0.5 with a better one) kept once at
  its highest probability, best first, ``k`` of them. So the top interval is the best interval of
  the picture whose best interval scores highest.

Answers of the memory reader also carry a judgement (status not_seen, p_seen, confidence): the
product's is that of its picture with the highest p_seen, so a product counts as seen when any
side of it was.

How this compares with one picture, measured on held-out generator videos with the shipped bundle:
``tools/data/catalog_crops.py`` and docs/accuracy/catalog_crops.json (summarised in docs/catalog.md).

Other query types take no object picture; a request without ``product`` passes through untouched
(but every answer is judged with the stream's item events, and an object answer may take an item
track's boxes: ``prepare``).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

from edge_runtime.query.catalog import Catalog, CatalogError
from edge_runtime.query.item_answers import from_items
from edge_runtime.query.types import BY_NAME, QUERY_TYPES

OBJECT_TYPES = tuple(t.name for t in QUERY_TYPES if t.takes_object)  # the query types that ask about an object
RULE = {t.name: t.combine_rule for t in QUERY_TYPES if t.combine is not None}
JUDGED = ("status", "message", "answered_spans", "p_seen", "confidence")  # the reader's judgement of an answer


def check_object(object_image: Any, product: Any, where: str = "") -> None:
    """Exactly one of the two ways to name the object (CatalogError 422 otherwise); ``where``: the
    field path of the request in a batch ("queries.3")."""
    at = f"{where}." if where else ""
    if object_image is not None and product is not None:
        raise CatalogError(f"give {at}object_image or {at}product, not both")
    if object_image is None and product is None:
        raise CatalogError(f"missing field '{at}object_image' (or '{at}product', a catalog name)")


def expand(requests: list[dict[str, Any]], catalog: Catalog | None, classes: dict[str, list] | None = None,
           bundle_products: list[str] = ()) -> tuple[list[dict[str, Any]], list[tuple[int, int, str | None]]]:
    """Requests with a product -> one request per picture. Returns the flat requests and, per original
    request, (first, count) of its flat requests and the product's name as the catalog shows it.
    ``classes`` (``answer`` gives them when the catalog is empty): the bundle's product classes by their
    drawn pictures (``class_pictures``), so a class name is a product, as in what happened."""
    flat: list[dict[str, Any]] = []
    spans: list[tuple[int, int, str | None]] = []
    for req in requests:
        name = req.get("product")
        if name is None:
            spans.append((len(flat), 1, None))
            flat.append(req)
            continue
        if req.get("type") not in OBJECT_TYPES:
            raise CatalogError(f"{req.get('type')} queries take no product (only {' and '.join(OBJECT_TYPES)} do)")
        by_class = classes and _class_name(classes, name)
        if by_class:
            shown, crops = by_class, classes[by_class]
        elif catalog is None:
            raise CatalogError("no product catalog: the runtime has no state directory (start with --state-dir)", 409)
        else:
            if name not in catalog and _class_name(bundle_products, name):
                # own footage's classes come as names only (the generator's are drawn): a picture is needed
                raise CatalogError(f"'{name}' is one of the bundle's product classes, but the runtime has no "
                                   f"picture of it to ask with: add some (lvm-edge catalog add \"{name}\" PHOTO...)",
                                   404)
            shown = catalog.entry(name)["name"]
            crops = catalog.crops(name)
        base = {k: v for k, v in req.items() if k != "product"}
        spans.append((len(flat), len(crops), shown))
        flat.extend({**base, "object_image": crop} for crop in crops)
    return flat, spans


def _class_name(classes: Iterable[str], name: Any) -> str | None:
    """The class of ``classes`` (names, or a dict keyed by them) ``name`` means (case and spacing aside), or None."""
    key = " ".join(str(name).lower().replace("_", " ").split())
    return next((c for c in classes if " ".join(c.lower().replace("_", " ").split()) == key), None)


def class_products(runtime) -> dict[str, list]:
    """The runtime's bundle product classes that can be drawn -> their pictures (empty if none)."""
    from edge_runtime.query.class_pictures import class_pictures

    engine = runtime.engine
    return class_pictures(list(getattr(engine, "products", [])), engine.frame_size)


def combine(answers: list[dict[str, Any]], qtype: str, k: int = 3) -> dict[str, Any]:
    """Per-picture answers of one product query -> one answer (see the module docstring)."""
    out = dict(answers[0])
    row = BY_NAME.get(qtype)
    if row is not None and row.combine is not None:
        out.update(row.combine(answers, k))
    judged = [a for a in answers if a.get("p_seen") is not None]
    if judged:  # reader answers: the product is seen if any picture of it is, so the likeliest picture judges
        best = max(judged, key=lambda a: a["p_seen"])
        for key in JUDGED:
            out.pop(key, None)
            if key in best:
                out[key] = best[key]
    return out


def prepare(runtime, requests: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Callable[[list[dict[str, Any]]], list[dict[str, Any]]]]:
    """Requests that may name a product -> (the flat requests to answer, ``finish``: their answers ->
    one answer per request, judged with the item events, an object answer with the track's boxes of the
    item event it agrees with: edge_runtime/query/item_answers.py). What ``answer`` does around ``runtime.query``, so that
    the API's event loop can await the answers in between."""
    if not any(r.get("product") is not None for r in requests):
        flat, spans = requests, [(i, 1, None) for i in range(len(requests))]
    else:
        catalog = getattr(runtime, "catalog", None)
        classes = class_products(runtime) if catalog is None or not len(catalog) else None
        flat, spans = expand(requests, catalog, classes, list(getattr(runtime.engine, "products", [])))

    def finish(flat_answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        products = list(getattr(runtime.engine, "products", []))
        out = []
        for req, (first, n, shown) in zip(requests, spans):
            if shown is None:
                a = flat_answers[first]
            else:
                qtype = req.get("type")
                a = combine(flat_answers[first:first + n], qtype, int(req.get("k") or 3))
                a["product"] = {"name": shown, "crops": n, "rule": RULE.get(qtype)}
            # whether, and where: the item events beside the reader's answer (item_answers.py); a product
            # without a bundle class is matched by its pictures' identity
            named = _class_name(products, req["product"]) if req.get("product") is not None else None
            pictures = None if named is not None else [
                r["object_image"] for r in flat[first:first + n] if isinstance(r.get("object_image"), np.ndarray)]
            out.append(from_items(runtime.engine, getattr(runtime, "stream", None), req, a, named, pictures))
        return out

    return flat, finish


def answer(runtime, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``runtime.query`` for requests that may name a product: one batched call, combined answers;
    a product's answer also says {"product": {"name", "crops", "rule"}}."""
    flat, finish = prepare(runtime, requests)
    return finish(runtime.query(flat))
