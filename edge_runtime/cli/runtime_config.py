"""Runtime settings (configs/runtime/*.yaml) as validated data; CLI flags override them.

Unknown or mistyped keys are errors naming the key and the file, as for model configs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_runtime.alerts.settings import AlertSettings
from edge_runtime.config import CONFIG_DIR, ConfigError, load_yaml, validate_mapping
from edge_runtime.items.zones import Zones

ZONES_HELP = ("the checkout's zones: {basket | scanner | counter | bag: [[x, y], ...]}, each a polygon of 3 or more "
              "points in image coordinates from 0 to 1; they win over those set over the API; none: proposed "
              "from the bundle's event head")


def _zones(value: Any) -> Any:
    """A zones mapping checked as ``Zones`` (ValueError, one line naming the zone); kept as data."""
    return None if value is None else Zones.from_dict(value).to_dict()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceSettings(_Strict):
    uri: str | None = Field(None, description="source URI (camera index, /dev/videoN, csi://, rtsp://, file, demo://)")
    realtime: bool = Field(False, description="pace files / demo at their own speed")
    queue_size: int = Field(4, ge=1, le=1024)
    stall_timeout_s: float = Field(5.0, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    zones: dict[str, list[tuple[float, float]]] | None = Field(None, description=ZONES_HELP + " (one stream)")

    _check_zones = field_validator("zones", mode="before")(_zones)


class ApiSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8321, ge=0, le=65535)
    token_env: str = Field("LVM_EDGE_TOKEN", description="environment variable holding the API token")
    max_body_bytes: int = Field(8 << 20, gt=0)
    max_image_pixels: int = Field(4096 * 4096, gt=0)
    max_batch: int = Field(64, ge=1, le=1024, description="queries per heads call")
    batch_wait_ms: float = Field(3.0, ge=0, le=1000, description="how long a query waits for others to batch with")


class StateSettings(_Strict):
    dir: str | None = Field(None, description="where snapshots live; none: no persistence")
    snapshot_every_s: float | None = Field(300.0, gt=0, description="periodic snapshot interval (wall seconds)")


class DemoSettings(_Strict):
    seed: int = Field(1000042, ge=0, description="a held-out seed: training videos use seeds < 1,000,000")
    duration_s: float = Field(600.0, gt=0, description="demo video length streamed (video seconds)")
    look: str | None = None
    queries: int = Field(8, ge=1, le=100, description="queries answered at the end, beside ground truth")


class StreamSettings(_Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                      description="the stream's name: API and CLI address it by this; its snapshots live in "
                                  "<state dir>/streams/<name>/")
    uri: str = Field(..., description="source URI, as source.uri")
    zones: dict[str, list[tuple[float, float]]] | None = Field(None, description=ZONES_HELP)

    @model_validator(mode="before")
    @classmethod
    def _zones_named(cls, data: Any) -> Any:
        """A bad polygon's line names the stream, not only its place in the list."""
        if isinstance(data, dict) and data.get("zones") is not None:
            try:
                _zones(data["zones"])
            except ValueError as err:
                raise ValueError(f"stream {data.get('name')!r}: zones: {err}") from None
        return data


class RuntimeSettings(_Strict):
    bundle: str = Field("engines/lvm-tiny-fp32", description="bundle folder: absolute, else relative to the current "
                        "directory, else to the repository")
    backend: Literal["auto", "onnxruntime", "tensorrt"] = "auto"
    threads: int | None = Field(None, ge=1, description="intra-op threads (None: the library's choice)")
    answers: Literal["auto", "reader", "heads"] = Field(
        "auto", description="which answers: the memory reader, the query heads, or auto (the reader when the "
                            "bundle carries one)")
    batch_frames: int | None = Field(None, ge=1, description="frames per backbone call (None: one clip; with an "
                                     "event path a second's frames, 0.4 s of them from a camera or --realtime)")
    events: bool = Field(True, description="use the bundle's event head (item tracks at event_fps; the alert rules "
                         "read their events); false: the memory path alone at its fps, alerts from what happened")
    event_fps: float | None = Field(None, gt=0, le=60, description="frames a second through the bundle's event head "
                                    "(None: the bundle's, 5; at least the memory's fps); no effect without an event head")
    duration_s: float | None = Field(None, gt=0, description="stop after this much stream time")
    status_every_s: float = Field(1.0, gt=0)
    source: SourceSettings = SourceSettings()
    streams: list[StreamSettings] = Field(default_factory=list, description="several named sources on one engine "
                                          "set (instead of source.uri); source's other settings apply to each")
    api: ApiSettings = ApiSettings()
    state: StateSettings = StateSettings()
    demo: DemoSettings = DemoSettings()
    alerts: AlertSettings = Field(AlertSettings(), description="checkout alerts: site, rules, broker, webhooks "
                                  "(edge_runtime/alerts/settings.py)")

    @model_validator(mode="after")
    def _one_name_each(self) -> "RuntimeSettings":
        names = [st.name for st in self.streams]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"streams: the name {dup[0]!r} is used twice (each stream needs its own)")
        if self.streams and self.source.uri:
            raise ValueError("give either source.uri (one stream) or streams (several), not both")
        if self.streams and self.source.zones:
            raise ValueError("with streams, give each stream its own zones (streams[].zones), not source.zones")
        return self


def load_runtime_settings(path: str | Path | None) -> RuntimeSettings:
    if path is None:
        return RuntimeSettings()
    p = Path(path)
    if not p.exists() and p.suffix not in (".yaml", ".yml"):
        p = CONFIG_DIR / "runtime" / f"{path}.yaml"
        if not p.exists():
            # an installed package carries no configs/ folder: bare names work only in a checkout
            raise ConfigError(f"no runtime config named '{path}' (looked for {p}); give the path of a YAML file, "
                              f"e.g. a copy of the repository's configs/runtime/kiosk.yaml")
    data = load_yaml(p)
    if data is None:
        data = {}
    return validate_mapping(RuntimeSettings, data, str(p))


def override(settings: RuntimeSettings, changes: dict[str, Any]) -> RuntimeSettings:
    """Apply dotted-key overrides whose value is not None (CLI flags win over the file)."""
    data = settings.model_dump()
    for key, value in changes.items():
        if value is None:
            continue
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return RuntimeSettings.model_validate(data)
