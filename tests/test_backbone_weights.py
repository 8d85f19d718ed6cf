"""Backbone weights from a local safetensors file or timm's pretrained ones, and the one-line errors."""
from __future__ import annotations

import hashlib
import socket

import pytest
import torch
from safetensors.torch import save_file

from edge_runtime.config import ConfigError, model_config_from_dict, resolve_model_config
from export.model.backbone import Backbone, BackboneWeightsError
from export.cli.common import run_cli


@pytest.fixture(scope="module")
def tiny():
    return resolve_model_config("lvm-tiny")


def _with(cfg, **backbone):
    d = cfg.to_dict()
    d["backbone"].update(backbone)
    return model_config_from_dict(d, "test.yaml").backbone


def _save(state: dict, path) -> None:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


def _same(a: Backbone, b: Backbone) -> bool:
    sa, sb = a.net.state_dict(), b.net.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _one_line_error(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def test_weights_file_from_config_relative_to_cwd(tiny, tmp_path, monkeypatch):
    torch.manual_seed(1)
    src = Backbone(tiny.backbone)
    assert src.init_source == "random"
    _save(src.net.state_dict(), tmp_path / "bb.safetensors")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(2)  # a different random init, overwritten by the file
    got = Backbone(_with(tiny, weights="bb.safetensors"))
    assert _same(src, got)
    sha = hashlib.sha256((tmp_path / "bb.safetensors").read_bytes()).hexdigest()[:12]
    assert got.init_source == f"file:bb.safetensors sha256:{sha}"


def test_weights_prefixes_and_full_timm_model(tiny, tmp_path):
    import timm

    torch.manual_seed(3)
    full = timm.create_model("resnet10t", pretrained=False)  # what a converted pretrained file holds (fc, layer4)
    _save(full.state_dict(), tmp_path / "full.safetensors")
    got = Backbone(tiny.backbone, tmp_path / "full.safetensors")
    want = full.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in got.net.state_dict().items())

    src = Backbone(tiny.backbone)
    ckpt = {f"backbone.net.{k}": v for k, v in src.net.state_dict().items()}
    ckpt["sampler.proj.weight"] = torch.zeros(2, 2)  # the rest of an lvm-edge checkpoint is ignored
    _save(ckpt, tmp_path / "ckpt.safetensors")
    assert _same(src, Backbone(tiny.backbone, tmp_path / "ckpt.safetensors"))
    _save({f"net.{k}": v for k, v in src.net.state_dict().items()}, tmp_path / "module.safetensors")
    assert _same(src, Backbone(tiny.backbone, tmp_path / "module.safetensors"))


def test_bad_weight_files_are_one_line(tiny, tmp_path):
    import timm

    with pytest.raises(BackboneWeightsError) as err:
        Backbone(tiny.backbone, tmp_path / "nope.safetensors")
    assert "nope.safetensors" in _one_line_error(err) and "not found" in str(err.value)

    src = Backbone(tiny.backbone)
    torch.save(src.net.state_dict(), tmp_path / "bb.pt")
    with pytest.raises(BackboneWeightsError) as err:
        Backbone(tiny.backbone, tmp_path / "bb.pt")
    assert "bb.pt" in _one_line_error(err) and "pickle" in str(err.value)

    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(BackboneWeightsError) as err:
        Backbone(tiny.backbone, tmp_path / "junk.safetensors")
    assert "junk.safetensors" in _one_line_error(err) and "not a readable safetensors" in str(err.value)

    _save(timm.create_model("resnet18", pretrained=False).state_dict(), tmp_path / "r18.safetensors")
    with pytest.raises(BackboneWeightsError) as err:
        Backbone(tiny.backbone, tmp_path / "r18.safetensors")
    msg = _one_line_error(err)
    assert "r18.safetensors" in msg and "resnet10t" in msg and "missing" in msg and "conv1.0.weight" in msg

    state = dict(src.net.state_dict())
    state["conv1.0.weight"] = torch.zeros(1, 1, 1, 1)
    _save(state, tmp_path / "shape.safetensors")
    with pytest.raises(BackboneWeightsError) as err:
        Backbone(tiny.backbone, tmp_path / "shape.safetensors")
    assert "wrong shape 1 (conv1.0.weight)" in _one_line_error(err)


def test_pretrained_and_weights_together_is_a_config_error(tiny):
    with pytest.raises(ConfigError) as err:
        _with(tiny, pretrained=True, weights="x.safetensors")
    assert "test.yaml" in _one_line_error(err) and "pretrained" in str(err.value)


def test_pretrained_key_leaves_old_configs_alone(tiny):
    assert "pretrained" not in tiny.to_dict()["backbone"]  # same digests and bundles as before the key
    cfg = model_config_from_dict({**tiny.to_dict(), "backbone": {**tiny.to_dict()["backbone"], "pretrained": True}})
    assert cfg.to_dict()["backbone"]["pretrained"] is True
    assert cfg.arch_digest() == tiny.arch_digest() and cfg.digest() != tiny.digest()


def test_pretrained_offline_fails_fast_in_one_line(tiny, tmp_path, monkeypatch, capsys):
    hub = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache: nothing to find
    cfg = _with(tiny, pretrained=True)
    tried: list = []

    def connect(sock, address):  # failing fast offline means never dialling out (and so never a retry loop)
        tried.append(address)
        raise OSError("the test allows no network")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect)
    try:
        net = Backbone(cfg)
    except BackboneWeightsError as err:
        msg = str(err)
    else:
        pytest.skip(f"timm's weights for resnet10t could be had here ({net.init_source}): nothing to test")
    assert tried == []
    assert "\n" not in msg and "resnet10t" in msg and "HF_HUB_OFFLINE" in msg and "backbone.weights" in msg

    def body():
        Backbone(cfg)

    assert run_cli("lvm-train", body) == 2  # printed as one line by every lvm-* command
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lvm-train: error: backbone.pretrained")


def test_init_weights_false_skips_the_config_weights(tiny, tmp_path):
    # a checkpoint's config may name a file (or the hub) that the loading machine lacks
    net = Backbone(_with(tiny, weights=str(tmp_path / "gone.safetensors")), init_weights=False)
    assert net.init_source == "random"
    assert Backbone(_with(tiny, pretrained=True), init_weights=False).init_source == "random"
