"""The ``alerts:`` section of a runtime config (edge_runtime/cli/runtime_config.py holds it).

    alerts:
      site: store-12                      # topics: lvm-edge/<site>/<stream>/alerts|events|status
      scans: pos                          # vision (default): the model's scan events; pos: the till's,
                                          # POSTed to /v1/streams/<stream>/scans
      rules:                              # rule name -> thresholds ({} or null: the rule's defaults)
        bagged_without_scan: {}
        pass_around: {min_confidence: 0.6}
      streams:                            # per-stream changes: thresholds, or off
        lane2: {pass_around: off}
      mqtt:
        url: mqtts://broker.store.lan:8883
        username: lane-box-3
        password_env: LVM_EDGE_MQTT_PASSWORD   # the name of the variable; the secret stays out of the file
        ca_file: /etc/lvm-edge/store-ca.pem
      webhooks: [https://backoffice.store.lan/hooks/lvm-edge]
      outbox: {max_alerts: 10000}
      precision_verdicts: 50              # each rule's precision per stream over its last this many verdicts
      evidence: {keep: item}              # JPEGs of the item with each alert (edge_runtime/alerts/evidence.py)
      nudge: {webhook: http://127.0.0.1:8080/nudge}   # the kiosk screen's signal (edge_runtime/alerts/nudge.py)
      verifier: {hold_below: 0.5, learn_every: 10}   # staff's verdicts learnt; hold_below 0: score only
      clear_within_s: 60                  # an alert whose item is paid or put back this soon is cleared (0: never)

Everything a config can get wrong is caught when it is loaded (one line naming the key): an
unknown rule name, a broker URL that is not mqtt(s)://host[:port], a TLS file that is not there, a
webhook that is not http(s). At start, once the bundle is open: thresholds, and activities a rule
needs that the bundle lacks (``check_rules``); the password's variable being unset (``check_env``).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_runtime.alerts.evidence import EvidenceSettings
from edge_runtime.alerts.nudge import NudgeSettings

TOPIC_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")  # how environment variables are named by convention
HOST = re.compile(r"^[A-Za-z0-9._:-]+$")   # a DNS name, an IPv4 or (unbracketed by urlsplit) IPv6 address


def known_rules() -> tuple[str, ...]:
    """The rule names a config may use: the rule registry's (edge_runtime/alerts/rules/, imported only
    when alerts are configured)."""
    from edge_runtime.alerts.rules import RULES

    return tuple(RULES)


def _check_rule_names(names, where: str) -> None:
    if not names:
        return
    known = known_rules()
    for name in names:
        if name not in known:
            raise ValueError(f"{where}: unknown rule {name!r} (rules: {', '.join(known)})")


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """mqtt://host[:port] or mqtts://host[:port] -> (host, port, tls). ValueError (one line) otherwise."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as err:
        raise ValueError(f"broker URL {url!r}: {err}") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"broker URL {url!r}: expected mqtt://host[:port] or mqtts://host[:port]")
    if not parts.hostname:
        raise ValueError(f"broker URL {url!r}: no host")
    if not HOST.match(parts.hostname):
        raise ValueError(f"broker URL {url!r}: {parts.hostname!r} is not a host name or address")
    if port == 0:
        raise ValueError(f"broker URL {url!r}: port 0 cannot be connected to")
    if parts.username or parts.password:
        raise ValueError(f"broker URL {url!r}: give the user as mqtt.username and the password through "
                         f"mqtt.password_env, not in the URL")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"broker URL {url!r}: expected mqtt://host[:port], nothing after the port")
    tls = parts.scheme == "mqtts"
    return parts.hostname, port or (8883 if tls else 1883), tls


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MqttSettings(_Strict):
    url: str = Field(description="mqtt://host[:port] (1883) or mqtts://host[:port] (8883, TLS)")
    username: str | None = None
    password_env: str | None = Field(None, description="environment variable holding the password")
    ca_file: str | None = Field(None, description="CA certificate(s) to trust (PEM); default: the system's")
    cert_file: str | None = Field(None, description="client certificate (PEM), for brokers that ask for one")
    key_file: str | None = Field(None, description="the client certificate's key (PEM)")
    client_id: str | None = Field(None, description="client id prefix; each stream connects as <prefix>-<stream> "
                                                    "(default lvm-edge-<host name>-<site>)")
    keepalive_s: int = Field(15, ge=5, le=3600, description="MQTT keepalive; a lost broker is noticed within 1.5x")
    publish_events: bool = Field(False, description="also publish the events each evaluation read to .../events "
                                                    "(QoS 1, while connected; not kept in the outbox)")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parse_broker_url(v)
        return v.strip()

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _file(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).expanduser().is_file():
            raise ValueError(f"{'a folder, not a file' if Path(v).expanduser().is_dir() else 'no such file'}: {v}")
        return v

    @model_validator(mode="after")
    def _pairs(self) -> "MqttSettings":
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("give cert_file and key_file together (a client certificate and its key)")
        if (self.ca_file or self.cert_file) and not parse_broker_url(self.url)[2]:
            raise ValueError(f"TLS files are given but the URL {self.url!r} is not mqtts://")
        if self.password_env and not self.username:
            raise ValueError("password_env without username")
        return self

    def check_tls(self) -> None:
        """ValueError (one line) for TLS files that exist but do not load (not PEM, a key that is not the
        certificate's): found at start rather than at the first connection."""
        if not parse_broker_url(self.url)[2]:
            return
        import ssl

        ctx = ssl.create_default_context()
        for what, load in (("ca_file", lambda: self.ca_file and ctx.load_verify_locations(cafile=self.ca_file)),
                           ("cert_file and key_file", lambda: self.cert_file and ctx.load_cert_chain(self.cert_file,
                                                                                                   self.key_file))):
            try:
                load()
            except (ssl.SSLError, OSError, ValueError) as err:  # each named: which file does not load
                files = self.ca_file if what == "ca_file" else f"{self.cert_file}, {self.key_file}"
                raise ValueError(f"alerts.mqtt: the TLS files do not load: {what} ({files}): "
                                 f"{' '.join(str(err).split())} (PEM files expected; the key must be the "
                                 f"certificate's)") from None

    def password(self) -> str | None:
        return os.environ.get(self.password_env) if self.password_env else None


class VerifierSettings(_Strict):
    hold_below: float = Field(0.0, ge=0, le=1, description="an alert the lane's verifier gives a lower p(right) is "
                              "held: stored and listed, not sent or nudged (0, the default: every alert is sent, "
                              "with its p_right)")
    min_verdicts: int = Field(30, ge=5, le=100_000, description="verdicts a stream's rule needs before a fit "
                              "gives it a model")
    verdicts: int = Field(2000, ge=5, le=100_000, description="a fit reads each stream's rule's last this many verdicts")
    learn_every: int = Field(10, ge=0, le=100_000, description="fit again after this many new verdicts (0: only "
                             "`lvm-edge alerts learn`)")


class OutboxSettings(_Strict):
    max_alerts: int = Field(10_000, ge=10, le=10_000_000,
                            description="alerts kept in <state dir>/alerts.db; beyond it the oldest delivered "
                                        "ones go (acked first)")


class AlertSettings(_Strict):
    site: str = Field("store", description="the store's name in topics and alerts (A-Z a-z 0-9 _ . -)")
    scans: Literal["vision", "pos"] = Field(
        "vision", description="where the rules' scans come from: vision (the model's scan events) or pos (the "
                              "till's, sent by the point-of-sale system to POST /v1/streams/<stream>/scans)")
    rules: dict[str, dict[str, Any] | None] = Field(
        default_factory=dict, description="rule name -> thresholds ({} or null: the rule's defaults); none: no alerts")
    streams: dict[str, dict[str, dict[str, Any] | bool | None]] = Field(
        default_factory=dict, description="stream name -> {rule: thresholds | off}: per-stream changes to rules")
    mqtt: MqttSettings | None = None
    webhooks: list[str] = Field(default_factory=list, description="URLs that receive each alert as an HTTP POST")
    webhook_timeout_s: float = Field(10.0, gt=0, le=120)
    id_bucket_s: float = Field(30.0, gt=0, le=3600, description="alerts of one rule, product and lane starting within the "
                                                      "same bucket of this many seconds are one alert (one id)")
    outbox: OutboxSettings = OutboxSettings()
    precision_verdicts: int = Field(50, ge=1, le=10_000,
                                    description="each rule's precision per stream (/v1/status, /metrics) is measured "
                                                "over its last this many verdicts")
    evidence: EvidenceSettings = Field(EvidenceSettings(), description="JPEGs of the item kept with each alert: "
                                       "keep item | frame | off, per stream too")
    nudge: NudgeSettings = Field(NudgeSettings(), description="a fast signal for the kiosk's screen as each alert "
                                 "is stored: MQTT .../nudges (QoS 0) and a local webhook; never kept")
    verifier: VerifierSettings = Field(VerifierSettings(), description="staff's verdicts learnt per stream and rule: "
                                       "each new alert's p_right; with hold_below, the unlikely ones are held")
    clear_within_s: float = Field(60.0, ge=0, le=3600, description="an item alert whose item is scanned or put back "
                                  "within this many seconds is cleared and sent again (0: never)")

    @field_validator("site")
    @classmethod
    def _site(cls, v: str) -> str:
        if not TOPIC_PART.match(v):
            raise ValueError(f"{v!r} cannot be part of an MQTT topic (1-64 of A-Z a-z 0-9 _ . -)")
        return v

    @field_validator("rules")
    @classmethod
    def _rules(cls, v: dict) -> dict:
        _check_rule_names(v, "rules")
        return v

    @field_validator("streams")
    @classmethod
    def _streams(cls, v: dict) -> dict:
        for stream, changes in v.items():
            _check_rule_names(changes, f"streams.{stream}")
        return v

    @field_validator("webhooks")
    @classmethod
    def _hooks(cls, v: list[str]) -> list[str]:
        for url in v:
            try:
                p = urlsplit(url)
                port = p.port
            except ValueError as err:
                raise ValueError(f"webhook {url!r}: {err}") from None
            if p.scheme not in ("http", "https") or not p.hostname:
                raise ValueError(f"webhook {url!r}: expected an http:// or https:// URL")
            if not HOST.match(p.hostname) or port == 0:
                raise ValueError(f"webhook {url!r}: {p.netloc!r} is not a host[:port] that can be connected to")
            if p.username or p.password:  # urllib does not send them; and they would not be hidden
                raise ValueError(f"webhook {p.scheme}://…@{p.hostname}: a user or password in the URL is not sent; "
                                 f"put a token in the URL's query (the status and logs do not show it)")
        if len(set(v)) != len(v):
            raise ValueError("a webhook URL is listed twice")
        return v

    @property
    def enabled(self) -> bool:
        """Whether any stream has a rule to evaluate (a stream's change can turn a rule on for it alone)."""
        return bool(self.rules) or any(c is not False for ch in self.streams.values() for c in ch.values())

    def rule_names(self) -> list[str]:
        """Every rule some stream evaluates: the site's and those a stream's changes turn on."""
        on = {r for changes in self.streams.values() for r, c in changes.items() if c is not False}
        return sorted(set(self.rules) | on)

    def rules_for(self, stream: str) -> dict[str, dict[str, Any]]:
        """The rules one stream evaluates, with their thresholds (the stream's changes applied)."""
        out = {name: dict(th or {}) for name, th in self.rules.items()}
        for name, change in self.streams.get(stream, {}).items():
            if change is False:
                out.pop(name, None)
            elif isinstance(change, dict):
                out[name] = {**out.get(name, {}), **change}
            else:  # true / null: the rule with its defaults (or the site's thresholds)
                out.setdefault(name, {})
        return out

    def check_rules(self, activities: list[str], streams: list[str]) -> None:
        """ValueError (one line) for a threshold the rules refuse or a rule the bundle cannot evaluate
        (an activity it needs is not among the bundle's labels), for the site's rules and each stream's."""
        from edge_runtime.alerts.rules import RuleEngine

        for stream in [None, *streams, *self.streams]:
            try:
                RuleEngine(self.rules_for(stream) if stream else {n: t or {} for n, t in self.rules.items()},
                           activities, self.scans)
            except ValueError as err:
                where = f"alerts.streams.{stream}" if stream in self.streams else "alerts.rules"
                raise ValueError(f"{where}: {err}") from None

    def check_env(self) -> None:
        """What only the process's environment can say: ValueError (one line) when the broker's password
        variable is named but not set, or its TLS files do not load."""
        if self.mqtt and self.mqtt.password_env and os.environ.get(self.mqtt.password_env) is None:
            name = self.mqtt.password_env
            # a password written here by mistake is not repeated into the log: only a variable-like name is shown
            if ENV_NAME.fullmatch(name):
                raise ValueError(f"alerts.mqtt.password_env: the variable {name} is not set")
            raise ValueError("alerts.mqtt.password_env: not the name of a set variable (not shown: it does not "
                             "look like one, e.g. LVM_EDGE_MQTT_PASSWORD, and may be the password itself)")
        if self.mqtt:
            self.mqtt.check_tls()

    def sink_names(self) -> list[str]:
        return (["mqtt"] if self.mqtt else []) + [f"webhook:{u}" for u in self.webhooks]
