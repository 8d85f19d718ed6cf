"""A real Eclipse Mosquitto broker on loopback for the alert delivery tests and fault scenarios: its
own config file (listening on 127.0.0.1 only, anonymous clients allowed), its own port, killed and
restarted on that same port.

    broker = Mosquitto(workdir).start()      # broker.url == "mqtt://127.0.0.1:<port>"
    broker.kill(); broker.start()            # SIGKILL, then the same port again
    broker.stop()

``persistent=True`` keeps sessions and queued QoS 1 messages in a file saved after every change
(``autosave_on_changes``), so a persistent subscriber's session outlives a restart.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tools.reliability.common import free_port


def mosquitto_path() -> str | None:
    """The broker's executable (Debian installs it in /usr/sbin, often not on a user's PATH)."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


class Mosquitto:
    def __init__(self, workdir: Path, *, port: int | None = None, persistent: bool = False,
                 tls: tuple[Path, Path, Path] | None = None, users: dict[str, str] | None = None) -> None:
        """``tls``: (CA, server certificate, server key) PEM files: the listener speaks TLS only and asks
        every client for a certificate signed by that CA. ``users``: name -> password; then only they
        may connect (a password file made with mosquitto_passwd)."""
        exe = mosquitto_path()
        if exe is None:
            raise RuntimeError("mosquitto is not installed (Debian: apt-get install mosquitto)")
        self.exe = exe
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.conf = self.workdir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", f"allow_anonymous {'false' if users else 'true'}"]
        if users:
            pw = self.workdir / "passwords"
            pw.write_text("".join(f"{name}:{secret}\n" for name, secret in users.items()))
            subprocess.run([shutil.which("mosquitto_passwd") or "mosquitto_passwd", "-U", str(pw)], check=True,
                           capture_output=True, timeout=30)  # -U: hashes the plain passwords in place
            lines.append(f"password_file {pw}")
        if os.geteuid() == 0:  # started as root it would drop to user mosquitto, who cannot write our folder
            lines.append("user root")
        if persistent:
            lines += ["persistence true", f"persistence_location {self.workdir}/",
                      "autosave_interval 1", "autosave_on_changes true"]
        else:
            lines += ["persistence false"]
        if tls:
            ca, cert, key = tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}", "require_certificate true"]
        self.tls = bool(tls)
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None
        self.log = self.workdir / "mosquitto.log"
        self.starts = 0

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> "Mosquitto":
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=fh, stderr=subprocess.STDOUT)
        self.starts += 1
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:  # listening when a connection is accepted
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: "
                                   f"{self.log.read_text(errors='replace')[-300:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto not listening on {self.port} after {timeout:g} s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the broker's host losing power, as far as its clients can tell."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> "Mosquitto":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
