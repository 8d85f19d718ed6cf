"""Training: batch constraint, losses, a short training smoke run (1 and 2 DDP processes), bad input."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from export.train.losses import focal_loss, giou
from export.train.joint_stage import VideoBatchSampler

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "models" / "lvm-tiny.yaml"
SHIPPED = REPO / "checkpoints" / "lvm-tiny.safetensors"
SHIPPED_READER = REPO / "checkpoints" / "lvm-tiny-reader.safetensors"
# 6 clips of 16 s per video; 1 short backbone epoch; a handful of sampler steps; the reader stage on 2
# videos (+ 2 it calibrates on) for a few steps; a small event stage. The heads stage runs in the test's
# third run, on the first run's sampler (its config default streams 48 videos, minutes on CPU).
SMOKE_ARGS = ["--videos", "2", "--video-s", "96", "--queries", "12", "--backbone-epochs", "1", "--backbone-frames", "64",
              "--epochs", "2", "--workers", "1", "--no-progress", "--reader-steps", "3", "--reader-videos", "2",
              "--reader-calib-videos", "2", "--event-steps", "2", "--event-videos", "1", "--event-frames", "8",
              "--track-label-videos", "2", "--track-label-epochs", "1"]


@pytest.fixture(scope="module")
def smoke_config(tmp_path_factory) -> Path:
    """lvm-tiny with a heads-stage batch of 8 queries (64 in the config: ~10 s a step on one core, and
    a smoke run checks that the stages run and chain, not what they learn)."""
    cfg = tmp_path_factory.mktemp("smoke") / "lvm-tiny.yaml"
    text = TINY.read_text()
    assert "heads_batch: 64" in text
    cfg.write_text(text.replace("heads_batch: 64", "heads_batch: 8"))
    return cfg


@pytest.mark.parametrize("n,batch,world", [(8, 8, 1), (8, 2, 2), (5, 2, 2), (9, 4, 1)])
def test_batch_sampler_never_repeats_a_video(n, batch, world):
    samplers = [VideoBatchSampler(n, batch, r, world, seed=3) for r in range(world)]
    for epoch in range(3):
        groups = samplers[0].epoch_groups(epoch)
        assert sorted(v for g in groups for v in g) == list(range(n))
        for g in groups:
            shares = [s.local(g) for s in samplers]
            flat = [v for sh in shares for v in sh]
            assert len(flat) == len(set(flat)) == len(g)  # distinct within and across ranks
            assert all(len(sh) <= batch for sh in shares)
    assert samplers[0].epoch_groups(0) != samplers[0].epoch_groups(1) or n < 3


def test_losses_behave():
    t = torch.tensor([[1.0, 0.0, 1.0]])
    good = focal_loss(torch.tensor([[9.0, -9.0, 9.0]]), t)
    bad = focal_loss(torch.tensor([[-9.0, 9.0, -9.0]]), t)
    assert good < 1e-3 < bad
    b = torch.tensor([[0.1, 0.1, 0.5, 0.5]])
    assert torch.allclose(giou(b, b), torch.ones(1))
    far = torch.tensor([[0.6, 0.6, 0.9, 0.9]])
    assert giou(b, far) < 0


def _run(args, env_extra=None, timeout=900):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.update(env_extra or {})
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


@pytest.mark.slow
def test_train_smoke_and_resume(tmp_path, smoke_config):
    smoke = ["--config", str(smoke_config), *SMOKE_ARGS]
    out = tmp_path / "run"
    r = _run([sys.executable, "-m", "export.cli.train", *smoke, "--out", str(out), "--max-steps", "6"])
    assert r.returncode == 0, r.stderr[-2000:]
    ck = out / "lvm-tiny.safetensors"
    assert ck.exists() and (out / "optimizer.safetensors").exists() and (out / "train_log.jsonl").exists()
    from export.model.checkpoint import load_checkpoint

    net, meta = load_checkpoint(ck)
    assert meta["steps"] == "6" and meta["world_size"] == "1"
    # every stage says how long it will take before it starts
    assert "lvm-train: plan (lvm-tiny" in r.stdout and "reader stage: 2 + 2 videos, 3 steps" in r.stdout
    # the event stage, small (its figures and the head's file beside the checkpoint, where lvm-export looks)
    assert "event stage: 2 steps" in r.stdout and (out / "lvm-tiny-events.safetensors").exists()
    # the track labeler follows it on that head's tracks: a 2-step head finds no item, and says so
    assert "track labeler: 2 videos, 1 epoch" in r.stdout
    assert "track labeler: no item tracks in 2 videos: no track labeler written" in r.stdout
    assert not (out / "lvm-tiny-track-labels.safetensors").exists()
    # the reader stage: beside the checkpoint, where lvm-export looks for it, for this model
    from export.model.reader import load_reader

    reader, answer, rmeta = load_reader(out / "lvm-tiny-reader.safetensors", net.cfg)
    assert rmeta["train"]["steps"] == 3 and rmeta["train"]["videos"] == 2
    assert rmeta["checkpoint"] == str(ck) and len(rmeta["prior"]) == net.cfg.heads.num_activities
    assert set(rmeta["calibration"]) >= {"activity", "object", "time", "prior_weight", "prior_weight_by_window"}
    from export.train.reader_calibration import PRIOR_WEIGHTS
    by_window = rmeta["calibration"]["prior_weight_by_window"]  # per asked window length, from the grid
    assert by_window and all(w in (300.0, 900.0, 1800.0) and x in PRIOR_WEIGHTS for w, x in by_window)
    # resume continues from the saved epoch: no further steps in a 1-epoch run; the checkpoint is left as
    # it is, and the stages trained on it are kept
    before = {f.name: f.read_bytes() for f in out.glob("lvm-tiny*.safetensors")}
    r2 = _run([sys.executable, "-m", "export.cli.train", *smoke, "--out", str(out), "--max-steps", "6", "--resume"])
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert "reader stage: " in r2.stdout and "as asked: kept (--resume)" in r2.stdout, r2.stdout[-2000:]
    assert "event stage: " in r2.stdout.split("as asked: kept (--resume)", 1)[1], r2.stdout[-2000:]
    assert {f.name: f.read_bytes() for f in out.glob("lvm-tiny*.safetensors")} == before
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["heads_steps"] == 0
    assert summary["reader"] == str(out / "lvm-tiny-reader.safetensors") and summary["reader_train"]["steps"] == 3
    assert summary["events_heldout"] and summary["events"] == str(out / "lvm-tiny-events.safetensors")

    # the heads stage alone on top of that run's sampler, its videos streamed by 2 worker processes
    out2 = tmp_path / "heads"
    r3 = _run([sys.executable, "-m", "export.cli.train", "--config", str(smoke_config), "--out", str(out2), "--sampler-from",
               str(ck), "--heads-steps", "2", "--heads-videos", "2", "--video-s", "96", "--queries", "12",
               "--workers", "2", "--no-progress", "--no-reader", "--no-events"])
    assert r3.returncode == 0, r3.stderr[-2000:]
    assert not (out2 / "lvm-tiny-reader.safetensors").exists() and "reader stage: off" in r3.stdout
    net2, meta2 = load_checkpoint(out2 / "lvm-tiny.safetensors")
    assert meta2["steps"] == "0" and meta2["heads_steps"] == "2"
    heads_log = [json.loads(line) for line in (out2 / "train_log.jsonl").read_text().splitlines()
                 if json.loads(line).get("stage") == "heads"]
    assert heads_log and {"activity", "identity", "token_activity"} <= set(heads_log[-1])
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in heads_log)
    for k, v in net.sampler.state_dict().items():
        assert torch.equal(v, net2.sampler.state_dict()[k]), k
    assert any(not torch.equal(v, net2.heads.state_dict()[k]) for k, v in net.heads.state_dict().items())


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
@pytest.mark.slow
def test_train_ddp_two_processes(tmp_path, smoke_config):
    smoke = ["--config", str(smoke_config), *SMOKE_ARGS]
    out = tmp_path / "ddp"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    r = _run([torchrun, "--nproc-per-node", "2", "--master-port", "29517", "-m", "export.cli.train", *smoke,
              "--out", str(out), "--max-steps", "6"])
    assert r.returncode == 0, r.stderr[-3000:]
    from export.model.checkpoint import load_checkpoint

    net, meta = load_checkpoint(out / "lvm-tiny.safetensors")
    assert meta["world_size"] == "2"
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in log)


def _in_process(module: str, argv: list[str], capfd):
    """The command's main() in this process (one subprocess per case spent ~1.5 s importing torch);
    the first case of the test below still runs as a real subprocess."""
    import importlib
    from types import SimpleNamespace

    capfd.readouterr()
    try:
        rc = importlib.import_module(module).main(argv)
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    out, err = capfd.readouterr()
    return SimpleNamespace(returncode=rc, stdout=out, stderr=err)


def test_bad_inputs_one_line(tmp_path, capfd):
    bad_seed = _run([sys.executable, "-m", "export.cli.train", "--config", str(TINY), "--out", str(tmp_path),
                     "--seed", "-4"])
    assert bad_seed.returncode == 2 and "--seed must be in" in bad_seed.stderr
    assert "Traceback" not in bad_seed.stderr
    threads = torch.get_num_threads()
    other = tmp_path / "other.yaml"
    other.write_text(TINY.read_text().replace("num_activities: 8", "num_activities: 5"))
    r = _in_process("export.cli.train", ["--config", str(other), "--out", str(tmp_path / "o")], capfd)
    assert r.returncode == 2 and "num_activities" in r.stderr and "Traceback" not in r.stderr
    for extra, needle in ((["--heads-steps", "0"], "--heads-steps"), (["--backbone-from", str(TINY)], "--backbone-from"),
                          (["--device", "cuda"] if not torch.cuda.is_available() else ["--heads-steps", "-1"], "-")):
        r = _in_process("export.cli.train", ["--config", str(TINY), "--out", str(tmp_path / "s"),
                                             "--sampler-from", str(REPO / "checkpoints" / "lvm-tiny.safetensors"),
                                             *extra], capfd)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
    for bad in (["--reader-steps", "0"], ["--reader-videos", "0"]):
        r = _in_process("export.cli.train", ["--config", str(TINY), "--out", str(tmp_path / "r"), *bad], capfd)
        assert r.returncode == 2 and bad[0] in r.stderr and "Traceback" not in r.stderr, r.stderr
    ckpt = str(REPO / "checkpoints" / "lvm-tiny.safetensors")
    for extra, needle in (([], "--init-from CHECKPOINT"), (["--init-from", ckpt, "--data", str(tmp_path)], "drop --data")):
        r = _in_process("export.cli.train", ["--config", str(TINY), "--out", str(tmp_path / "e"), "--events-only", *extra],
                        capfd)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "e").exists()
    pk = tmp_path / "model.pt"
    torch.save({"a": torch.zeros(1)}, pk)
    r = _in_process("export.cli.eval", ["--checkpoint", str(pk), "--json", str(tmp_path / "x.json")], capfd)
    assert r.returncode == 2 and "pickle" in r.stderr and "Traceback" not in r.stderr
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    r = _in_process("export.cli.eval", ["--checkpoint", str(trunc), "--json", str(tmp_path / "x.json")], capfd)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    r = _in_process("export.cli.eval", ["--json", str(tmp_path / "x.json"), "--video-s", "5"], capfd)
    assert r.returncode == 2 and "--video-s" in r.stderr
    torch.set_num_threads(threads)


def test_help_imports_no_torch():
    """lvm-train --help and its argument errors need no torch: the stages' defaults live in light
    modules (reader_defaults, event_defaults), so the command answers at once."""
    code = ("import sys; from export.cli import train; train.build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'timm', 'export.train.event_stage') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr


def test_compact_memory_is_exact():
    """Training drops memory tokens the heads cannot see; answers must not change."""
    from edge_runtime.config import resolve_model_config
    from export.model.lvmnet import LVMNet
    from export.onnx.graphs import HEADS, example_inputs
    from export.train.joint_stage import compact_memory

    torch.manual_seed(0)
    net = LVMNet(resolve_model_config("lvm-tiny")).eval()
    args = list(example_inputs(net, HEADS, queries=3, window=9))
    q = 3
    args[9] = torch.tensor([[100.0, 250.0], [0.0, 600.0], [400.0, 420.0]])
    mem = [a.expand(q, *a.shape[1:]) for a in args[:4]]
    with torch.no_grad():
        full = net.heads(*mem, *args[4:])
        small = compact_memory(mem, args[9], net.heads.window_tol)
        assert small[0].shape[1] < mem[0].shape[1]
        cut = net.heads(*small, *args[4:])
    for a, b in zip(full, cut):
        assert torch.allclose(a, b, atol=1e-4), float((a - b).abs().max())


def test_token_cache_reuses_tokens_and_heals(tmp_path, monkeypatch):
    import export.dataset.video_data as data_mod
    from edge_runtime.config import resolve_model_config
    from export.dataset.video_data import backbone_digest, encode_video, render_video
    from export.model.lvmnet import LVMNet

    torch.manual_seed(0)
    net = LVMNet(resolve_model_config("lvm-tiny")).eval()
    sha = backbone_digest(net.backbone)
    first = encode_video(net.backbone, render_video(5, 40.0, 112, 1.0), cache=tmp_path, backbone_sha=sha)
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1 and first.crop_tokens
    real = data_mod.frame_encoder
    monkeypatch.setattr(data_mod, "frame_encoder", lambda *a, **k: pytest.fail("cache hit expected"))
    again = encode_video(net.backbone, render_video(5, 40.0, 112, 1.0), cache=tmp_path, backbone_sha=sha)
    assert torch.equal(again.tokens, first.tokens)
    assert again.crop_tokens.keys() == first.crop_tokens.keys()
    assert all(torch.equal(again.crop_tokens[k], first.crop_tokens[k]) for k in first.crop_tokens)
    monkeypatch.setattr(data_mod, "frame_encoder", real)
    # a damaged file is recomputed and rewritten, not trusted
    files[0].write_bytes(b"garbage")
    healed = encode_video(net.backbone, render_video(5, 40.0, 112, 1.0), cache=tmp_path, backbone_sha=sha)
    assert torch.equal(healed.tokens, first.tokens) and files[0].stat().st_size > 100
    # another video, or other backbone weights, is another entry
    encode_video(net.backbone, render_video(6, 40.0, 112, 1.0), cache=tmp_path, backbone_sha=sha)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    with torch.no_grad():
        next(net.backbone.parameters()).add_(1.0)
    encode_video(net.backbone, render_video(6, 40.0, 112, 1.0), cache=tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 3


def test_prior_init_starts_activity_head_at_class_frequency():
    from types import SimpleNamespace

    from edge_runtime.config import resolve_model_config
    from export.model.lvmnet import LVMNet
    from export.train.joint_stage import init_activity_prior

    net = LVMNet(resolve_model_config("lvm-tiny"))
    q = lambda acts: SimpleNamespace(type="activity", gt_activities=acts)  # noqa: E731
    other = SimpleNamespace(type="time", gt_activities=None)
    videos = [SimpleNamespace(queries=[q([0, 1]), q([0]), other]), SimpleNamespace(queries=[q([0, 2]), q([0])])]
    p = torch.sigmoid(init_activity_prior(net, videos)).detach()
    # 4 activity queries: class 0 in all, 1 and 2 in one each, the rest in none (add-half smoothing)
    assert p[0] == pytest.approx(4.5 / 5, abs=1e-6) and p[1] == pytest.approx(1.5 / 5, abs=1e-6)
    assert p[3] == pytest.approx(0.5 / 5, abs=1e-6)
    assert p.argmax() == 0 and p[1] == p[2]


def test_event_token_targets_mark_the_object_patch_while_the_event_runs():
    import numpy as np

    from export.train.token_targets import event_token_targets

    # instance 5 sits centred at (0.5, 0.5) -> patch 24; instance 6 at x = 0.99, y = 0.1 -> row 0, col 6
    track5 = [[t / 5, 0.4, 0.4, 0.6, 0.6] for t in range(0, 100)]
    track6 = [[t / 5, 0.98, 0.05, 1.0, 0.15] for t in range(50, 60)]  # visible 10 s .. 11.8 s only
    ann = {"boxes": {"5": track5, "6": track6},
           "events": [{"instance_id": 5, "activity_id": 1, "start": 3.0, "end": 5.0},
                      {"instance_id": 6, "activity_id": 2, "start": 9.0, "end": 14.0},
                      {"instance_id": 7, "activity_id": 3, "start": 0.0, "end": 20.0}]}  # never visible
    times = np.arange(16.0)
    tg = event_token_targets(ann, times, grid=7)
    assert tg.shape == (16, 49) and tg.dtype == np.float32
    assert np.flatnonzero(tg.sum(1)).tolist() == [3, 4, 10, 11]  # end is exclusive; only while visible
    assert tg[3, 24] == tg[4, 24] == 1 and tg[3].sum() == 1
    assert tg[10, 6] == tg[11, 6] == 1
    assert event_token_targets({"events": [], "boxes": {}}, times, 7).sum() == 0


def test_token_loss_and_memory_target_lookup():
    from export.train.losses import token_loss
    from export.train.joint_stage import _token_target

    tgt = torch.zeros(10, 4)
    tgt[2, 1] = 1.0   # frame 2 (t = 2 s), patch 1
    tgt[7, 3] = 1.0   # frame 7: in the clip below
    mem = (torch.zeros(1, 3, 8), torch.tensor([[2.0, 2.0, 0.0]]), torch.tensor([[1, 0, 1]]),
           torch.tensor([[1.0, 1.0, 0.0]]))
    target, weight = _token_target(tgt, mem, slice(6, 8), fps=1.0)
    assert target.tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]  # memory (3) then clip frames 6, 7 (2 x 4)
    assert weight.tolist() == [1, 1, 0] + [1] * 8
    good = torch.where(target > 0, 5.0, -5.0)
    bad = -good
    bad[2] = 1e9  # an empty slot's score never counts
    assert token_loss(good[None], target[None], weight[None]) < 0.02
    assert token_loss(bad[None], target[None], weight[None]) > 5
    assert torch.isfinite(token_loss(torch.full((1, 11), -1e9), target[None], weight[None]))


def test_stage_estimates_and_measured_eta():
    from export.train.eta import RATES_2_CORES, StepETA, estimate, minutes, rates_for

    tiny = RATES_2_CORES["lvm-tiny"]
    # per-video rates scale with the video's length, per-step ones do not
    assert estimate("reader_per_video", 4, video_s=900.0) == pytest.approx(2 * tiny["reader_per_video"])
    assert estimate("stage1_per_step", 672) == pytest.approx(1291.0)
    assert minutes(2284.0) == "38 min" and minutes(42.0) == "42 s" and minutes(61200.0) == "17.0 h"
    # a config borrows the rates of a measured one only with the same backbone and frame size
    assert rates_for("lvm-tiny-s5", ("resnet10t", 112)) == ("lvm-tiny", tiny)
    assert rates_for("lvm-paper", ("swinv2_cr_small_ns_224", 224)) is None
    said = []
    eta = StepETA("stage", 20, said.append, after=5)
    for _ in range(20):
        eta.step()
    assert len(said) == 1 and said[0].startswith("stage: ") and "remaining 14 steps" in said[0]
    quiet = StepETA("stage", 3, said.append, after=5)  # too short a stage to be worth one
    for _ in range(3):
        quiet.step()
    assert len(said) == 1


def test_stage_eta_prices_only_timed_steps(monkeypatch):
    """Stage 1's query-free steps (a tenth of a learning step's cost) do not set the rate."""
    import types

    import export.train.eta as eta_mod

    clock = [0.0]
    monkeypatch.setattr(eta_mod, "time", types.SimpleNamespace(time=lambda: clock[0]))
    said = []
    eta = eta_mod.StepETA("stage 1", 100, said.append, after=3)
    eta.step()  # starts the clock
    for cost, timed in [(3, False)] * 5 + [(30, True)] * 3:
        clock[0] += cost
        eta.step(timed=timed)
    assert said == ["stage 1: 30.00 s a step, ~46 min for the remaining 91 steps"]


def test_calibration_split_holds_out_at_most_a_quarter():
    from export.train.reader_stage import calibration_split

    assert [calibration_split(n, 2) for n in (1, 2, 3, 4, 7, 8, 40)] == [0, 0, 0, 1, 1, 2, 2]
    assert calibration_split(40, 0) == 0


def test_init_reader_keeps_weights_and_refreshes_only_the_activity_outputs(tmp_path):
    from edge_runtime.config import resolve_model_config
    from export.model.reader import load_reader
    from export.train.reader_stage import init_reader

    cfg = resolve_model_config("lvm-tiny")
    shipped, shipped_answer, _ = load_reader(SHIPPED_READER, cfg)
    reader, _, fresh = init_reader(SHIPPED_READER, cfg)
    assert fresh == []
    for k, v in shipped.state_dict().items():
        assert torch.equal(v, reader.state_dict()[k]), k
    five = cfg.model_copy(update={"heads": cfg.heads.model_copy(update={"num_activities": 5})})
    reader5, answer5, fresh5 = init_reader(SHIPPED_READER, five)
    assert fresh5 == ["reader.act.bias", "reader.act.weight"] and reader5.act.weight.shape[0] == 5
    assert torch.equal(reader5.ident[1].weight, shipped.ident[1].weight)
    assert torch.equal(answer5.id_scale, shipped_answer.id_scale)
    for bad, needle in ((b"garbage", "not a readable"), (SHIPPED.read_bytes(), "not a reader file")):
        f = tmp_path / "bad.safetensors"
        f.write_bytes(bad)
        with pytest.raises(ValueError, match=needle) as err:
            init_reader(f, cfg)
        assert "\n" not in str(err.value)
    wide = cfg.model_copy(update={"backbone": cfg.backbone.model_copy(update={"dim": cfg.backbone.dim * 2})})
    with pytest.raises(ValueError, match="another architecture"):
        init_reader(SHIPPED_READER, wide)


def test_train_data_refuses_a_broken_reader_beside_init_from(tmp_path, capfd):
    ck = tmp_path / "mine.safetensors"
    shutil.copyfile(SHIPPED, ck)
    (tmp_path / "mine-reader.safetensors").write_bytes(b"garbage")
    threads = torch.get_num_threads()
    r = _in_process("export.cli.train", ["--config", str(TINY), "--out", str(tmp_path / "o"), "--init-from", str(ck),
                                         "--no-progress"], capfd)
    torch.set_num_threads(threads)
    assert r.returncode == 2 and "mine-reader.safetensors" in r.stderr and "--no-reader" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = _in_process("export.cli.train", ["--config", str(TINY), "--out", str(tmp_path / "o"), "--data",
                                         str(tmp_path), "--reader-videos", "3"], capfd)
    assert r.returncode == 2 and "--reader-videos" in r.stderr and "Traceback" not in r.stderr


def test_the_plan_gives_no_times_for_a_model_never_measured():
    from edge_runtime.config import resolve_model_config
    from export.cli.train import build_parser
    from export.cli.train_plan import plan as _plan
    from export.train.reader_defaults import READER_STEPS, READER_VIDEOS

    def plan(config):
        args = build_parser().parse_args(["--config", config, "--out", "x"])
        args.reader_init, args.reader_steps, args.reader_videos = None, READER_STEPS, READER_VIDEOS  # as _train sets them
        args.reader_calib_videos = 16
        return _plan(args, resolve_model_config(config), 8, 1800.0, 0, 1, None)

    tiny = plan("lvm-tiny")
    assert tiny[0].startswith("lvm-train: plan (lvm-tiny, rates measured on 2 CPU cores)") and tiny[-1].endswith(" in all")
    edge = plan("lvm-edge")  # measured through the first steps of each stage: hours, not minutes
    assert edge[0].startswith("lvm-train: plan (lvm-edge, rates measured on 2 CPU cores)") and edge[-1].endswith(" h in all")
    paper = plan("lvm-paper")
    assert not any("~" in line for line in paper), paper
    assert "no rates measured for lvm-paper" in paper[-1] and "stage 1 (sampler and heads)" in paper[1]


@pytest.mark.parametrize("video_s", [64.0, 79.5, 80.0])
def test_the_plan_counts_the_stage_1_steps_the_loop_runs(video_s):
    # a video of 79.5 s streams 80 frames (t = 0..79): the plan said 4 steps of 16 frames and stage 1 ran 5
    from edge_runtime.config import resolve_model_config
    from export.cli.train import build_parser
    from export.cli.train_plan import plan
    from export.dataset.video_data import render_video
    from export.train.joint_stage import VideoBatchSampler

    cfg = resolve_model_config("lvm-tiny")
    args = build_parser().parse_args(["--config", "lvm-tiny", "--out", "x", "--epochs", "2", "--no-reader"])
    lines = plan(args, cfg, 3, video_s, 0, 1, None)
    planned = int(next(line for line in lines if "stage 1" in line).split("stage 1 (sampler and heads): ")[1].split()[0])
    # what train_lvm runs: epochs x groups of videos x the clips of the shortest video's frames
    times = render_video(0, video_s, 16, cfg.stream.fps).times
    groups = len(VideoBatchSampler(3, cfg.train.batch_size).epoch_groups(0))
    assert planned == 2 * groups * (len(times) // cfg.stream.clip_frames)


def test_timeline_calibration_refuses_no_calibration_videos(tmp_path):
    r = _run([sys.executable, "-m", "export.train.timeline_calibration", "--reader", str(tmp_path / "r.safetensors"),
              "--calib-videos", "0"])
    assert r.returncode == 2 and "--calib-videos must be at least 1, got 0" in r.stderr
    assert "Traceback" not in r.stderr


def test_frame_encoder_gives_the_backbone_tokens(monkeypatch, capsys):
    """ONNX Runtime's tokens of the frozen backbone are PyTorch's up to float rounding, and a backbone
    that cannot be exported is run by PyTorch."""
    from edge_runtime.config import resolve_model_config
    from export.dataset.frame_encoder import FrameEncoder, frame_encoder
    from export.dataset.video_data import backbone_digest, render_video
    from export.model.lvmnet import LVMNet

    torch.manual_seed(0)
    bb = LVMNet(resolve_model_config("lvm-tiny")).backbone.eval()
    frames = render_video(5, 70.0, 112, 1.0).frames  # 70 frames: two calls of the encoder
    enc = frame_encoder(bb, backbone_digest(bb))
    assert enc.session is not None and frame_encoder(bb, backbone_digest(bb)) is enc
    fast, ref = enc(frames, torch.float32), FrameEncoder(bb)(frames, torch.float32)
    assert fast.shape == ref.shape == (70, 49, 256)
    assert (fast - ref).abs().max() <= 1e-3 * max(1.0, float(ref.abs().max()))
    assert enc(frames).dtype == torch.float16
    # a backbone the exporter fails on is run by PyTorch, after one line that says so
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no such op")))
    slow = frame_encoder(bb, "other weights")
    assert slow.session is None and torch.equal(slow(frames, torch.float32), ref)
    assert "runs in PyTorch here (its ONNX export failed: no such op)" in capsys.readouterr().err


def test_default_threads_honour_omp_num_threads_and_share_the_cores(monkeypatch):
    from export import cpu_threads

    monkeypatch.setattr(cpu_threads, "cores", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert (cpu_threads.default_threads(), cpu_threads.default_threads(2), cpu_threads.default_threads(16)) == (8, 4, 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads.default_threads(2) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "zero")  # not a count: the cores again
    assert cpu_threads.default_threads() == 8


def test_resume_keeps_a_stage_only_when_trained_on_this_checkpoint_as_asked(tmp_path):
    from edge_runtime.file_hash import sha256_file
    from export.cli.train_resume import finished_stage

    ck, stage = tmp_path / "lvm-tiny.safetensors", tmp_path / "lvm-tiny-reader.safetensors"
    ck.write_bytes(b"weights")
    stage.write_bytes(b"reader")
    meta = {"checkpoint_sha256": sha256_file(ck), "train": {"steps": 3, "seed": 0, "init": None}}

    def read(path):
        if path.read_bytes() != b"reader":
            raise ValueError(f"{path}: not a reader file")
        return meta

    wanted = {"steps": 3, "seed": 0, "init": None}
    assert finished_stage(stage, ck, read, wanted) is meta
    assert finished_stage(stage, ck, read, {**wanted, "steps": 4}) is None      # other settings
    assert finished_stage(tmp_path / "none.safetensors", ck, read, wanted) is None  # never written
    ck.write_bytes(b"other weights")
    assert finished_stage(stage, ck, read, wanted) is None                       # another checkpoint
    meta["checkpoint_sha256"] = sha256_file(ck)
    stage.write_bytes(b"damaged")
    assert finished_stage(stage, ck, read, wanted) is None                       # unreadable
