"""The query routes: POST /v1/query/<type>, one per row of edge_runtime/query/types.py (its body from
``api_query_bodies``, its answer ``api_answer.Answer``), and POST /v1/query/batch; and the plain
functions they are, ``answer_query`` and ``answer_batch``, which /v1/ask calls as well.

A query's work here is building its request (the activity by name, the object's picture decoded
and checked); the stream's query batcher checks it and answers it with whatever else was asked
meanwhile. The routes await that on the event loop rather than block one of the server's worker
threads per request: it takes a fifth off the CPU a request costs the server under 32 concurrent
clients (docs/reliability/README.md).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter

from edge_runtime.query import by_product as product_query
from edge_runtime.query.catalog import shows_nothing
from edge_runtime.query.types import BY_NAME, QUERY_TYPES, QueryType
from edge_runtime.serve.api_answer import Answer, BatchAnswers
from edge_runtime.serve.api_deps import GUARDED, Hub, Settings
from edge_runtime.serve.api_errors import ApiError
from edge_runtime.serve.api_images import decode_image
from edge_runtime.serve.api_query_bodies import QUERY_BODIES, BatchQuery
from edge_runtime.serve.streams import StreamError, Streams

router = APIRouter(tags=["queries"], dependencies=GUARDED)


def _picture(data: str | None, field: str, max_pixels: int) -> np.ndarray | None:
    if data is None:
        return None
    picture = decode_image(data, field, max_pixels)
    problem = shows_nothing(picture, field)  # as the catalog refuses it: it would answer for anything
    if problem:
        raise ApiError(422, problem)
    return picture


async def _answered(rt, reqs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    flat, finish = product_query.prepare(rt, reqs)
    return finish(await rt.query_async(flat))


def _present(answer: dict[str, Any], req: dict[str, Any], labels: list[str], stream: str) -> dict[str, Any]:
    out = {"type": req["type"], "window": [req["start"], req["end"]], "stream": stream}
    if req.get("activity") is not None:
        out["activity"] = labels[req["activity"]]
    out.update(answer)
    row = BY_NAME[req["type"]]
    if row.labelled is not None:
        out.update(row.labelled(answer, labels))
    return out


async def answer_query(hub: Streams, kind: str, q: Any, max_image_pixels: int) -> dict[str, Any]:
    """One query of type ``kind``, ``q`` its body (``QUERY_BODIES[kind]``): what /v1/query/<kind> answers."""
    row, engine = BY_NAME[kind], hub.engine
    req: dict[str, Any] = {"type": row.name, "start": q.start, "end": q.end}
    if row.takes_object:
        product_query.check_object(q.object_image, q.product)
    if row.takes_activity:
        req["activity"] = engine.activity_id(q.activity)
    if row.takes_object:
        req.update(product=q.product, object_image=_picture(q.object_image, "object_image", max_image_pixels))
    req.update({opt: getattr(q, opt) for opt in row.options})
    rt = hub.get(q.stream)
    return _present((await _answered(rt, [req]))[0], req, engine.labels, rt.name)


async def answer_batch(hub: Streams, q: BatchQuery, max_image_pixels: int) -> dict[str, Any]:
    """Many queries of any types and streams: what /v1/query/batch answers."""
    engine = hub.engine
    runtimes = []
    for i, it in enumerate(q.queries):  # every stream is checked before any image is decoded
        try:
            runtimes.append(hub.get(it.stream))
        except StreamError as err:
            raise StreamError(f"queries.{i}.stream: {err}", err.status) from None
    reqs = []
    for i, it in enumerate(q.queries):
        need_act, need_obj = BY_NAME[it.type].takes_activity, BY_NAME[it.type].takes_object
        if need_act and it.activity is None:
            raise ApiError(422, f"missing field 'queries.{i}.activity'")
        if need_obj:
            product_query.check_object(it.object_image, it.product, f"queries.{i}")
        reqs.append({"type": it.type, "start": it.start, "end": it.end,
                     "activity": engine.activity_id(it.activity) if need_act else None,
                     "object_image": _picture(it.object_image, f"queries.{i}.object_image", max_image_pixels)
                     if need_obj else None,
                     "product": it.product if need_obj else None, "fps": it.fps, "k": it.k})
    groups: dict[str, list[int]] = {}
    for i, rt in enumerate(runtimes):
        groups.setdefault(rt.name, []).append(i)
    out: list[dict[str, Any]] = [{}] * len(reqs)
    for idx in groups.values():
        rt = runtimes[idx[0]]
        for i, a in zip(idx, await _answered(rt, [reqs[i] for i in idx])):
            out[i] = _present(a, reqs[i], engine.labels, rt.name)
    return {"answers": out}


def _add_query_route(row: QueryType) -> None:
    async def route(q, hub: Hub, settings: Settings) -> dict[str, Any]:
        return await answer_query(hub, row.name, q, settings.max_image_pixels)

    # FastAPI names the operation and reads the body model from these
    route.__name__ = f"query_{row.name}"
    route.__annotations__ = {"q": QUERY_BODIES[row.name], "hub": Hub, "settings": Settings, "return": dict[str, Any]}
    said = row.reads.format(activity="this activity", object="this object (a picture, or a catalog product)")
    route.__doc__ = f"{said[0].upper()}{said[1:]}, in the window?"
    router.post(f"/v1/query/{row.name}", response_model=Answer, response_model_exclude_unset=True)(route)


for _row in QUERY_TYPES:
    _add_query_route(_row)


@router.post("/v1/query/batch", response_model=BatchAnswers, response_model_exclude_unset=True)
async def query_batch(q: BatchQuery, hub: Hub, settings: Settings) -> dict[str, Any]:
    """Many queries of any types, of any streams: one heads call per stream named."""
    return await answer_batch(hub, q, settings.max_image_pixels)
