"""Fuzzing the API of a running `lvm-edge run`: schemathesis-generated requests from its own
/openapi.json (valid and deliberately invalid ones), then hand-made nasties.

Pass: no response ≥ 500, and every 4xx carries the API's error body — a JSON object with one key,
"error", whose value is one line. The process must still be alive and answering at the end.
"""
from __future__ import annotations

import base64
import time
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

from tools.reliability.common import RunProcess

SOURCE = "demo://checkout?seed=5&duration=120"


def error_body_ok(r: httpx.Response | Any) -> bool:
    try:
        body = r.json()
    except ValueError:
        return False
    # "error" is the one line every 4xx carries; a route may add help beside it (/v1/ask's "nearest")
    return (isinstance(body, dict) and isinstance(body.get("error"), str)
            and body["error"].strip() != "" and "\n" not in body["error"])


class Tally:
    def __init__(self) -> None:
        self.n = 0
        self.codes: Counter = Counter()
        self.bad: list[str] = []

    def see(self, what: str, status: int, body_ok: bool, text: str = "") -> None:
        self.n += 1
        self.codes[status // 100 * 100] += 1
        if status >= 500:
            self.bad.append(f"{what}: {status} {text[:160]}")
        elif status >= 400 and not body_ok:
            self.bad.append(f"{what}: {status} without the one-line error body: {text[:160]}")


def schemathesis_requests(base: str, target: int, tally: Tally, log=print) -> dict[str, Any]:
    """Draw cases of every operation, valid and invalid, round-robin until ``target`` requests."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hyp_seed
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    ops = [r.ok() for r in schema.get_all_operations()]
    session = requests.Session()
    per_op: Counter = Counter()
    exhausted: set[tuple[str, str]] = set()

    def draw(op, mode, n: int, rnd: int) -> int:
        sent = 0

        @hyp_seed(rnd)
        @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck), derandomize=False)
        @given(case=op.as_strategy(generation_mode=mode))
        def one(case):
            nonlocal sent
            try:
                r = case.call(base_url=base, session=session, timeout=30)
            except requests.RequestException as err:  # the server hung up: as bad as a 500
                tally.see(f"{op.label} ({mode.value})", 599, False, f"transport error: {err}")
            else:
                tally.see(f"{op.label} ({mode.value})", r.status_code, error_body_ok(r), r.text)
            sent += 1

        one()
        return sent

    rnd = 0
    while tally.n < target and len(exhausted) < 2 * len(ops):
        for op in ops:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                if (op.label, mode.value) in exhausted or tally.n >= target:
                    continue
                try:
                    sent = draw(op, mode, 25, rnd)
                except Exception as err:  # noqa: BLE001 — schemathesis cannot make this kind of case
                    log(f"fuzz: {op.label} ({mode.value}): no cases ({type(err).__name__})")
                    sent = 0
                per_op[op.label] += sent
                if sent < 5:  # an operation with almost nothing to vary (GET /healthz) is done once
                    exhausted.add((op.label, mode.value))
        rnd += 1
        log(f"fuzz: {tally.n} generated requests, {tally.codes.get(500, 0)} server errors")
    return {"operations": len(ops), "requests_per_operation": dict(per_op)}


def _png(h=64, w=64) -> bytes:
    img = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)
    return cv2.imencode(".png", img)[1].tobytes()


def _jpeg(h=64, w=64) -> bytes:
    img = (np.random.default_rng(1).random((h, w, 3)) * 255).astype(np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


def _huge_jpeg_header() -> bytes:
    """A JPEG whose SOF0 segment claims 60,000 x 60,000 pixels (then nothing)."""
    sof = b"\xff\xc0" + (17).to_bytes(2, "big") + b"\x08" + (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big") \
        + b"\x03" + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + sof + b"\xff\xd9"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def nasties(base: str, tally: Tally) -> list[dict[str, Any]]:
    """Hand-made bad requests -> what each got."""
    img_ok = _b64(_png())
    act = "/v1/query/activity"
    cases: list[tuple[str, str, str, dict[str, Any]]] = [
        ("truncated PNG", "POST", act, {"json": {"object_image": _b64(_png()[:60]), "start": 0, "end": 60}}),
        ("truncated JPEG", "POST", act, {"json": {"object_image": _b64(_jpeg()[:200]), "start": 0, "end": 60}}),
        ("JPEG claiming 60000x60000", "POST", act,
         {"json": {"object_image": _b64(_huge_jpeg_header()), "start": 0, "end": 60}}),
        ("not base64", "POST", act, {"json": {"object_image": "@@@", "start": 0, "end": 60}}),
        ("50 MB body", "POST", act, {"content": b"{" + b" " * (50 << 20) + b"}",
                                     "headers": {"content-type": "application/json"}}),
        ("50 MB chunked body", "POST", act, {"content": iter([b" " * (1 << 20)] * 50),
                                             "headers": {"content-type": "application/json"}}),
        ("deep JSON nesting", "POST", act, {"content": b"[" * 200_000 + b"]" * 200_000,
                                            "headers": {"content-type": "application/json"}}),
        ("deep JSON nesting in a field", "POST", "/v1/query/object",
         {"content": b'{"activity": ' + b"[" * 50_000 + b"]" * 50_000 + b', "start": 0, "end": 60}',
          "headers": {"content-type": "application/json"}}),
        ("non-UTF-8 bytes", "POST", act, {"content": b"\xff\xfe\xfa{\"start\": 0}\x80\x81",
                                          "headers": {"content-type": "application/json"}}),
        ("NaN window", "POST", act, {"content": ('{"object_image": "%s", "start": NaN, "end": 60}' % img_ok).encode(),
                                     "headers": {"content-type": "application/json"}}),
        ("inf window", "POST", "/v1/query/object",
         {"content": b'{"activity": 0, "start": -Infinity, "end": Infinity}',
          "headers": {"content-type": "application/json"}}),
        ("huge window", "POST", "/v1/query/object", {"json": {"activity": 0, "start": -1e308, "end": 1e308}}),
        ("NaN fps", "POST", "/v1/query/object",
         {"content": b'{"activity": 0, "start": 0, "end": 60, "fps": NaN}', "headers": {"content-type": "application/json"}}),
        ("huge activity id", "POST", "/v1/query/object", {"json": {"activity": 10 ** 40, "start": 0, "end": 60}}),
        ("batch of 65", "POST", "/v1/query/batch",
         {"json": {"queries": [{"type": "object", "activity": 0, "start": 0, "end": 60}] * 65}}),
        ("wrong content type", "POST", act, {"content": b"start=0&end=1",
                                             "headers": {"content-type": "application/x-www-form-urlencoded"}}),
        ("NaN till scan time", "POST", "/v1/streams/default/scans",
         {"content": b'{"scans": [{"product": "apple", "stream_time": NaN}]}', "headers": {"content-type": "application/json"}}),
        ("1001 till scans", "POST", "/v1/streams/default/scans",
         {"json": {"scans": [{"product": "apple", "stream_time": 1.0}] * 1001}}),
        ("huge till scan time", "POST", "/v1/streams/default/scans",
         {"json": {"scans": [{"product": "apple", "stream_time": 1e308}]}}),
        ("unknown path", "GET", "/v1/nothing", {}),
        ("wrong method", "DELETE", "/v1/status", {}),
    ]
    out = []
    with httpx.Client(timeout=60) as client:
        for what, method, path, kw in cases:
            try:
                r = client.request(method, base + path, **kw)
                tally.see(what, r.status_code, error_body_ok(r), r.text)
                out.append({"case": what, "status": r.status_code, "body": r.text[:160]})
            except httpx.HTTPError as err:
                tally.see(what, 599, False, f"transport error: {type(err).__name__}: {err}")
                out.append({"case": what, "status": None, "body": f"{type(err).__name__}: {err}"[:160]})
    for what, raw in (("bad Content-Length", b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}" % act.encode()),
                      ("garbage request line", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n")):
        status, text = _raw(base, raw)
        # Malformed HTTP never reaches the app: uvicorn answers 400 (plain text) and closes. The
        # JSON error body is the app's contract, so here only "no 5xx, no hang" is asked.
        if status is not None:
            tally.see(what, status, True, text)
        out.append({"case": what, "status": status, "body": text[:160], "answered_by": "HTTP server, not the app"})
    return out


def _raw(base: str, payload: bytes) -> tuple[int | None, str]:
    """Send bytes no HTTP client would -> (status or None if the server just closed, body)."""
    import socket

    host, port = base.rsplit("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(payload)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
                if b"\r\n\r\n" in data and len(data.split(b"\r\n\r\n", 1)[1]) >= _length(data):
                    break
        except (socket.timeout, ConnectionResetError):
            pass
    if not data.startswith(b"HTTP/"):
        return None, data[:160].decode(errors="replace")
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace")


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            return int(v.strip())
    return 0


def run(quick: bool, workdir: Path, log=print, n_requests: int | None = None) -> dict[str, Any]:
    target = n_requests if n_requests is not None else (200 if quick else 1000)
    t0 = time.monotonic()
    # alerts on, with the till's scans: their routes answer with a real service behind them
    config = Path(workdir) / "fuzz.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("alerts:\n  scans: pos\n  rules: {bagged_without_scan: {}}\n")
    rt = RunProcess(["--config", str(config), "--source", SOURCE, "--keep-serving", "--duration", "120"],
                    Path(workdir), name="fuzz")
    tally = Tally()
    res: dict[str, Any] = {}
    try:
        rt.start()
        rt.wait_ready()
        rt.wait_status(lambda s: s.get("state") == "ended", timeout=180)
        res["schemathesis"] = schemathesis_requests(rt.url, target, tally, log)
        res["generated_requests"] = tally.n
        res["nasties"] = nasties(rt.url, tally)
        res["alive_after"] = rt.alive() and rt.get("/healthz").status_code == 200
    except Exception as err:  # noqa: BLE001 — a scenario reports, it does not crash the runner
        res["error"] = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
        res["alive_after"] = rt.alive()
    finally:
        text = rt.log_text()
        rt.close()
    res.update({"requests": tally.n, "by_class": {f"{k // 100}xx": v for k, v in sorted(tally.codes.items())},
                "server_errors": sum(v for k, v in tally.codes.items() if k >= 500),
                "failures": tally.bad[:20], "traceback_in_log": "Traceback" in text,
                "wall_s": round(time.monotonic() - t0, 1)})
    res["passed"] = (not res.get("error") and res["alive_after"] and not tally.bad
                     and res.get("generated_requests", 0) >= target and not res["traceback_in_log"])
    log(f"fuzz: {tally.n} requests, {res['server_errors']} server errors, {len(tally.bad)} bad answers")
    return res
