"""``lvm-edge alerts``: the checkout alerts of a running ``lvm-edge run`` (its API), or of every lane of
a store (its MQTT broker).

    lvm-edge alerts                                    # this runtime's alerts, newest first
    lvm-edge alerts --status open --stream lane2
    lvm-edge alerts ack 3f9a0c...                      # acknowledge one (no outcome recorded)
    lvm-edge alerts ack 3f9a0c... --outcome false_alert --note "hold read as a bag"
    lvm-edge alerts learn                              # fit the verifier on staff's verdicts, use it
    lvm-edge alerts --broker mqtt://broker:1883 --follow   # every lane's alerts as they come
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from urllib.parse import urlencode, quote

from edge_runtime.cli.common import CliError, parse_hostport
from edge_runtime.cli.http_client import request_json


BROKER_ONLY = ("follow", "seconds", "site", "username", "password_env", "ca_file", "cert_file", "key_file", "client_id")
API_ONLY = ("status", "since", "limit")
VERDICT = ("outcome", "note", "by")   # ack's alone


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def cmd_alerts(args) -> int:
    if args.broker is not None:
        if args.action != "list" or args.id:
            raise CliError("alerts --broker lists what the broker carries; ack and learn go through a runtime's "
                           "API (lvm-edge alerts ack ID --api HOST:PORT)")
        verdict = [_flag(n) for n in VERDICT if getattr(args, n) is not None]
        if verdict:
            raise CliError(f"alerts --broker: {', '.join(verdict)}: only with ack ID, through a runtime's API")
        given = [_flag(n) for n in API_ONLY if getattr(args, n) is not None]
        if given:
            raise CliError(f"alerts --broker: {', '.join(given)} filter a runtime's list; the broker passes on "
                           f"alerts as they come (--stream and --site choose which)")
        return _from_broker(args)
    given = [_flag(n) for n in BROKER_ONLY if getattr(args, n) not in (None, False)]
    if given:
        raise CliError(f"alerts: {', '.join(given)} only with --broker URL")
    host, port = parse_hostport(args.api)
    base = f"http://{host if ':' not in host else f'[{host}]'}:{port}/v1/alerts"
    token = args.token or os.environ.get("LVM_EDGE_TOKEN")
    if args.action == "learn":
        if args.id:
            raise CliError("alerts learn: takes no id")
        given = [_flag(n) for n in (*VERDICT, *API_ONLY) if getattr(args, n) is not None] + \
            (["--stream"] if args.stream is not None else [])
        if given:
            raise CliError(f"alerts learn: {', '.join(given)} do not apply (it fits every stream's rules)")
        reply = request_json("POST", f"{base}/verifier", None, token)
        print(json.dumps(reply, indent=2) if args.json else verifier_lines(reply))
        return 0
    if args.action == "ack":
        if not args.id:
            raise CliError("alerts ack: give the alert's id (lvm-edge alerts lists them)")
        if args.outcome is None and (args.note is not None or args.by is not None):
            raise CliError("alerts ack: --note and --by go with --outcome confirmed|false_alert|customer_fixed")
        body = {k: getattr(args, k) for k in VERDICT if getattr(args, k) is not None} or None
        alert = request_json("POST", f"{base}/{quote(args.id, safe='')}/ack", body, token)
        outcome = f", {alert['verdicts'][-1]['outcome']}" if alert.get("verdicts") else ""
        print(json.dumps(alert, indent=2) if args.json
              else f"acked {alert['id']} ({alert['rule']}, {alert['product']}{outcome})")
        return 0
    given = [_flag(n) for n in VERDICT if getattr(args, n) is not None]
    if given:
        raise CliError(f"alerts: {', '.join(given)} only with ack ID")
    if args.id:
        raise CliError("alerts list: takes no id")
    params = {k: v for k, v in (("stream", args.stream), ("status", args.status), ("limit", args.limit)) if v}
    if args.since is not None:
        params["since"] = time.time() - args.since
    reply = request_json("GET", base + (f"?{urlencode(params)}" if params else ""), None, token)
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    from edge_runtime.alerts.subscriber import alert_line

    for a in reply.get("alerts", []):
        print(alert_line(a))
    if not reply.get("alerts"):
        print(reply.get("note") or "no alerts", file=sys.stderr)
    return 0


def verifier_lines(reply: dict) -> str:
    """One line per stream's rule: fitted on how many verdicts, or what it lacks."""
    lines = []
    for stream, rules in sorted(reply.get("pairs", {}).items()):
        for rule, p in sorted(rules.items()):
            lines.append(f"{stream} {rule}: fitted on {p['right']} right and {p['false']} false verdicts"
                         if p.get("fitted") else f"{stream} {rule}: not fitted, {p.get('note')}")
    if not lines:
        return "no verdicts stored yet: acknowledge alerts with --outcome, then learn again"
    hold = reply.get("hold_below") or 0
    return "\n".join(lines + [f"alerts below p_right {hold:g} are held (stored, not sent or nudged)" if hold else
                              "each new alert carries its p_right; none is held (alerts.verifier.hold_below 0)"])


def _from_broker(args) -> int:
    from edge_runtime.alerts.subscriber import Deduper, SubscribeError, alert_line, subscribe

    try:
        import paho.mqtt.client  # noqa: F401
    except ImportError:
        raise CliError("alerts --broker needs paho-mqtt: pip install 'paho-mqtt>=2' (part of the runtime extra)") from None
    from edge_runtime.alerts.settings import parse_broker_url

    from urllib.parse import urlsplit

    try:
        if urlsplit(args.broker.strip()).username is not None:
            raise ValueError(f"broker URL {args.broker!r}: give the user as --username and the password through "
                             f"--password-env, not in the URL")
        parse_broker_url(args.broker)
    except ValueError as err:
        raise CliError(f"--broker: {err}") from None
    for flag, value in (("--site", args.site), ("--stream", args.stream)):
        if value is not None and (not value or any(c in value for c in "+#/")):
            raise CliError(f"{flag} {value!r}: cannot be part of an MQTT topic (no + # /)")
    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if password is None:
            raise CliError(f"--password-env: the variable {args.password_env} is not set")
    # the TLS files as the runtime checks its own: together, with mqtts://, loading
    from pydantic import ValidationError

    from edge_runtime.alerts.settings import MqttSettings
    from edge_runtime.config import error_message

    try:
        MqttSettings(url=args.broker, ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file).check_tls()
    except ValidationError as err:
        e = err.errors()[0]
        flag = {"ca_file": "--ca-file", "cert_file": "--cert-file", "key_file": "--key-file"}.get(
            str(e["loc"][0]) if e.get("loc") else "", "--broker")
        msg = error_message(e).replace("cert_file and key_file", "--cert-file and --key-file").replace("TLS files are given",
                                                                                       "--ca-file / --cert-file given")
        raise CliError(f"{flag}: {msg}") from None
    except ValueError as err:
        raise CliError(str(err).replace("alerts.mqtt: ", "")) from None
    dedupe, lock = Deduper(), threading.Lock()

    def on_alert(_topic: str, alert: dict) -> None:
        with lock:
            if dedupe.first(alert):
                print(json.dumps(alert) if args.json else alert_line(alert), flush=True)

    try:
        client = subscribe(args.broker, on_alert, site=args.site, stream=args.stream, username=args.username,
                           password=password,
                           ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file,
                           client_id=args.client_id)
    except SubscribeError as err:
        raise CliError(str(err), 1) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait(None if args.follow else args.seconds or 10.0)
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
        client.loop_stop()
    with lock:
        n, dup = len(dedupe.seen), dedupe.duplicates
    print(f"{n} alert(s){f', {dup} duplicate(s) dropped' if dup else ''}", file=sys.stderr)
    return 0
