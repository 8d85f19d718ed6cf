"""The bodies the query routes take, as models: one per query type (``QUERY_BODIES``, built from its row
in edge_runtime/query/types.py: what it is given, then its options) and the batch of them
(``BatchQuery``). They are the request side of what api_answer.py is for answers, and are apart from
api.py so the app reads as its routes; every body refuses unknown fields and may name a ``stream``."""
from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from edge_runtime.query.types import NAMES, QUERY_TYPES, QueryType
from edge_runtime.serve.api_streams import STREAM_HELP

MAX_BATCH_QUERIES = 64


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # true is no number, "1" no time: refused


class _Body(_Strict):
    stream: str | None = Field(None, description=STREAM_HELP)


def _fields(part: str) -> dict[str, tuple[Any, Any]]:
    """The body fields of one thing a query is given (types.GIVEN) or one option (types.OPTIONS),
    new FieldInfo each call: a model must not share its fields with another."""
    if part == "object":
        return {"object_image": (str | None, Field(None, description="base64 PNG or JPEG of the object "
                                                                      "(a data: URL is fine)")),
                "product": (str | None, Field(None, description="instead of object_image: a product of /v1/catalog"))}
    if part == "activity":
        return {"activity": (Union[int, str], Field(description="activity name or id"))}
    if part == "window":
        return {"start": (float, Field(description="window start, stream seconds")),
                "end": (float, Field(description="window end, stream seconds"))}
    if part == "fps":
        return {"fps": (float | None, Field(None, description="box rate of the answer (default: the model's object fps)"))}
    if part == "k":
        return {"k": (int, Field(3, ge=1, le=100, description="intervals to return, best first"))}
    raise ValueError(f"no request field for {part!r}")


def _body_model(row: QueryType) -> type[_Body]:
    """The /v1/query/<type> body of a row: what it is given, in the row's order, then its options."""
    fields: dict[str, Any] = {}
    for part in row.given + row.options:
        fields.update(_fields(part))
    return create_model(f"{row.name.capitalize()}Query", __base__=_Body, **fields)


QUERY_BODIES: dict[str, type[_Body]] = {row.name: _body_model(row) for row in QUERY_TYPES}


# the fields each query type takes, as its own route's body has them
_TAKES: dict[str, frozenset[str]] = {
    row.name: frozenset({"type", "stream"} | {f for part in row.given + row.options for f in _fields(part)})
    for row in QUERY_TYPES}


class BatchItem(_Body):
    type: Literal[NAMES]  # type: ignore[valid-type]
    start: float
    end: float
    activity: Union[int, str, None] = None
    object_image: str | None = None
    product: str | None = None
    fps: float | None = None
    k: int = Field(3, ge=1, le=100)

    @model_validator(mode="after")
    def _fields_of_its_type(self) -> "BatchItem":
        """A field its type does not take is refused, as its own route refuses it (k on an activity query
        was dropped without a word)."""
        extra = sorted(self.model_fields_set - _TAKES[self.type])
        if extra:
            raise ValueError(f"{self.type} queries take no {', '.join(extra)}")
        return self


class BatchQuery(_Strict):
    queries: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH_QUERIES)
