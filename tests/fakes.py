"""Test doubles and checks shared by several test modules."""
import contextlib
import socket
import threading
import time

import numpy as np

from edge_runtime.sources import Frame, Source


class StoppableSource(Source):
    """A fake frame source on the Source contract (what it does not override reads as the base
    class's defaults), ended by stop() or by leaving its with block; subclasses yield frames from
    ``_frames`` and wait on ``self._stop``."""

    def __init__(self, label: str = "fake://") -> None:
        super().__init__(label, target_fps=None, size=None)

    def pace_from(self, t):
        """A fake is never paced: it notes where it was asked to pace from."""
        self.paced_from = t


class FakeSource(StoppableSource):
    """n frames at 1 fps from t0 (or never any frame: n=None blocks until stop())."""

    def __init__(self, n, t0=0.0, live=False, delay=0.0, first_after=0.0):
        super().__init__()
        self.n, self.t0, self.live, self.delay, self.first_after = n, t0, live, delay, first_after
        self._stats.update(dropped=3, reconnects=1)

    def _frames(self):
        rng = np.random.default_rng(0)
        if self.n is None:
            self._stop.wait(600)
            return
        if self.first_after:  # a camera still out: its first frame comes this many seconds after opening
            self._stop.wait(self.first_after)
        for i in range(self.n):
            if self._stop.is_set():
                return
            if self.delay:
                time.sleep(self.delay)
            yield Frame(self.t0 + i, rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), i)


@contextlib.contextmanager
def serve_app(app):
    """``app`` served by uvicorn on a free loopback port for the CLI's HTTP clients; yields
    "127.0.0.1:PORT"."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    th = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.02)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        th.join(5)
        sock.close()


@contextlib.contextmanager
def alerts_on(hub, settings: dict, state_dir):
    """``hub`` (a lane_app's) with an alert service of ``settings`` (no evaluation thread: alerts come
    through raise_alert), its metrics in the hub's registry; yields the service and closes it after."""
    from edge_runtime.alerts.service import AlertService
    from edge_runtime.alerts.settings import AlertSettings

    hub.alerts = AlertService(AlertSettings.model_validate(settings), state_dir, registry=hub.metrics.registry,
                              evaluate=False)
    try:
        yield hub.alerts
    finally:
        hub.alerts.close()
        hub.alerts = None


def one_line_error(r, status: int) -> str:
    """An API error response: this status, a body of only ``error``, one line; -> the message."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and body["error"] and "\n" not in body["error"]
    return body["error"]
