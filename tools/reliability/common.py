"""What every reliability scenario shares: a real ``lvm-edge run`` process on loopback (its own API
port and state dir), waiting for it, reading its RSS / open fds / threads from /proc, stopping it.

The scenarios drive the product the way a kiosk does — a separate process, HTTP, signals — so a
fault that only shows across a process boundary (a SIGKILL mid-write, a socket flood) shows here.

    rt = RunProcess(["--source", "demo://checkout?seed=3&duration=600"], workdir / "a")
    rt.start(); rt.wait_ready()
    rt.get("/v1/status").json(); rt.proc_stats()   # {"rss_kb", "fds", "threads"}
    rt.stop()                                      # SIGTERM: drain + snapshot; -> exit code
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tools.repo_paths import REPO

BUNDLE_ENV = "LVM_RELIABILITY_BUNDLE"


class ScenarioError(RuntimeError):
    """The runtime did something a scenario cannot go on from (never started, died); one line."""


def default_bundle() -> Path:
    """The bundle the scenarios run: $LVM_RELIABILITY_BUNDLE, else the one `lvm-edge demo` exports."""
    env = os.environ.get(BUNDLE_ENV)
    return Path(env) if env else REPO / "engines" / "lvm-tiny-fp32"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def proc_stats(pid: int) -> dict[str, int]:
    """RSS (kB), open fds and threads of a live process, from /proc."""
    out = {"rss_kb": -1, "fds": -1, "threads": -1}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            out["rss_kb"] = int(line.split()[1])
        elif line.startswith("Threads:"):
            out["threads"] = int(line.split()[1])
    out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


class RunProcess:
    """One ``lvm-edge run`` subprocess with the API on 127.0.0.1:<free port> and a state dir."""

    def __init__(self, args: list[str], workdir: Path, *, state_dir: Path | None = None,
                 bundle: Path | None = None, name: str = "run") -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state_dir = Path(state_dir) if state_dir else self.workdir / "state"
        self.bundle = Path(bundle) if bundle else default_bundle()
        self.args = list(args)
        self.log_path = self.workdir / f"{name}.log"
        self.port = 0
        self.p: subprocess.Popen | None = None
        self._fh = None
        self.client = httpx.Client(timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "RunProcess":
        if not (self.bundle / "manifest.json").is_file():
            raise ScenarioError(f"no bundle at {self.bundle} (run `lvm-edge demo` once, or set {BUNDLE_ENV})")
        self.port = free_port()
        self._fh = open(self.log_path, "ab")
        cmd = [sys.executable, "-m", "edge_runtime.cli", "run", "--bundle", str(self.bundle),
               "--api", f"127.0.0.1:{self.port}", "--state-dir", str(self.state_dir), *self.args]
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        self.p = subprocess.Popen(cmd, stdout=self._fh, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        return self

    @property
    def pid(self) -> int:
        assert self.p is not None
        return self.p.pid

    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def wait_ready(self, timeout: float = 90.0) -> dict[str, Any]:
        """Until /readyz says ready; -> its body. ScenarioError if the process exits or never does."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if not self.alive():
                raise ScenarioError(f"lvm-edge run exited with {self.p.returncode} before it was ready: "
                                    f"{self.last_line()}")
            try:
                r = self.client.get(self.url + "/readyz", timeout=2)
                if r.status_code == 200:
                    return r.json()
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise ScenarioError(f"lvm-edge run not ready after {timeout:.0f} s: {self.last_line()}")

    def get(self, path: str, **kw) -> httpx.Response:
        return self.client.get(self.url + path, **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return self.client.post(self.url + path, **kw)

    def status(self) -> dict[str, Any]:
        return self.get("/v1/status").json()

    def wait_status(self, cond, timeout: float = 120.0, every: float = 0.1) -> dict[str, Any]:
        t0 = time.monotonic()
        st: dict[str, Any] = {}
        while time.monotonic() - t0 < timeout:
            if not self.alive():
                raise ScenarioError(f"lvm-edge run exited with {self.p.returncode}: {self.last_line()}")
            st = self.status()
            if cond(st):
                return st
            time.sleep(every)
        raise ScenarioError(f"timed out after {timeout:.0f} s; last status: state {st.get('state')}, "
                            f"stream_time {st.get('stream_time')}")

    def proc_stats(self) -> dict[str, int]:
        return proc_stats(self.pid)

    def freeze(self, on: bool = True) -> None:
        """SIGSTOP (``on``) or SIGCONT: a frozen process changes none of its files until thawed or killed."""
        if self.alive():
            self.p.send_signal(signal.SIGSTOP if on else signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: what a power cut looks like to the process."""
        if self.alive():
            self.p.send_signal(signal.SIGKILL)
            self.p.wait(30)
        self._close_log()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (drain + final snapshot) -> exit code; SIGKILL if it hangs past ``timeout``."""
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(30)
                self._close_log()
                raise ScenarioError(f"lvm-edge run ignored SIGTERM for {timeout:.0f} s (killed)") from None
        self._close_log()
        return self.p.returncode if self.p is not None else 0

    def close(self) -> None:
        if self.alive():
            self.kill()
        self._close_log()
        self.client.close()

    def _close_log(self) -> None:
        if self._fh is not None and not self._fh.closed:
            self._fh.close()

    def log_text(self) -> str:
        if self._fh is not None and not self._fh.closed:
            self._fh.flush()
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def last_line(self) -> str:
        lines = [ln for ln in self.log_text().splitlines() if ln.strip()]
        return lines[-1][:300] if lines else "(no output)"

    def __enter__(self) -> "RunProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
