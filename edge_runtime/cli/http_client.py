"""The commands' one HTTP client for a running ``lvm-edge run``: JSON in, JSON out, and every way a
call can fail (the runtime's refusal, no runtime there, a body over its size limit) as one CliError line."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from edge_runtime.cli.common import CliError

# a runtime opens its API only once its engine is loaded (1-2 s on a small box): a command run straight
# after `lvm-edge run ... &` waits this long for the port to open before it says no runtime is there
START_WAIT_S = 10.0
RETRY_EVERY_S = 0.25


def request_json(method: str, url: str, body: dict | None, token: str | None, timeout: float = 60.0) -> dict:
    """``method url`` with ``body`` as JSON (and ``token`` as the bearer token): the reply's JSON."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with _open_when_up(req, timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        try:
            msg = json.loads(err.read()).get("error")
        except Exception:  # a body that is not our JSON error: fall back to the HTTP reason
            msg = None
        raise CliError(f"{url}: HTTP {err.code}: {msg or err.reason}", 1) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        if data is not None and len(data) > (1 << 20) and isinstance(reason, (ConnectionResetError, BrokenPipeError)):
            # the runtime refuses a body over its cap before reading it, and closes the connection under it
            raise CliError(f"{url}: the runtime closed the connection while {len(data) / 1e6:.1f} MB were being "
                           f"sent: over its request size limit (8 MB unless its api.max_body_bytes says "
                           f"otherwise); send smaller pictures", 1) from None
        if isinstance(reason, ConnectionRefusedError):
            raise CliError(f"{url}: cannot reach the runtime: nothing listened there for {START_WAIT_S:g} s "
                           f"(start `lvm-edge run`, or give --api HOST:PORT of the one running)", 1) from None
        raise CliError(f"{url}: cannot reach the runtime ({reason})", 1) from None


def _open_when_up(req: urllib.request.Request, timeout: float):
    """urlopen, retrying a refused connection for up to START_WAIT_S: a runtime still starting has not
    opened its port yet. A refused connection sent nothing, so any request is safe to send again."""
    deadline = time.monotonic() + START_WAIT_S
    while True:
        try:
            return urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.URLError as err:
            if not isinstance(err.reason, ConnectionRefusedError) or time.monotonic() >= deadline:
                raise
        time.sleep(RETRY_EVERY_S)
