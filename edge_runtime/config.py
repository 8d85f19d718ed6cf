"""Model configs as validated data.

One schema for both sides: the trainer/exporter builds the model from it and the runtime reads the
same numbers (fps, clip length, memory size) from the bundle manifest. Unknown or mistyped keys are
errors that name the key and the file, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer, model_validator

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TENSORRT_TOPK_MAX = 3840  # TensorRT's TopK limit on K


class ConfigError(ValueError):
    """A config file that does not validate; the message is one line naming the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackboneConfig(_Strict):
    name: str = Field(description="timm model name")
    image_size: int = Field(gt=0, description="square input side in pixels")
    grid: int = Field(gt=0, description="patch grid side; P = grid * grid tokens per frame")
    dim: int = Field(gt=0, description="token width d")
    out_index: int | None = Field(None, description="timm features_only stage; None: forward_features")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra timm create_model kwargs")
    weights: str | None = Field(None, description="local safetensors file with backbone weights (a relative "
                                "path is taken from the current directory)")
    pretrained: bool = Field(False, description="timm's pretrained weights (needs the model hub or its cache)")
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @model_validator(mode="after")
    def _one_init(self) -> "BackboneConfig":
        if self.pretrained and self.weights:
            raise ValueError("give either pretrained: true or weights: PATH, not both")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict[str, Any]:
        # pretrained: false is left out so configs, their digests and the bundles made before the
        # key existed stay the same, and a runtime that predates the key still reads the bundle
        d = handler(self)
        if not d.get("pretrained"):
            d.pop("pretrained", None)
        return d

    @property
    def tokens_per_frame(self) -> int:
        return self.grid * self.grid


class StreamConfig(_Strict):
    fps: float = Field(1.0, gt=0, description="frames per second sampled into memory")
    clip_frames: int = Field(gt=0, description="T: frames per clip handed to the sampler")
    memory_tokens: int = Field(gt=0, description="m: tokens kept in memory")
    object_fps: float = Field(5.0, gt=0, description="fps of object-query boxes")
    max_video_s: float = Field(36000.0, gt=0, description="temporal encoding period scale (seconds)")


class SamplerConfig(_Strict):
    kind: Literal["lvm", "s5"] = Field("lvm", description="token selector: lvm = LVM-Net's transformer sampler, "
                                        "s5 = Selective S4 (S4D features, linear mask generator; export/model/s5_sampler.py)")
    d_model: int = Field(gt=0)
    layers: int = Field(ge=1, description="transformer layers (lvm) or S4D blocks (s5)")
    heads: int = Field(ge=1, description="attention heads (lvm only)")
    ff_mult: int = Field(4, ge=1, description="feed-forward width multiple (lvm only)")
    state_size: int = Field(8, ge=1, le=256, description="s5: complex modes N per channel of each S4D layer; the "
                            "carried state is P x layers x d_model x 2N floats per stream")
    s4_mode: Literal["conv", "recurrent"] = Field("conv", description="s5: how the S4D layers run a clip: one causal "
                                                   "convolution (matrix products) or step by step; same numbers")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout in the lvm sampler's layers (the s5 sampler has none)")
    topk_chunk: int = Field(TENSORRT_TOPK_MAX, gt=0, le=TENSORRT_TOPK_MAX,
                            description="largest K of one TopK; larger m selects in chunks")
    tau_start: float = Field(1.5, gt=0)
    tau_end: float = Field(1.0, gt=0)

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict[str, Any]:
        # an lvm sampler is written without the s5 keys, so configs, digests and bundles made before
        # they existed stay the same
        d = handler(self)
        if d.get("kind") == "lvm":
            for key in ("kind", "state_size", "s4_mode"):
                d.pop(key, None)
        return d


# (section, key) of optional settings left out of a config's dict (and digest) while unset
WRITTEN_WHEN_SET = (("heads", "attention_dropout"),)


class HeadsConfig(_Strict):
    d_model: int = Field(gt=0)
    enc_layers: int = Field(ge=1)
    dec_layers: int = Field(ge=1)
    heads: int = Field(ge=1)
    ff_mult: int = Field(4, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    attention_dropout: float | None = Field(None, ge=0, lt=1, description=(
        "dropout on the attention weights (None: ``dropout``). At 0 training runs attention as torch's "
        "fused kernel, which keeps no tokens x tokens matrix for the backward pass (a long memory's)"))
    num_activities: int = Field(gt=0, description="C activity classes")
    window_queries: int = Field(gt=0, description="max decoder time queries per asked window")


class SVDConfig(_Strict):
    n_components: int = Field(10, gt=0)
    forgetting: float = Field(0.95, gt=0, le=1)
    energy_cutoff: float = Field(1e-6, ge=0, lt=1)
    reorth_every: int = Field(100, gt=0)


class TrainConfig(_Strict):
    lr_sampler: float = Field(1e-5, gt=0)
    lr_other: float = Field(1e-7, gt=0)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(4, ge=1)
    continual_p: int = Field(2, ge=0, description="past queries in the continual-learning loss")
    l1_weight: float = 5.0
    giou_weight: float = 2.0
    dropout: float = Field(0.2, ge=0, lt=1, description="not read by training: sampler.dropout and heads.dropout "
                           "set the model's dropout; the key stays so existing configs, and the digests their "
                           "checkpoints and bundles record, still read")
    train_videos: int = Field(8, ge=1)
    video_s: float = Field(1800.0, gt=0)
    queries_per_video: int = Field(64, ge=1)
    seed: int = 0
    warmup_steps: int = Field(0, ge=0, description="learning rates rise linearly from 0 over these steps")
    prior_init: bool = Field(False, description="start the activity head's bias at the log-odds of each "
                                                "activity's frequency in the training queries (RetinaNet-style)")
    sampler_target_weight: float = Field(0.0, ge=0, description="weight of the sampler's event-token loss "
                                         "(export/train/token_targets.py); 0 = trained through the heads alone, as in LVM-Net")
    identity_weight: float = Field(0.0, ge=0, description="weight of the heads' identity loss: which memory tokens "
                                   "show the queried object (export/train/token_targets.py); 0 = off, as in LVM-Net")
    token_activity_weight: float = Field(0.0, ge=0, description="weight of the heads' token-activity loss: what "
                                         "each memory token of an event shows being done (export/train/heads_stage.py)")
    heads_steps: int = Field(0, ge=0, description="second stage: steps of the heads alone on the frozen sampler's "
                             "memories (export/train/heads_stage.py); 0 = none, as in LVM-Net")
    heads_batch: int = Field(64, ge=1, description="queries per step in the heads stage")
    heads_videos: int = Field(0, ge=0, description="videos the heads stage streams (the training videos first, "
                              "then more of the same looks); 0 = train_videos")
    heads_queries_per_video: int = Field(0, ge=0, description="queries per heads-stage video; 0 = queries_per_video")
    lr_heads: float = Field(1e-3, gt=0, description="peak learning rate of the heads stage (cosine decay)")
    lsmcl_steps: int = Field(0, ge=0, description="s5: steps of long-short masked contrastive pre-training of the "
                             "S4 encoder before stage 1 (export/train/lsmcl.py); 0 = none")
    lsmcl_mask: float = Field(0.5, ge=0, lt=1, description="s5: share of tokens masked in each LSMCL view")
    lsmcl_long_clips: int = Field(4, ge=2, description="s5: clips in an LSMCL long view (the short view is one clip)")
    lsmcl_temperature: float = Field(0.1, gt=0, description="s5: InfoNCE temperature rho")
    lsmcl_momentum: float = Field(0.99, ge=0, lt=1, description="s5: momentum of the key encoder")
    lsmcl_batch: int = Field(32, ge=2, description="s5: long/short pairs per LSMCL step")

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict[str, Any]:
        # the LSMCL keys are left out at their defaults: digests of configs that predate them stay the same
        d = handler(self)
        for key, field in type(self).model_fields.items():
            if key.startswith("lsmcl_") and d.get(key) == field.default:
                d.pop(key, None)
        return d


class ModelConfig(_Strict):
    name: str
    description: str = ""
    backbone: BackboneConfig
    stream: StreamConfig
    sampler: SamplerConfig
    heads: HeadsConfig
    svd: SVDConfig = SVDConfig()
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _consistent(self) -> "ModelConfig":
        for part, cfg in (("sampler", self.sampler), ("heads", self.heads)):
            if cfg.d_model % cfg.heads:
                raise ValueError(f"{part}.d_model ({cfg.d_model}) must be divisible by {part}.heads ({cfg.heads})")
        if self.sampler.tau_end > self.sampler.tau_start:
            raise ValueError("sampler.tau_end must not exceed sampler.tau_start")
        return self

    @property
    def clip_tokens(self) -> int:
        return self.stream.clip_frames * self.backbone.tokens_per_frame

    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        # settings added after models were trained are written only when set: the configs of those
        # models (and so the hashes their checkpoints, readers and bundles carry) stay what they were
        for part, key in WRITTEN_WHEN_SET:
            if d[part].get(key) is None:
                d[part].pop(key, None)
        return d

    def digest(self) -> str:
        """sha256 of the canonical JSON form: the same model config always hashes the same."""
        return _sha256_json(self.to_dict())

    def arch_digest(self) -> str:
        """Hash of what fixes the weights' meaning (not training settings or the description)."""
        d = self.to_dict()
        d.pop("train"), d.pop("description")
        d["backbone"].pop("weights"), d["backbone"].pop("pretrained", None)
        return _sha256_json(d)


def _sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _format_error(source: str, err: ValidationError) -> str:
    errors = err.errors()
    # A misspelt key shows up as both "unknown" and "missing": name the misspelling.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key '{loc}'"
    if first["type"] == "missing":
        return f"{source}: missing key '{loc}'"
    msg = error_message(first)
    return f"{source}: {loc}: {msg}" if loc else f"{source}: {msg}"


def error_message(e: dict) -> str:
    """One pydantic error's message; a check of ours as its own sentence, without pydantic's prefix."""
    msg = str(e.get("msg", "invalid"))
    if e.get("type") == "value_error":
        msg = str((e.get("ctx") or {}).get("error") or msg.removeprefix("Value error, "))
    return msg


def validate_mapping(schema: type[BaseModel], data: Any, source: str):
    """Config data -> a validated ``schema``; anything wrong is a ConfigError of one line naming
    ``source`` (the file) and the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(source, err)) from None


def model_config_from_dict(data: Any, source: str = "<dict>") -> ModelConfig:
    return validate_mapping(ModelConfig, data, source)


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None


def load_model_config(path: str | Path) -> ModelConfig:
    return model_config_from_dict(load_yaml(path), str(path))


CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def resolve_model_config(name_or_path: str | Path) -> ModelConfig:
    """Accept a path, or a bare name like 'lvm-tiny' looked up in configs/models/."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return load_model_config(p)
    return load_model_config(CONFIG_DIR / "models" / f"{name_or_path}.yaml")
