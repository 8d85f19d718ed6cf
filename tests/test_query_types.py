"""One table of query types (edge_runtime/query/types.py): its rows are well formed, everything that
lists the types lists the table's, and a new row is checked, packed, decoded and shown with no other
change."""
import numpy as np
import pytest

from edge_runtime.checkout import metrics, queries
from edge_runtime.cli.answer_text import answer_text
from edge_runtime.cli.parser import build_parser
from edge_runtime.query import types
from edge_runtime.query.answers import decode_answers, encode_queries
from edge_runtime.query.ask import reader
from edge_runtime.query.check import QueryError, check_request
from edge_runtime.query.types import GIVEN, NAMES, OPTIONS, QUERY_TYPES, QueryType
from export.cli.eval import format_table


def test_rows_are_well_formed():
    assert [t.id for t in QUERY_TYPES] == list(range(len(QUERY_TYPES)))  # the heads embed q_type by id
    assert len(set(NAMES)) == len(NAMES)
    for t in QUERY_TYPES:
        assert "window" in t.given and set(t.given) <= set(GIVEN) and set(t.options) <= set(OPTIONS), t.name
        # a product is asked once per picture: a type given an object must say how those answers merge
        assert (t.combine is not None) == t.takes_object == (t.combine_rule is not None), t.name
        assert t.reads.format(activity="A", object="O")  # no blank but the two


def test_every_list_of_types_is_the_table():
    assert set(queries._SAMPLERS) == set(NAMES)
    assert metrics.TYPES == NAMES and set(metrics._SCORERS) == set(NAMES)
    assert tuple(reader.NEEDS) == NAMES
    kind = next(a for a in build_parser()._subparsers._group_actions[0].choices["query"]._actions if a.dest == "kind")
    assert tuple(kind.choices) == NAMES + ("status",)
    empty = {m: {t: {w: None for w in queries.WINDOWS} for t in NAMES} for m in ("recall@1x", "recall@3x")}
    assert [line.split()[0] for line in format_table(empty).splitlines()[1:]] == [t for t in NAMES for _ in queries.WINDOWS]


def _count(out, times, mask, window, how):
    return {"count": int(mask.sum())}


def test_a_new_row_is_all_a_type_needs(monkeypatch):
    row = QueryType("count", len(QUERY_TYPES), given=("activity", "window"), options=(),
                    asks="how often an activity happened", reads="how often did {activity} happen",
                    decode=_count, present=lambda a, all_boxes: [f"{a['count']} times"])
    monkeypatch.setitem(types.BY_NAME, row.name, row)
    monkeypatch.setitem(types.BY_ID, row.id, row)
    req = check_request({"type": "count", "start": 0, "end": 10, "activity": "scan"}, "request", labels=["hold", "scan"],
                        tokens_shape=(2, 3), object_fps=5.0)
    assert req["activity"] == 1
    batch = encode_queries([req["type"]], [(req["start"], req["end"])], [req["activity"]], [None], fps=1.0,
                           max_queries=8, tokens_shape=(2, 3))
    assert batch.q_type.tolist() == [row.id]
    [a] = decode_answers(batch, {"activity_logits": np.zeros((1, 2), np.float32)}, object_fps=5.0)
    assert a == {"count": 8}
    cov = {"coverage": {"start": 0.0, "end": 10.0, "covered_fraction": 1.0}, "gaps": [], "status": "answered"}
    assert answer_text({"type": "count", "window": [0, 10], "activity": "scan", **a, **cov}).splitlines()[1] == "8 times"
    with pytest.raises(QueryError, match="type must be one of activity, object, time, count, got 'colour'"):
        check_request({"type": "colour", "start": 0, "end": 1}, "request", labels=["scan"], tokens_shape=(2, 3),
                      object_fps=5.0)
