"""POST /v1/ask: a question in plain words, read into a structured query and answered by the same
functions as /v1/query/<type> and /v1/happened.

    {"text": "when was the oat milk bagged in the last 10 minutes?", "stream": "cam2"}
    -> {"question": ..., "read_as": {"type": "time", "activity": "bag", "product": "oat milk",
        "start": 6600.0, "end": 7200.0}, "understood": "...", "matched": [...], "time": {...},
        "scorer": "hybrid", "answer": <what /v1/query/time returns for read_as>}

A question that names no product is answered over all of them: "what happened in the last 5
minutes?" and "when was something scanned?" are read as type "happened" and answered by POST
/v1/happened; an object question ("what was bagged?") also gets ``events``, what happened of its
activity in the window. A product the catalog lacks is named: 422 "kombucha: not in the catalog".
A question that cannot be read gets 422 {"error": "<what was not understood>", "nearest": [names]}.
Names are the bundle's activity labels and the catalog's products (with an empty catalog, the
bundle's product classes, asked by their drawn pictures), matched through the text encoder
and the user's ``<state-dir>/ask-synonyms.yaml`` when it exists (docs/ask.md). Without ``stream`` the default
stream answers; "the last 10 minutes" is read on the clock of the stream asked.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from edge_runtime.query.ask import AskError, EncoderUnavailable, Reader, StreamClock, SynonymError, load_synonyms
from edge_runtime.query.ask.names import StringScorer, make_scorer
from edge_runtime.query.ask.times import EMPTY_MEMORY, stream_time_now
from edge_runtime.query.by_product import class_products
from edge_runtime.query.happened import HappenedError
from edge_runtime.serve.api_deps import GUARDED, Hub, Settings
from edge_runtime.serve.api_errors import one_line
from edge_runtime.serve.api_happened import HappenedBody, happened_answer
from edge_runtime.serve.api_queries import answer_query
from edge_runtime.serve.api_query_bodies import QUERY_BODIES

MAX_QUESTION_CHARS = 500
SYNONYMS_FILE = "ask-synonyms.yaml"


class AskBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # true is no number, "1" no time: refused
    # "question" too: the reply gives the question back under that name
    text: str = Field(description="the question, e.g. 'when was the oat milk bagged in the last 10 minutes?' "
                                  "(also accepted as question)",
                      max_length=MAX_QUESTION_CHARS, validation_alias=AliasChoices("text", "question"))
    stream: str | None = Field(None, description="the stream to ask (GET /v1/streams); default: the default stream")


class AskReply(BaseModel):
    question: str = Field(description="the question as asked")
    read_as: dict[str, Any] = Field(description="the structured query it was read as (type, activity, product, "
                                                "start, end): what /v1/query/<type> or /v1/happened takes")
    understood: str = Field(description="that query in words")
    matched: list[dict[str, Any]] = Field(description="the words matched to names: said, name, score")
    time: dict[str, str] = Field(description="the time words read, and what they meant")
    scorer: str = Field(description="how names were matched")
    answer: dict[str, Any] = Field(description="what /v1/query/<type> (or /v1/happened) answers for read_as")
    events: list[dict[str, Any]] | None = Field(None, description="an object question: what happened of its "
                                                                  "activity in the window")


def stream_clock(runtime) -> StreamClock:
    """The runtime's clock: the memory's span, and for a live source the wall time of stream time 0
    (then "now" is the wall clock's now, so "the last 10 minutes" means the real last 10 minutes)."""
    cov = runtime.stream.coverage or {}
    # an empty memory has no span yet (None): its clock starts at 0 and every window is uncovered
    start, end = float(cov.get("start") or 0.0), float(cov.get("end") or 0.0)
    origin = getattr(runtime, "wall_origin", None)
    return StreamClock(stream_now=stream_time_now(end, origin), memory_start=start, wall_origin=origin)


class _Scorers:
    """One scorer per process (its embedding cache lives across questions); string matching when
    the wordllama package is missing, said in every answer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scorer = None
        self.note = "hybrid"

    def get(self):
        with self._lock:
            if self._scorer is None:
                try:
                    self._scorer = make_scorer("hybrid")
                except EncoderUnavailable as err:
                    self._scorer, self.note = StringScorer(), f"string ({err})"
            return self._scorer


def _synonyms(hub) -> dict[str, list[str]]:
    state_dir = getattr(hub, "state_dir", None)  # the run's state dir (not a named stream's own folder)
    if state_dir is not None and (Path(state_dir) / SYNONYMS_FILE).is_file():
        return load_synonyms(Path(state_dir) / SYNONYMS_FILE)
    return {}


SCORERS = _Scorers()
# the body each kind of reading is answered with, as its own route takes it
BODIES: dict[str, type[BaseModel]] = {**QUERY_BODIES, "happened": HappenedBody}

router = APIRouter(tags=["queries"], dependencies=GUARDED)


def _read(hub, q: AskBody):
    """(the stream asked, the question's reading) or the refusal; reading is CPU work (the text
    encoder): the route runs this in a worker thread, not on the event loop."""
    runtime = hub.get(q.stream)
    catalog = getattr(hub, "catalog", None)
    products = catalog.names() if catalog is not None else []
    if not products:  # an empty catalog: the bundle's product classes are the products, as in /v1/happened
        products = [c.replace("_", " ") for c in class_products(runtime)]
    try:
        synonyms = _synonyms(hub)
    except SynonymError as err:
        return JSONResponse({"error": one_line(f"cannot read the synonyms: {err}")}, status_code=409)
    if (runtime.stream.coverage or {}).get("end") is None:  # as /v1/happened says it: not the question's fault
        return JSONResponse({"error": EMPTY_MEMORY}, status_code=409)
    reader = Reader(runtime.engine.labels, products, scorer=SCORERS.get(), synonyms=synonyms)
    try:
        return runtime, reader.read(q.text, stream_clock(runtime))
    except AskError as err:
        return JSONResponse({"error": one_line(err.message), "nearest": err.nearest}, status_code=422)


@router.post("/v1/ask", response_model=AskReply, response_model_exclude_unset=True)
async def ask(q: AskBody, hub: Hub, settings: Settings):
    """A question in plain words -> the structured query it was read as, and that query's answer."""
    read = await run_in_threadpool(_read, hub, q)
    if isinstance(read, JSONResponse):
        return read
    runtime, reading = read
    kind = reading.query["type"]
    try:  # the body its own route would take, so an asked question is answered as the structured query is
        body = BODIES[kind](**{k: v for k, v in reading.query.items() if k != "type"}, stream=runtime.name)
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(str(p) for p in e.get("loc", ()))
        return JSONResponse({"error": one_line(f"read as {reading.query}, which this runtime does not take "
                                                f"({where}: {e.get('msg', 'invalid')})")}, status_code=422)
    if kind == "happened":
        answer = await run_in_threadpool(happened_answer, runtime, body)
    else:
        answer = await answer_query(hub, kind, body, settings.max_image_pixels)
    reply = {"question": q.text, **reading.to_dict(), "scorer": SCORERS.note, "answer": answer}
    if kind == "object":
        # "what was bagged?" names no product: beside where the object of bagging was, which
        # products underwent it (what happened in the window, of that activity)
        try:
            hb = HappenedBody(start=body.start, end=body.end, activity=body.activity, stream=runtime.name)
            reply["events"] = (await run_in_threadpool(happened_answer, runtime, hb))["events"]
        except HappenedError:  # e.g. a heads-only runtime: the object answer stands alone
            pass
    return reply
