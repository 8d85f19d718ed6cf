"""Every shell example of the README runs here, in README order, so that a wrong example fails CI.

Each example line has one entry in EXAMPLES, keyed by the line exactly as the README writes it:
- ``Run``: run it with bash in a scratch folder that looks like the checkout. ``subs`` swap what this
  machine cannot have (a camera, another machine, root, your own footage) for what it has (``demo://``,
  local folders, the generator's footage), each swap checked to occur in the line; ``add`` appends
  flags that shorten long jobs or name the test's API port. The exit status must be 0.
- ``Serve``: a line ending in ``&``: started in the background (a real ``lvm-edge run --api``); the lines
  after it talk to it. ``Stop`` (``kill %1``) stops it, and its exit status must be 0.
- ``Check``: a line that cannot run here (a package index, systemd, the whole test suite); what the
  line relies on is checked instead, and the reason is written down.
A README line without an entry fails ``test_every_example_has_an_entry``; an entry the README no
longer has fails it too.
"""
from __future__ import annotations

import getpass
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
SHELL_FENCES = ("bash", "sh", "shell", "console")
HANG_GUARD_S = 900  # only against a hung command: a job here takes seconds


# -- the table ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    subs: tuple[tuple[str, str], ...] = ()
    add: str = ""
    expect: str = ""  # printed by the command (stdout or stderr)
    check: Callable | None = None
    propagate_env: bool = False  # an `export` line: its variables reach the lines after it


@dataclass(frozen=True)
class Serve:
    subs: tuple[tuple[str, str], ...] = ()
    add: str = ""
    until: str = "api"  # "api": the API answers; "ended": also the stream has ended (all of it in memory)


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Check:
    check: Callable
    why: str


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def runtime_extra_has_no_torch(ctx) -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    assert "runtime" in extras and "export" in extras and "dev" in extras
    assert not [d for d in extras["runtime"] if re.match(r"(torch|torchvision|timm)\b", d)], extras["runtime"]


def ci_runs_the_test_command(ctx) -> None:
    lines = [ln.strip() for ln in (REPO / ".ci" / "run").read_text().splitlines()]
    assert ctx["line"] in lines, ".ci/run must run the README's test command exactly"


def cpu_wheels_match_the_pins(ctx) -> None:
    export = _pyproject()["project"]["optional-dependencies"]["export"]
    for pin in re.findall(r"\b(torch(?:vision)?==[\w.]+)", ctx["line"]):
        assert pin in export, f"{pin} is not the export extra's pin ({export})"


def kiosk_copy_is_complete(ctx) -> None:
    from edge_runtime.backends.bundle import load_bundle

    kiosk = Path(ctx["kiosk"])
    for rel in ("pyproject.toml", "README.md", "edge_runtime/cli/__init__.py", "configs/runtime/kiosk.yaml",
                "tools/lvm-edge.service"):
        assert (kiosk / rel).is_file(), f"the copy lacks {rel}"
    load_bundle(kiosk / "engines" / "lvm-tiny-fp32", verify=True)
    load_bundle(kiosk / "engines" / "mine", verify=True)


def runtime_install_has_what_it_needs(ctx) -> None:
    runtime_extra_has_no_torch(ctx)
    assert (Path(ctx["kiosk"]) / "pyproject.toml").is_file()


def token_file_is_private(ctx) -> None:
    env = Path(ctx["etc"]) / "env"
    assert re.fullmatch(r"LVM_EDGE_TOKEN=[0-9a-f]{32}\n", env.read_text())
    assert env.stat().st_mode & 0o777 == 0o600


def token_is_exported(ctx) -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", ctx["env"].get("LVM_EDGE_TOKEN", ""))


def crop_is_the_named_product(ctx) -> None:
    """The picture registered under a name shows that product, by the list `lvm-edge demo --save-crops` printed."""
    name, picture = shlex.split(ctx["line"])[3:5]
    listed = re.findall(r"^(\S+)  (\w+)  visible", "\n".join(ctx["outputs"]), re.M)
    assert (picture, name.replace(" ", "_")) in listed, f"{picture} is not the {name}: --save-crops listed {listed}"


def reader_fine_tuned_on_the_footage(ctx) -> None:
    """lvm-train --data --init-from: the reader stage runs on the folder's train split, starting from the
    reader beside the checkpoint, calibrated on its training videos (two are too few to hold one out)."""
    from export.model.checkpoint import load_checkpoint
    from export.model.reader import load_reader

    said, work = ctx["outputs"][-1], Path(ctx["work"])
    init = "checkpoints/lvm-tiny-reader.safetensors"
    assert ("reader stage: 2 train-split videos (too few to hold one out: calibrated on them), 2 steps from "
            f"{init}") in said and "calibrating on the training videos" in said, said[-3000:]
    net, _ = load_checkpoint(work / "runs" / "mine" / "lvm-tiny.safetensors")
    reader, _, rmeta = load_reader(work / "runs" / "mine" / "lvm-tiny-reader.safetensors", net.cfg)
    train = sorted(f.stem for f in (work / "footage" / "annotations").glob("*.json")
                   if json.loads(f.read_text()).get("split", "train") == "train")
    assert len(train) == 2 and rmeta["data"]["train"] == train and rmeta["data"]["calibration"] == []
    assert rmeta["data"]["calibrated_on"].startswith("the training videos")
    assert rmeta["train"]["init"] == init and rmeta["train"]["steps"] == 2
    assert rmeta["calibration"]["activity"]["queries"] > 0
    # started from the shipped reader: 2 steps move it a little; fresh weights would be nowhere near
    shipped, _, _ = load_reader(REPO / init, net.cfg)
    drift = max(float((v - shipped.state_dict()[k]).abs().max()) for k, v in reader.state_dict().items())
    assert 0 < drift < 0.05, drift


def broker_serves_the_alerts_config(ctx) -> None:
    """broker.conf (the line before) listens where configs/runtime/alerts.yaml publishes."""
    from edge_runtime.cli.runtime_config import load_runtime_settings

    url = load_runtime_settings(REPO / "configs" / "runtime" / "alerts.yaml").alerts.mqtt.url
    conf = (Path(ctx["work"]) / "broker.conf").read_text().splitlines()
    assert url == "mqtt://127.0.0.1:1883" and "listener 1883 127.0.0.1" in conf, (url, conf)


def alerts_are_evaluated(ctx) -> None:
    st = _get(ctx, "/v1/status")["alerts"]
    assert st["enabled"] and st["rules"] == ["bagged_without_scan"] and st["site"] == "store-12", st
    assert st["broker"]["url"] == "mqtt://127.0.0.1:1883" and st["evaluations"] >= 1, st


def _unit() -> dict[str, str]:
    text = (REPO / "tools" / "lvm-edge.service").read_text().replace("\\\n", " ")
    return dict(ln.split("=", 1) for ln in text.splitlines() if "=" in ln and not ln.startswith("#"))


def unit_user_matches(ctx) -> None:
    unit = _unit()
    assert (unit["User"], unit["Group"]) == ("lvm-edge", "video")


def unit_starts_what_the_steps_installed(ctx) -> None:
    """The unit's command parses, and names the venv, config, bundle, state and token of steps 2-5."""
    from edge_runtime.backends.bundle import load_bundle
    from edge_runtime.cli import build_parser
    from edge_runtime.cli.runtime_config import load_runtime_settings

    unit = _unit()
    assert unit["EnvironmentFile"].lstrip("-") == "/etc/lvm-edge/env"
    assert unit["StateDirectory"] == "lvm-edge"
    argv = shlex.split(unit["ExecStart"].replace("/opt/lvm-edge", ctx["kiosk"]))
    assert argv[0] == f"{ctx['kiosk']}/.venv/bin/lvm-edge"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "run" and args.state_dir == "${STATE_DIRECTORY}"
    settings = load_runtime_settings(Path(args.config))
    assert settings.state.dir == "/var/lib/lvm-edge"  # = StateDirectory=lvm-edge: the catalog of step 5
    # the bundle is the config's (a model of one's own is named there), relative to WorkingDirectory
    assert args.bundle is None and unit["WorkingDirectory"] == "/opt/lvm-edge"
    load_bundle(Path(ctx["kiosk"]) / settings.bundle, verify=True)


def doctor_passes_the_kiosk_config(ctx) -> None:
    import yaml

    cfg = yaml.safe_load((Path(ctx["kiosk"]) / "configs" / "runtime" / "kiosk.yaml").read_text())
    assert cfg["source"]["uri"] == "0"  # the camera the doctor would open and read on the kiosk
    cfg["source"]["uri"], cfg["state"]["dir"] = "demo://checkout?seed=3", f"{ctx['work']}/var/lib/lvm-edge"
    demo = Path(ctx["work"]) / "kiosk-demo.yaml"
    demo.write_text(yaml.safe_dump(cfg))
    res = subprocess.run(["lvm-edge", "doctor", "--config", str(demo)], cwd=ctx["kiosk"], env=ctx["env"],
                         capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert res.returncode == 0 and "0 problem(s)" in res.stdout, res.stdout + res.stderr
    assert "[ok ] source" in res.stdout and "[ok ] bundle lvm-tiny-fp32" in res.stdout, res.stdout


def unit_is_named_lvm_edge(ctx) -> None:
    assert (REPO / "tools" / "lvm-edge.service").is_file() and "ExecStart" in _unit()


SUDO = ("sudo ", "")
ETC = ("/etc/lvm-edge", "{etc}")
KIOSK_VENV = (".venv/bin/lvm-edge", "lvm-edge")  # the kiosk's venv is this one: installing is a Check
API = " --api {api}"

EXAMPLES: dict[str, Run | Serve | Stop | Check] = {
    # quick start
    'pip install ".[runtime]" && lvm-edge demo':
        Run(subs=(('pip install ".[runtime]" && ', ""),), add=" --duration 30", expect="queries answered",
            check=runtime_extra_has_no_torch),
    'pip install -e ".[export,dev]" && python -m pytest -q':
        Check(ci_runs_the_test_command, "the whole suite, which holds this test: .ci/run runs this line"),
    "pip install torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu":
        Check(cpu_wheels_match_the_pins, "PyTorch's index is not reachable from CI; the pins must be the export extra's"),
    # deploy: 1. export (the shipped checkpoint stands in for runs/mine, trained further down)
    "lvm-export --precision fp32 --checkpoint runs/mine/lvm-tiny.safetensors --data footage/ --out engines/mine":
        Run(subs=(("runs/mine/lvm-tiny.safetensors", "checkpoints/lvm-tiny.safetensors"),), add=" --bench-runs 2 --no-progress"),
    # 2. copy: the kiosk is a local folder
    "ssh kiosk 'sudo mkdir -p /opt/lvm-edge && sudo chown $USER /opt/lvm-edge'":
        Run(subs=(("ssh kiosk '", ""), ("'", ""), SUDO, ("/opt/lvm-edge", "{kiosk}"))),
    "scp -r pyproject.toml README.md edge_runtime configs engines tools kiosk:/opt/lvm-edge/":
        Run(subs=(("scp -r", "cp -rL"), ("kiosk:/opt/lvm-edge/", "{kiosk}/")), check=kiosk_copy_is_complete),
    # 3. install
    'cd /opt/lvm-edge && python3 -m venv .venv && .venv/bin/pip install ".[runtime]"':
        Check(runtime_install_has_what_it_needs, "needs a package index; the copied tree and the extra are checked"),
    # 4. token
    "sudo mkdir -p /etc/lvm-edge": Run(subs=(SUDO, ETC)),
    """echo "LVM_EDGE_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')" | sudo tee /etc/lvm-edge/env >/dev/null""":
        Run(subs=(SUDO, ETC)),
    "sudo chmod 600 /etc/lvm-edge/env": Run(subs=(SUDO, ETC), check=token_file_is_private),
    # 5. catalog: written into the state dir with no runtime, then through a runtime started by hand on the demo
    # instead of the camera (it loads what the first line wrote); the token is required from here on
    'sudo .venv/bin/lvm-edge catalog add "oat milk 1l" photos/oat-milk-front.jpg photos/oat-milk-side.jpg --state-dir /var/lib/lvm-edge':
        Run(subs=(SUDO, KIOSK_VENV, ("/var/lib/lvm-edge", "{work}/var/lib/lvm-edge")), expect="added 'oat milk 1l' (2 pictures)"),
    "export $(sudo cat /etc/lvm-edge/env)": Run(subs=(SUDO, ETC), propagate_env=True, check=token_is_exported),
    "sudo -E .venv/bin/lvm-edge run --config configs/runtime/kiosk.yaml &":
        Serve(subs=(("sudo -E ", ""), KIOSK_VENV),
              add=" --source 'demo://checkout?seed=3' --state-dir {work}/var/lib/lvm-edge" + API),
    '.venv/bin/lvm-edge catalog add "oat milk 1l" photos/oat-milk-front.jpg photos/oat-milk-side.jpg':
        Run(subs=(KIOSK_VENV,), add=API),
    ".venv/bin/lvm-edge catalog list": Run(subs=(KIOSK_VENV,), add=API, expect="oat milk 1l"),
    "kill %1": Stop(),
    # 6. systemd
    "sudo useradd --system --no-create-home --groups video lvm-edge":
        Check(unit_user_matches, "needs root; the unit must run as this user"),
    "sudo cp tools/lvm-edge.service /etc/systemd/system/ && sudo systemctl daemon-reload && sudo systemctl enable --now lvm-edge":
        Check(unit_starts_what_the_steps_installed, "needs root and systemd; the unit's command is checked against steps 2-5"),
    "journalctl -u lvm-edge -f": Check(unit_is_named_lvm_edge, "follows a systemd journal"),
    # 7. doctor
    ".venv/bin/lvm-edge doctor --config configs/runtime/kiosk.yaml":
        Check(doctor_passes_the_kiosk_config, "the kiosk's camera is not here: its config with the demo source"),
    # own footage: footage/ is two short generator videos rendered as files (train) and one held-out (test)
    "lvm-data import-cvat task.xml --video cam1.mp4 --out footage/":
        Run(subs=(("task.xml", "{repo}/tests/data/cvat/sample_video.xml"), ("cam1.mp4", "{fixtures}/sample_video.avi"),
                  ("--out footage/", "--out cvat-footage/"))),
    "lvm-data check footage/": Run(),
    "lvm-data stats footage/": Run(),
    "lvm-train --config lvm-tiny --data footage/ --init-from checkpoints/lvm-tiny.safetensors --heads-steps 0 --epochs 1 --out runs/mine":
        Run(add=" --max-steps 2 --reader-steps 2 --no-progress", check=reader_fine_tuned_on_the_footage),
    "lvm-eval --data footage/ --split test --checkpoint runs/mine/lvm-tiny.safetensors --json runs/mine/eval.json":
        Run(add=" --queries 20 --no-progress"),
    # asking
    "lvm-edge run --source 'demo://checkout?seed=3' --duration 600 --keep-serving --state-dir state/ &":
        Serve(add=API, until="ended"),
    "lvm-edge demo --seed 3 --save-crops crops/": Run(expect="object-3.png  milk_carton"),
    "lvm-edge query status": Run(add=API, expect="coverage"),
    'lvm-edge catalog add "milk carton" crops/object-3.png': Run(add=API, check=crop_is_the_named_product),
    'lvm-edge query activity --product "milk carton" --start 0 --end 300': Run(add=API),
    "lvm-edge query time --image crops/object-3.png --activity scan --start 0 --end 300": Run(add=API),
    "lvm-edge query object --activity bag --start 0 --end 600": Run(add=API),
    'lvm-edge ask "when was the milk carton scanned in the first 5 minutes?"': Run(add=API, expect="milk carton"),
    # the first 5 minutes, where the milk carton was handled: with a catalog, what happened asks about its products only
    "lvm-edge happened --start 0 --end 300": Run(add=API, expect="milk carton "),
    'lvm-edge ask "what happened in the first 5 minutes?"': Run(add=API, expect="milk carton "),
    # API and metrics
    'curl -fsS -H "Authorization: Bearer $LVM_EDGE_TOKEN" http://127.0.0.1:8321/v1/status':
        Run(subs=(("127.0.0.1:8321", "{api}"),), expect='"coverage"'),
    """curl -fsS -H "Authorization: Bearer $LVM_EDGE_TOKEN" -H 'content-type: application/json' -d '{"product": "milk carton", "start": 0, "end": 300}' http://127.0.0.1:8321/v1/query/activity""":
        Run(subs=(("127.0.0.1:8321", "{api}"),), expect='"ranked"'),
    'curl -fsS -H "Authorization: Bearer $LVM_EDGE_TOKEN" http://127.0.0.1:8321/metrics':
        Run(subs=(("127.0.0.1:8321", "{api}"),), expect="lvm_frames_processed"),
    # alerts: the asking runtime is stopped by the section's "kill %1"; no broker here, so alerts wait
    "printf 'listener 1883 127.0.0.1\\nallow_anonymous true\\n' > broker.conf": Run(),
    "mosquitto -c broker.conf &":
        Check(broker_serves_the_alerts_config, "a system broker; tests/test_alerts_delivery.py runs mosquitto itself"),
    "lvm-edge run --config configs/runtime/alerts.yaml --source 'lane1=demo://checkout?seed=3&shrink=0.5,0.5,0' --duration 600 --keep-serving --state-dir state-alerts/ &":
        Serve(add=" --duration 120" + API, until="ended"),
    "lvm-edge alerts": Run(add=API, check=alerts_are_evaluated),
}


# -- reading the README ------------------------------------------------------------------------
def readme_examples(text: str) -> list[str]:
    """Every command line of the README's shell blocks (continuations joined, comments dropped)."""
    out, lang, pending = [], None, ""
    for n, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*```(\S*)", line)
        if fence:
            if lang is None:
                lang = fence.group(1)
                assert lang, f"README.md:{n}: a code block without a language (shell blocks are tested: say bash)"
            else:
                lang = None
            continue
        if lang not in SHELL_FENCES:
            continue
        line = pending + line.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        if line and not line.startswith("#"):
            out.append(line)
    return out


def test_every_example_has_an_entry():
    examples = readme_examples(README.read_text())
    assert examples, "no shell examples found in README.md"
    missing = [e for e in examples if e not in EXAMPLES]
    stale = [k for k in EXAMPLES if k not in examples]
    assert not missing, "README examples without an entry in tests/test_readme.py EXAMPLES:\n" + "\n".join(missing)
    assert not stale, "EXAMPLES entries the README no longer has:\n" + "\n".join(stale)


def test_every_substitution_occurs_in_its_example():
    for line, entry in EXAMPLES.items():
        for old, _ in getattr(entry, "subs", ()):
            assert old in line, f"{line!r}: the substitution of {old!r} does not occur in it"


# -- running them ------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fill(text: str, ctx: dict) -> str:
    for k, v in ctx.items():
        if isinstance(v, str):
            text = text.replace("{" + k + "}", v)
    return text


def _command(line: str, entry, ctx: dict) -> str:
    cmd = line
    for old, new in entry.subs:
        cmd = cmd.replace(old, _fill(new, ctx))
    cmd = cmd[:-1].rstrip() if isinstance(entry, Serve) and cmd.endswith("&") else cmd
    return cmd + _fill(entry.add, ctx)


def _get(ctx: dict, path: str):
    req = urllib.request.Request(f"http://{ctx['api']}{path}")
    if ctx["env"].get("LVM_EDGE_TOKEN"):
        req.add_header("Authorization", f"Bearer {ctx['env']['LVM_EDGE_TOKEN']}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def _serve(cmd: str, entry: Serve, ctx: dict) -> subprocess.Popen:
    log = open(Path(ctx["work"]) / f"server-{ctx['port']}-{time.monotonic_ns()}.log", "w+")
    proc = subprocess.Popen(["bash", "-c", "exec " + cmd], cwd=ctx["work"], env=ctx["env"], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    proc.log = log
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{cmd}\nexited {proc.returncode}:\n{_tail(log)}"
        try:
            if entry.until == "api" and _get(ctx, "/healthz"):
                return proc
            if entry.until == "ended" and _get(ctx, "/v1/status").get("state") == "ended":
                return proc
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{cmd}: not {entry.until} after {HANG_GUARD_S} s:\n{_tail(log)}")


def _stop(proc: subprocess.Popen | None) -> int | None:
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def _tail(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-3000:]


def _fixtures(work: Path, fixtures: Path, env: dict) -> None:
    """What the examples take as given: your footage, a CVAT export and its video, photos of a product."""
    import cv2
    import numpy as np

    from edge_runtime.checkout import CheckoutVideo

    fixtures.mkdir()
    video = cv2.VideoWriter(str(fixtures / "sample_video.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    for i in range(20):  # the 20-frame, 160x120, 10 fps video tests/data/cvat/sample_video.xml annotates
        video.write(np.full((120, 160, 3), 10 * i, np.uint8))
    video.release()
    (work / "photos").mkdir()
    crop = CheckoutVideo(seed=3, duration_s=600, size=224).object_crop(3)  # the milk carton of demo seed 3
    for name in ("oat-milk-front.jpg", "oat-milk-side.jpg"):
        assert cv2.imwrite(str(work / "photos" / name), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    for args in (["--seeds", "0-1", "--like", "train"], ["--seeds", "0", "--like", "eval"]):
        subprocess.run(["lvm-data", "render", *args, "--duration", "120", "--out", "footage", "--no-progress"],
                       cwd=work, env=env, check=True, capture_output=True, timeout=HANG_GUARD_S)


@pytest.mark.slow
def test_readme_examples_run(tmp_path):
    pytest.importorskip("torch", reason="the README's training and export examples need the export extra")
    work, kiosk = tmp_path / "work", tmp_path / "kiosk" / "opt" / "lvm-edge"
    work.mkdir()
    for name in ("pyproject.toml", "README.md", "edge_runtime", "configs", "checkpoints", "tools"):
        (work / name).symlink_to(REPO / name)
    (work / "engines").mkdir()
    (work / "engines" / "lvm-tiny-fp32").symlink_to(REPO / "engines" / "lvm-tiny-fp32")
    env = {k: v for k, v in os.environ.items() if k != "LVM_EDGE_TOKEN"}
    # LVM_EDGE_CACHE stays the tests' own (conftest): backbone tokens, never the user's home
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", HF_HUB_OFFLINE="1",
               USER=env.get("USER") or getpass.getuser())
    port = _free_port()
    ctx = {"repo": str(REPO), "work": str(work), "kiosk": str(kiosk), "etc": str(tmp_path / "etc" / "lvm-edge"),
           "fixtures": str(tmp_path / "fixtures"), "port": str(port), "api": f"127.0.0.1:{port}", "env": env,
           "outputs": []}
    _fixtures(work, Path(ctx["fixtures"]), env)
    server = None
    try:
        for line in readme_examples(README.read_text()):
            entry = EXAMPLES[line]
            ctx["line"] = line
            if isinstance(entry, Check):
                entry.check(ctx)
                continue
            if isinstance(entry, Stop):
                assert server is not None, f"{line}: no server started before it"
                rc = _stop(server)
                assert rc == 0, f"the server exited {rc} on SIGTERM:\n{_tail(server.log)}"
                server = None
                continue
            cmd = _command(line, entry, ctx)
            if isinstance(entry, Serve):
                assert server is None, f"{line}: a server is already running"
                server = _serve(cmd, entry, ctx)
                continue
            script = cmd + ("\nenv -0 > " + shlex.quote(str(tmp_path / "env0")) if entry.propagate_env else "")
            t0 = time.monotonic()
            res = subprocess.run(["bash", "-c", "set -e -o pipefail\n" + script], cwd=work, env=ctx["env"],
                                 capture_output=True, text=True, timeout=HANG_GUARD_S)
            said = res.stdout + res.stderr
            ctx["outputs"].append(said)
            with open(tmp_path / "transcript.txt", "a") as t:  # what each example printed, for a failure's reader
                t.write(f"$ {cmd}\n{said}[exit {res.returncode}, {time.monotonic() - t0:.1f} s]\n\n")
            assert res.returncode == 0, f"README example failed (exit {res.returncode}):\n  {line}\nran as:\n  {cmd}\n{said[-3000:]}"
            assert entry.expect in said, f"{line}: expected {entry.expect!r} in its output:\n{said[-3000:]}"
            if entry.propagate_env:
                pairs = (tmp_path / "env0").read_bytes().split(b"\0")
                ctx["env"] = dict(p.decode().split("=", 1) for p in pairs if b"=" in p)
            if entry.check:
                entry.check(ctx)
    finally:
        _stop(server)
