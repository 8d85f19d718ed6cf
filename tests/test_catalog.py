"""Product catalog: the store (round trip, restart, limits, damaged files), its API routes, queries by
product name (a one-picture product answers like its picture; several pictures combine), the CLI."""
import base64
import json
import os

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from edge_runtime import cli
from edge_runtime.cli import http_client
from edge_runtime.serve.api import create_app
from edge_runtime.query.catalog import Catalog, CatalogError
from edge_runtime.serve.pipeline import Runtime
from edge_runtime.query.by_product import combine
from fakes import serve_app


def _img(h=40, w=30, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _b64(img, ext=".png"):
    return base64.b64encode(cv2.imencode(ext, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes()).decode()


def _truncated_png():
    return base64.b64encode(base64.b64decode(_b64(_img()))[:60]).decode()


# -- the store ---------------------------------------------------------------------------------
def test_round_trip_and_restart(tmp_path):
    a, b = _img(seed=1), _img(50, 20, seed=2)
    cat = Catalog(tmp_path)
    e = cat.add("  Oat   Milk 1l ", [a, b])
    assert e["name"] == "Oat Milk 1l" and e["crops"] == 2 and e["sizes"] == [[30, 40], [20, 50]]
    assert not e["replaced"] and e["added"].endswith("Z")
    cat.add("soda can", [b])
    again = Catalog(tmp_path)  # a restart
    assert again.names() == ["Oat Milk 1l", "soda can"]
    got = again.crops("oat milk 1L")  # case and spaces do not matter
    assert len(got) == 2 and np.array_equal(got[0], a) and np.array_equal(got[1], b)
    assert again.entry("OAT MILK 1L")["crops"] == 2
    assert again.crop_png("oat milk 1l", 1)[:8] == b"\x89PNG\r\n\x1a\n"
    # adding a name again replaces its pictures; the old folder goes
    r = again.add("oat milk 1l", [b])
    assert r["replaced"] and r["name"] == "oat milk 1l" and len(again) == 2
    assert len(list((tmp_path / "catalog").glob("p-*"))) == 2
    again.remove("Soda Can")
    assert Catalog(tmp_path).names() == ["oat milk 1l"]
    assert np.array_equal(Catalog(tmp_path).crops("oat milk 1l")[0], b)
    with pytest.raises(CatalogError, match="unknown product") as err:
        again.remove("soda can")
    assert err.value.status == 404


def test_limits(tmp_path):
    cat = Catalog(tmp_path, max_products=2, max_crops_per_product=2, max_pixels=50 * 50, max_bytes=10_000)
    cat.add("a", [_img(10, 10)])
    cat.add("b", [_img(10, 10)])
    cases = [
        (lambda: cat.add("c", [_img(10, 10)]), 413, "full"),
        (lambda: cat.add("a", [_img(10, 10)] * 3), 413, "at most 2"),
        (lambda: cat.add("a", [_img(60, 50)]), 413, "at most 2500 pixels"),
        (lambda: cat.add("a", [_img(50, 50), _img(50, 50, seed=3)]), 413, "MiB"),
        (lambda: cat.add("a", []), 422, "at least one"),
        (lambda: cat.add("x" * 65, [_img()]), 422, "at most 64"),
        (lambda: cat.add("oat/milk", [_img()]), 422, "not allowed"),
        (lambda: cat.add("  ", [_img()]), 422, "empty"),
        (lambda: cat.add("a", [np.zeros((4, 4), np.uint8)]), 422, "RGB"),
        (lambda: cat.add("a", [_img(1, 40)]), 422, "at least 8 pixels a side"),
        (lambda: cat.add("a", [np.full((30, 30, 3), 200, np.uint8)]), 422, "one flat colour"),
    ]
    for call, status, text in cases:
        with pytest.raises(CatalogError, match=text) as err:
            call()
        assert err.value.status == status
    cat.add("a", [_img(20, 20)])  # replacing within the limits is fine while full
    assert Catalog(tmp_path).names() == ["a", "b"]


def test_damaged_index_warns_once_and_starts_empty(tmp_path):
    Catalog(tmp_path).add("a", [_img()])
    (tmp_path / "catalog" / "index.json").write_text("{not json")
    warnings = []
    cat = Catalog(tmp_path, warn=warnings.append)
    assert cat.names() == [] and len(warnings) == 1 and "starts empty" in warnings[0]
    assert list((tmp_path / "catalog").glob("index.json.corrupt-*"))
    cat.add("b", [_img()])  # usable again, and the new index is whole
    assert Catalog(tmp_path).names() == ["b"]


def test_missing_pictures_drop_only_that_product(tmp_path):
    cat = Catalog(tmp_path)
    cat.add("a", [_img()])
    cat.add("b", [_img()])
    folder = tmp_path / "catalog" / json.loads((tmp_path / "catalog" / "index.json").read_text())["products"][0]["dir"]
    (folder / "0.png").unlink()
    (tmp_path / "catalog" / "p-leftover-x").mkdir()  # what an interrupted add leaves
    warnings = []
    again = Catalog(tmp_path, warn=warnings.append)
    assert again.names() == ["b"] and len(warnings) == 1 and "a" in warnings[0]
    assert not (tmp_path / "catalog" / "p-leftover-x").exists()


def test_combine_rule():
    acts = [{"scores": [0.1, 0.9, 0.2], "ranked": [1, 2, 0], "status": "answered"},
            {"scores": [0.8, 0.3, 0.1], "ranked": [0, 1, 2], "status": "answered"}]
    c = combine(acts, "activity")
    assert c["scores"] == [0.8, 0.9, 0.2] and c["ranked"] == [1, 0, 2] and c["status"] == "answered"
    times = [{"intervals": [[0, 5, 0.2], [5, 9, 0.1]]}, {"intervals": [[5, 9, 0.3], [1, 2, 0.05]]}]
    assert combine(times, "time", k=2)["intervals"] == [[5, 9, 0.3], [0, 5, 0.2]]
    # one event read through two pictures, its edges a millisecond apart, takes one place, not two
    seen_twice = [{"intervals": [[541.3, 547.2, 0.94], [482.1, 487.6, 0.91]]},
                  {"intervals": [[541.301, 547.201, 0.94], [541.3, 547.3, 0.93]]}]
    assert combine(seen_twice, "time", k=2)["intervals"] == [[541.3, 547.2, 0.94], [482.1, 487.6, 0.91]]
    empty = [{"status": "no_memory"}, {"status": "no_memory"}]
    assert combine(empty, "time") == {"status": "no_memory"}


# -- API -----------------------------------------------------------------------------------------
def _runtime(engine, memory, **kw):
    rt = Runtime(engine, **kw)
    rt.stream.load_state_dict(memory)
    return rt


@pytest.fixture
def client(engine, memory_40s, tmp_path):
    with TestClient(create_app(_runtime(engine, memory_40s, state_dir=tmp_path))) as c:
        yield c


def test_api_add_list_show_remove(client, tmp_path):
    a, b = _img(seed=1), _img(50, 50, seed=2)
    r = client.post("/v1/catalog", json={"name": "oat milk 1l", "images": [_b64(a), "data:image/jpeg;base64,"
                                                                         + _b64(b, ".jpg")]})
    assert r.status_code == 200, r.text
    assert r.json()["crop_urls"] == ["/v1/catalog/oat%20milk%201l/crops/0.png", "/v1/catalog/oat%20milk%201l/crops/1.png"]
    listing = client.get("/v1/catalog").json()
    assert [(p["name"], p["crops"]) for p in listing["products"]] == [("oat milk 1l", 2)]
    assert listing["limits"]["crops_per_product"] == 8
    assert client.get("/v1/catalog/Oat%20Milk%201L").json()["sizes"] == [[30, 40], [50, 50]]
    png = client.get("/v1/catalog/oat%20milk%201l/crops/0.png")
    assert png.headers["content-type"] == "image/png"
    assert np.array_equal(cv2.cvtColor(cv2.imdecode(np.frombuffer(png.content, np.uint8), 1), cv2.COLOR_BGR2RGB), a)
    assert client.get("/v1/catalog/oat%20milk%201l/crops/2.png").status_code == 404
    assert Catalog(tmp_path).names() == ["oat milk 1l"]  # on disk for the next start
    assert client.delete("/v1/catalog/oat%20milk%201l").json() == {"removed": "oat milk 1l"}
    assert client.get("/v1/catalog").json()["products"] == []


BAD = [
    ("post", "/v1/catalog", {"name": "x", "images": ["@@@"]}, 400),
    ("post", "/v1/catalog", {"name": "x", "images": [base64.b64encode(b"GIF89a....").decode()]}, 415),
    ("post", "/v1/catalog", {"name": "x", "images": [base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode()]}, 415),
    ("post", "/v1/catalog", {"name": "x", "images": [_truncated_png()]}, 400),                    # header fine, data cut
    ("post", "/v1/catalog", {"name": "x", "images": []}, 422),
    ("post", "/v1/catalog", {"name": "x", "images": [_b64(_img(4, 4))] * 9}, 413),
    ("post", "/v1/catalog", {"name": "bad/name", "images": [_b64(_img(4, 4))]}, 422),
    ("post", "/v1/catalog", {"name": "x"}, 422),
    ("post", "/v1/catalog", {"name": 5, "images": [_b64(_img(4, 4))]}, 422),
    ("post", "/v1/catalog", {"name": "x", "images": [_b64(_img(4, 4))], "extra": 1}, 422),
    ("get", "/v1/catalog/nothing", None, 404),
    ("get", "/v1/catalog/nothing/crops/0.png", None, 404),
    ("get", "/v1/catalog/nothing/crops/x.png", None, 422),
    ("delete", "/v1/catalog/nothing", None, 404),
    ("post", "/v1/query/activity", {"product": "nothing", "start": 0, "end": 10}, 404),
    ("post", "/v1/query/time", {"product": "nothing", "activity": 1, "start": 0, "end": 10}, 404),
    ("post", "/v1/query/activity", {"product": "x", "object_image": _b64(_img()), "start": 0, "end": 10}, 422),
    ("post", "/v1/query/activity", {"start": 0, "end": 10}, 422),
    ("post", "/v1/query/batch", {"queries": [{"type": "time", "activity": 1, "start": 0, "end": 1}]}, 422),
    ("post", "/v1/query/batch", {"queries": [{"type": "activity", "product": "nothing", "start": 0, "end": 1}]}, 404),
]


@pytest.mark.parametrize("method, path, body, status", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_catalog_requests_are_4xx_with_one_line(client, method, path, body, status):
    r = getattr(client, method)(path, **({"json": body} if body is not None else {}))
    assert r.status_code == status, r.text
    msg = r.json()["error"]
    assert msg and "\n" not in msg and len(msg) < 300


def test_no_state_dir_no_catalog(engine, memory_40s):
    with TestClient(create_app(_runtime(engine, memory_40s))) as c:
        assert c.get("/v1/catalog").status_code == 409
        r = c.post("/v1/query/activity", json={"product": "x", "start": 0, "end": 10})
        assert r.status_code == 409 and "state directory" in r.json()["error"]


def test_query_by_product_answers_like_its_picture(client):
    a, b = _img(seed=1), _img(64, 64, seed=2)
    client.post("/v1/catalog", json={"name": "one", "images": [_b64(a)]})
    client.post("/v1/catalog", json={"name": "two", "images": [_b64(a), _b64(b)]})
    by_img = client.post("/v1/query/activity", json={"object_image": _b64(a), "start": 0, "end": 30}).json()
    by_name = client.post("/v1/query/activity", json={"product": "ONE", "start": 0, "end": 30}).json()
    assert by_name["product"]["name"] == "one" and by_name["product"]["crops"] == 1
    assert by_name["labels"] == by_img["labels"]
    for k, v in by_img["scores"].items():
        assert by_name["scores"][k] == pytest.approx(v, abs=1e-5)
    # two pictures: per class the better of the two
    by_b = client.post("/v1/query/activity", json={"object_image": _b64(b), "start": 0, "end": 30}).json()
    both = client.post("/v1/query/activity", json={"product": "two", "start": 0, "end": 30}).json()
    for k in both["scores"]:
        assert both["scores"][k] == pytest.approx(max(by_img["scores"][k], by_b["scores"][k]), abs=1e-5)
    assert both["product"]["crops"] == 2 and both["coverage"] == by_img["coverage"]
    # time: the best interval of either picture comes first
    t = {"activity": 1, "start": 0, "end": 30, "k": 2}
    ta = client.post("/v1/query/time", json={**t, "object_image": _b64(a)}).json()
    tb = client.post("/v1/query/time", json={**t, "object_image": _b64(b)}).json()
    tt = client.post("/v1/query/time", json={**t, "product": "two"}).json()
    assert len(tt["intervals"]) == 2
    assert tt["intervals"][0][2] == pytest.approx(max(ta["intervals"][0][2], tb["intervals"][0][2]), abs=1e-6)
    t1 = client.post("/v1/query/time", json={**t, "product": "one"}).json()
    np.testing.assert_allclose(t1["intervals"], ta["intervals"], atol=1e-5)
    # batch: a product beside picture and object queries, in one call
    batch = client.post("/v1/query/batch", json={"queries": [
        {"type": "activity", "product": "two", "start": 0, "end": 30},
        {"type": "object", "activity": 1, "start": 0, "end": 3},
        {"type": "time", "activity": 1, "object_image": _b64(a), "start": 0, "end": 30, "k": 2}]}).json()["answers"]
    assert [x["type"] for x in batch] == ["activity", "object", "time"] and batch[0]["product"]["crops"] == 2
    for k in both["scores"]:
        assert batch[0]["scores"][k] == pytest.approx(both["scores"][k], abs=1e-5)


# -- CLI ---------------------------------------------------------------------------------------
@pytest.fixture
def served(engine, memory_40s, tmp_path):
    with serve_app(create_app(_runtime(engine, memory_40s, state_dir=tmp_path / "state"))) as where:
        yield where


def test_cli_add_list_query_remove(served, tmp_path, capsys, monkeypatch):
    front, side = tmp_path / "front.png", tmp_path / "side.jpg"
    cv2.imwrite(str(front), _img(seed=1))
    cv2.imwrite(str(side), _img(60, 60, seed=2))
    api = ["--api", served]
    assert cli.main(["catalog", "add", "oat milk 1l", str(front), str(side), *api]) == 0
    assert "added 'oat milk 1l' (2 pictures)" in capsys.readouterr().out
    assert cli.main(["catalog", "list", *api]) == 0
    assert "oat milk 1l  2 pictures  30x40 60x60" in capsys.readouterr().out
    assert cli.main(["query", "activity", "--product", "Oat Milk 1L", "--start", "0", "--end", "30", "--json",
                     *api]) == 0
    assert json.loads(capsys.readouterr().out)["product"]["name"] == "oat milk 1l"
    assert cli.main(["catalog", "remove", "oat milk 1l", *api]) == 0
    assert "removed 'oat milk 1l'" in capsys.readouterr().out
    # errors: one line, exit 1 from the runtime's refusals, 2 for bad input here
    assert cli.main(["catalog", "remove", "oat milk 1l", *api]) == 1
    err = capsys.readouterr().err
    assert "HTTP 404" in err and "unknown product" in err and err.count("\n") == 1
    assert cli.main(["catalog", "add", "x", str(tmp_path / "missing.png"), *api]) == 2
    assert "missing.png" in capsys.readouterr().err
    assert cli.main(["catalog", "add", "x", *api]) == 2
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    capsys.readouterr()
    assert cli.main(["catalog", "add", "x", str(front), str(text), *api]) == 1
    err = capsys.readouterr().err
    assert f"HTTP 415: {text} is not a PNG or JPEG image" in err and err.count("\n") == 1
    assert cli.main(["catalog", "add", "bad/name", str(front), *api]) == 1
    assert "not allowed" in capsys.readouterr().err
    assert cli.main(["query", "activity", "--product", "x", "--image", str(front), "--start", "0", "--end", "1",
                     *api]) == 2
    monkeypatch.setattr(http_client, "START_WAIT_S", 0.5)  # no runtime will start on port 1
    assert cli.main(["catalog", "list", "--api", "127.0.0.1:1"]) == 1
    assert "cannot reach the runtime" in capsys.readouterr().err


def test_a_name_with_an_accent_typed_apart_is_the_same_product(tmp_path):
    from edge_runtime.query.catalog import name_key, normalise_name

    apart = "cafe\u0301 cre\u0300me"       # what a macOS keyboard may send
    assert normalise_name(apart) == "café crème"
    assert name_key(apart) == name_key("CAFÉ  CRÈME") == name_key("ｃａｆé crème")


def test_a_name_of_dots_is_refused():   # "." and ".." would be path steps in the picture URLs
    from edge_runtime.query.catalog import normalise_name

    for name in (".", "..", "- ."):
        with pytest.raises(CatalogError, match="has no letter or digit"):
            normalise_name(name)
    assert normalise_name("7 up") == "7 up"


def test_cli_says_a_picture_over_the_request_limit_is_too_big(served, tmp_path, capsys):
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(9 << 20))   # 9 MB: over the 8 MB body cap once encoded
    code = cli.main(["catalog", "add", "noise", str(big), "--api", served])
    err = capsys.readouterr().err
    # the runtime answers 413 when it can, or closes the connection while the body is still being sent
    assert code == 1 and err.count("\n") == 1 and "cannot reach the runtime" not in err, err
    assert "HTTP 413" in err or "over its request size limit" in err, err


def test_a_class_of_own_footage_without_pictures_says_to_add_some(tmp_path):
    """An own-footage bundle names its classes (/v1/labels) but draws none: asking by one of them says
    what is missing, not 'unknown product'."""
    from edge_runtime.query.by_product import expand

    with pytest.raises(CatalogError, match=r"'person' is one of the bundle's product classes, but the runtime has no "
                                           r"picture of it.*lvm-edge catalog add \"person\"") as err:
        expand([{"type": "activity", "product": "person", "start": 0, "end": 10}], Catalog(tmp_path), None,
               ["person", "person_with_bag"])
    assert err.value.status == 404
    with pytest.raises(CatalogError, match="unknown product 'nobody'"):
        expand([{"type": "activity", "product": "nobody", "start": 0, "end": 10}], Catalog(tmp_path), None, ["person"])


def test_catalog_options_may_come_after_the_action(monkeypatch):
    # `catalog add --api HOST:PORT NAME PICTURE`: the name and pictures after the option still count
    from edge_runtime.cli.parser import build_parser

    args = build_parser().parse_args(["catalog", "add", "--api", "10.0.0.2:8321", "oat milk", "a.png", "b.png"])
    assert (args.action, args.name, args.images, args.api) == ("add", "oat milk", ["a.png", "b.png"], "10.0.0.2:8321")
    args = build_parser().parse_args(["streams", "add", "--api", "10.0.0.2:8321", "lane2", "demo://checkout"])
    assert (args.action, args.name, args.uri) == ("add", "lane2", "demo://checkout")
