"""Many streams behind one API: /v1/streams (list, add, duplicate, unsafe names, remove), ``stream``
on every data route (404 for an unknown one), a batch naming two streams answered from each
stream's own memory, a removed stream leaving the others streaming, per-stream metrics, and
``lvm-edge streams`` / ``query --stream`` against a served app."""
import base64
import json
import socket
import time

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from edge_runtime import cli
from edge_runtime.cli import http_client
from edge_runtime.serve.api import create_app
from edge_runtime.engine.engine import Engine
from edge_runtime.serve.streams import Streams
from fakes import one_line_error, serve_app


def demo(seed: int, duration: float = 60) -> str:
    return f"demo://checkout?seed={seed}&duration={duration:g}"


@pytest.fixture(scope="module")
def hub(tiny_bundle, tmp_path_factory):
    engine = Engine(tiny_bundle, threads=1)
    hub = Streams(engine, state_dir=tmp_path_factory.mktemp("state"))
    try:
        for name, seed in (("a", 1), ("b", 2)):
            hub.add(name, demo(seed))
        for rt in hub:
            assert rt.wait(120) and rt.error is None, rt.error
        yield hub
    finally:
        hub.close()


@pytest.fixture(scope="module")
def client(hub):
    with TestClient(create_app(hub)) as c:
        yield c


def _png(seed: int) -> str:
    img = np.random.default_rng(seed).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    return base64.b64encode(cv2.imencode(".png", img)[1].tobytes()).decode()


def test_list_status_and_the_default_stream(client, hub):
    listing = client.get("/v1/streams").json()
    assert [s["name"] for s in listing["streams"]] == ["a", "b"]
    assert [s["default"] for s in listing["streams"]] == [True, False]
    assert all(s["state"] == "ended" and s["coverage"]["end"] >= 48 for s in listing["streams"])
    st = client.get("/v1/status").json()
    assert st["stream"] == "a" and st["streams"] == ["a", "b"] and st["source"] == demo(1)
    assert client.get("/v1/status", params={"stream": "b"}).json()["source"] == demo(2)
    assert client.get("/v1/streams/b").json()["stream"] == "b"
    assert client.get("/v1/timeline", params={"stream": "b"}).json()["coverage"] == hub.get("b").stream.coverage
    assert client.get("/readyz").json()["stream"] == "a"
    spec = client.get("/openapi.json").json()["paths"]
    assert {"get", "post"} <= set(spec["/v1/streams"]) and {"get", "delete"} <= set(spec["/v1/streams/{name}"])


def test_bad_adds_and_unknown_streams(client, hub):
    assert "already exists" in one_line_error(client.post("/v1/streams", json={"name": "a", "source": demo(5)}), 409)
    for name in ("../x", "", "a b", ".hidden", "x" * 65):
        assert "safe file name" in one_line_error(client.post("/v1/streams", json={"name": name, "source": demo(5)}), 422)
    one_line_error(client.post("/v1/streams", json={"name": "c", "source": "zz://nowhere"}), 422)
    assert "c" not in hub.names()
    one_line_error(client.post("/v1/streams", json={"name": "c", "source": "/no/such/video.mp4"}), 422)
    one_line_error(client.post("/v1/streams", json={"name": "c", "source": demo(5), "duration": -1}), 422)
    one_line_error(client.post("/v1/streams", json={"name": "c"}), 422)
    assert hub.names() == ["a", "b"]
    assert "no stream named 'zz'" in one_line_error(client.delete("/v1/streams/zz"), 404)
    one_line_error(client.get("/v1/streams/zz"), 404)
    one_line_error(client.get("/v1/status", params={"stream": "zz"}), 404)
    one_line_error(client.get("/v1/timeline", params={"stream": "zz"}), 404)
    one_line_error(client.post("/v1/session/reset", params={"stream": "zz"}), 404)
    one_line_error(client.post("/v1/query/object", json={"activity": 1, "start": 0, "end": 30, "stream": "zz"}), 404)
    msg = one_line_error(client.post("/v1/query/batch", json={"queries": [
        {"type": "object", "activity": 1, "start": 0, "end": 30, "stream": "a"},
        {"type": "object", "activity": 1, "start": 0, "end": 30, "stream": "zz"}]}), 404)
    assert msg.startswith("queries.1.stream: no stream named 'zz'")


def test_a_batch_naming_two_streams_is_answered_from_each_memory(client, hub):
    items = [
        {"type": "time", "activity": 1, "object_image": _png(1), "start": 0, "end": 48, "k": 2, "stream": "b"},
        {"type": "object", "activity": 2, "start": 0, "end": 48, "fps": 1},
        {"type": "activity", "object_image": _png(2), "start": 0, "end": 48, "stream": "b"},
        {"type": "activity", "object_image": _png(2), "start": 0, "end": 48, "stream": "a"},
    ]
    got = client.post("/v1/query/batch", json={"queries": items})
    assert got.status_code == 200, got.text
    answers = got.json()["answers"]
    assert [a["stream"] for a in answers] == ["b", "a", "b", "a"]
    labels = hub.engine.labels

    def direct(it):  # the request as the API hands it to a stream's Runtime.query
        from edge_runtime.serve.api_images import decode_image

        img = decode_image(it["object_image"], "x", 1 << 24) if "object_image" in it else None
        act = it.get("activity")
        req = {"type": it["type"], "start": it["start"], "end": it["end"], "activity": act, "object_image": img,
               "product": None, "fps": it.get("fps"), "k": it.get("k", 3)}
        return hub.get(it.get("stream")).query([req])[0]

    for it, a in zip(items, answers):
        want = direct(it)
        if it["type"] == "activity":
            np.testing.assert_allclose([a["scores"][n] for n in labels], want["scores"], rtol=1e-5)
        elif it["type"] == "time":
            np.testing.assert_allclose(a["intervals"], want["intervals"], rtol=1e-5)
        else:
            np.testing.assert_allclose(a["boxes"], want["boxes"], rtol=1e-5)
    # the same picture asked of two streams' memories (two different videos): two answers
    assert answers[2]["scores"] != answers[3]["scores"]
    single = client.post("/v1/query/activity", json={k: v for k, v in items[2].items() if k != "type"}).json()
    assert single["stream"] == "b" and single["scores"] == pytest.approx(answers[2]["scores"], rel=1e-5)


def test_ask_names_its_stream(client):
    text = "where was the item that was bagged between 0:05 and 0:40"
    for stream in ("a", "b"):
        r = client.post("/v1/ask", json={"text": text, "stream": stream})
        assert r.status_code == 200, r.text
        body = {k: v for k, v in r.json()["read_as"].items() if k != "type"}
        direct = client.post("/v1/query/object", json={**body, "stream": stream}).json()
        assert r.json()["answer"]["stream"] == stream and r.json()["answer"]["boxes"] == direct["boxes"]
    assert client.post("/v1/ask", json={"text": text}).json()["answer"]["stream"] == "a"
    one_line_error(client.post("/v1/ask", json={"text": text, "stream": "zz"}), 404)


def test_metrics_carry_a_stream_label(client):
    text = client.get("/metrics").text
    for name in ("a", "b"):
        assert f'lvm_frames_processed_total{{stream="{name}"}}' in text
        assert f'lvm_memory_bytes{{stream="{name}"}}' in text


def test_snapshot_and_reset_name_their_stream(client, hub):
    snap = client.post("/v1/snapshot", params={"stream": "b"}).json()
    assert "/streams/b/" in snap["path"]
    assert client.post("/v1/snapshot").json()["path"].endswith("/streams/a/snapshot.npz")


def test_a_stream_named_where_the_route_does_not_read_it_is_refused_not_dropped(client, hub):
    # reset / snapshot take the stream as ?stream= or in a JSON body: an unknown one is a 404, and
    # the default stream's memory is left alone (it was wiped when the body was ignored)
    before = hub.get("a").stream.coverage
    assert before["end"] is not None
    assert "nope" in one_line_error(client.post("/v1/session/reset", json={"stream": "nope"}), 404)
    assert hub.get("a").stream.coverage == before
    msg = one_line_error(client.post("/v1/session/reset", params={"stream": "a"}, json={"stream": "b"}), 422)
    assert "name one" in msg and hub.get("a").stream.coverage == before
    assert one_line_error(client.post("/v1/snapshot", json={"strem": "b"}), 422) == "unknown field 'strem'"
    assert "/streams/b/" in client.post("/v1/snapshot", json={"stream": "b"}).json()["path"]
    # the query routes take it in their body: ?stream= there is an unknown query parameter, not ignored
    msg = one_line_error(client.post("/v1/query/object", params={"stream": "nope"},
                                      json={"activity": 1, "start": 0, "end": 48}), 422)
    assert msg == "unknown query parameter 'stream' (this route takes the stream in its JSON body)"
    assert "unknown query parameter 'x'" in one_line_error(client.get("/v1/status", params={"x": "1"}), 422)
    assert "nope" in one_line_error(client.get("/v1/labels", params={"stream": "nope"}), 404)
    assert client.get("/v1/labels", params={"stream": "b"}).status_code == 200
    assert client.get("/", params={"v": "1"}).status_code == 200   # the page: a browser's own query string


def test_removing_a_stream_leaves_the_others_streaming_and_answering(client, hub):
    r = client.post("/v1/streams", json={"name": "paced", "source": demo(4, 600), "realtime": True})
    assert r.status_code == 201, r.text
    assert r.json()["stream"] == "paced" and r.json()["streams"] == ["a", "b", "paced"]
    assert client.post("/v1/streams", json={"name": "short", "source": demo(6, 20)}).status_code == 201
    assert hub.get("short").wait(60)
    t0 = time.monotonic()
    while hub.get("paced").frames_in < 2 and time.monotonic() - t0 < 30:
        time.sleep(0.1)
    gone = client.delete("/v1/streams/short")
    assert gone.status_code == 200 and gone.json()["removed"] == "short"
    assert gone.json()["snapshot"].endswith("/streams/short/snapshot.npz")
    assert 'stream="short"' not in client.get("/metrics").text
    before = hub.get("paced").frames_in
    t0 = time.monotonic()
    while hub.get("paced").frames_in == before and time.monotonic() - t0 < 30:
        time.sleep(0.1)
    assert hub.get("paced").frames_in > before and client.get("/v1/streams/paced").json()["state"] == "streaming"
    ok = client.post("/v1/query/object", json={"activity": 1, "start": 0, "end": 48, "stream": "b"})
    assert ok.status_code == 200 and ok.json()["stream"] == "b"
    assert client.delete("/v1/streams/paced").status_code == 200
    assert hub.names() == ["a", "b"]


def test_one_runtime_is_served_as_before(tiny_bundle):
    from edge_runtime.serve.pipeline import Runtime

    with Engine(tiny_bundle, threads=1) as engine, TestClient(create_app(Runtime(engine))) as c:
        st = c.get("/v1/status").json()
        assert st["stream"] == "default" and st["streams"] == ["default"]
        assert [s["name"] for s in c.get("/v1/streams").json()["streams"]] == ["default"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_streams_and_query_stream(hub, capsys, monkeypatch):
    with serve_app(create_app(hub)) as where:
        assert cli.main(["streams", "--api", where]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 2 and lines[0].startswith("a* ") and lines[1].startswith("b  ")
        assert "ended" in lines[0] and demo(1) in lines[0]
        assert cli.main(["streams", "add", "cli1", demo(7, 20), "--api", where]) == 0
        assert capsys.readouterr().out.startswith(f"added cli1 ({demo(7, 20)})")
        assert hub.get("cli1").wait(60)
        assert cli.main(["streams", "add", "cli1", demo(7, 20), "--api", where]) == 1
        err = capsys.readouterr().err
        assert "HTTP 409" in err and "already exists" in err and len(err.strip().splitlines()) == 1
        assert cli.main(["query", "status", "--stream", "b", "--api", where]) == 0
        assert json.loads(capsys.readouterr().out)["stream"] == "b"
        assert cli.main(["query", "object", "--activity", "1", "--start", "0", "--end", "20", "--stream", "cli1",
                         "--json", "--api", where]) == 0
        assert json.loads(capsys.readouterr().out)["stream"] == "cli1"
        assert cli.main(["streams", "remove", "cli1", "--api", where]) == 0
        assert capsys.readouterr().out.startswith("removed cli1 (")
        assert cli.main(["streams", "remove", "cli1", "--api", where]) == 1
        err = capsys.readouterr().err
        assert "HTTP 404" in err and len(err.strip().splitlines()) == 1
        assert cli.main(["query", "status", "--stream", "nope", "--api", where]) == 1
        assert "no stream named 'nope'" in capsys.readouterr().err
    monkeypatch.setattr(http_client, "START_WAIT_S", 0.5)  # nothing will start on the closed port
    assert cli.main(["streams", "list", "--api", f"127.0.0.1:{_closed_port()}"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the runtime" in err and len(err.strip().splitlines()) == 1
    assert hub.names() == ["a", "b"]


def test_dashboard_stream_selector(hub):
    """The page shows a selector with two streams; choosing one shows its status and asks it."""
    from test_dashboard import CHROMIUM, CHROMIUM_ARGS, _require_browser

    _require_browser()
    from playwright.sync_api import expect, sync_playwright

    with serve_app(create_app(hub)) as where, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page()
            errors = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            pg.goto(f"http://{where}/")
            expect(pg.locator("#stream-pick")).to_be_visible(timeout=15_000)
            expect(pg.locator("#source")).to_have_text(demo(1))
            assert pg.locator("#stream-select option").all_inner_texts() == ["a (default) · ended", "b · ended"]
            pg.select_option("#stream-select", "b")
            expect(pg.locator("#source")).to_have_text(demo(2), timeout=10_000)
            pg.click("#query-details summary")
            pg.select_option("#query-form select[name=type]", "object")
            pg.fill("#query-form input[name=start]", "0")
            pg.fill("#query-form input[name=end]", "40")
            with pg.expect_request(lambda r: r.url.endswith("/v1/query/object")) as req:
                pg.click("#query-form button[type=submit]")
            assert req.value.post_data_json["stream"] == "b"
            pg.wait_for_selector("#answer[data-state=done][data-type=object]", timeout=20_000)
            assert not errors, errors
        finally:
            browser.close()


def test_the_default_stream_is_never_moved_to_another_camera(tiny_bundle, tmp_path):
    """Removing the default stream while others run: a request naming no stream is refused (409), not
    answered from another camera; adding it again makes it the default again."""
    engine = Engine(tiny_bundle, threads=1)
    hub = Streams(engine, state_dir=tmp_path / "state")
    try:
        for name, seed in (("lane1", 1), ("lane2", 2)):
            hub.add(name, demo(seed, 20))
        for rt in hub:
            assert rt.wait(120) and rt.error is None, rt.error
        with TestClient(create_app(hub)) as c:
            assert c.get("/v1/status").json()["stream"] == "lane1"
            assert c.delete("/v1/streams/lane1").status_code == 200
            msg = one_line_error(c.get("/v1/status"), 409)
            assert msg == "the default stream 'lane1' was removed: name one of lane2 (the request's stream)"
            one_line_error(c.post("/v1/query/object", json={"activity": 1, "start": 0, "end": 10}), 409)
            assert c.get("/readyz").status_code == 503
            assert c.get("/v1/status", params={"stream": "lane2"}).status_code == 200
            assert [s["default"] for s in c.get("/v1/streams").json()["streams"]] == [False]
            assert c.post("/v1/streams", json={"name": "lane1", "source": demo(1, 20)}).status_code == 201
            assert c.get("/v1/status").json()["stream"] == "lane1"
    finally:
        hub.close()
