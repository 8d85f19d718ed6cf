"""Where the API may listen, and with what: off loopback only with a token a person could not guess.
Light on purpose: ``lvm-edge run`` checks its --api before it loads the serving stack."""
from __future__ import annotations

import ipaddress

# off loopback a token is the only lock on the store's network: one a person could guess is none
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve off-loopback without a token of MIN_TOKEN_CHARS or more (ValueError, one line)."""
    if is_loopback(host):
        return
    if not token:
        raise ValueError(f"refusing to listen on {host} without a token: pass --token or set LVM_EDGE_TOKEN "
                         f"(or bind 127.0.0.1)")
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"refusing to listen on {host} with a {len(token)}-character token: off loopback it needs "
                         f"{MIN_TOKEN_CHARS} or more (python3 -c 'import secrets; print(secrets.token_hex(16))')")
