"""Test doubles shared by several test modules."""
import contextlib
import socket
import threading
import time


class StoppableSource:
    """A fake frame source used as the runtime uses sources: in a with block, ended by stop() or by
    leaving the block; subclasses iterate frames and wait on ``self._stop``."""

    def __init__(self) -> None:
        self._stop = threading.Event()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stop.set()

    def stop(self):
        self._stop.set()


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
