"""The ``lvm-edge`` command line: one subcommand per job, each bound to the function that runs it."""
from __future__ import annotations

import argparse

from edge_runtime import __version__
from edge_runtime.alerts.record import OUTCOMES
from edge_runtime.cli.common import PROG
from edge_runtime.query.happened import MIN_CONFIDENCE, floors_help
from edge_runtime.query.types import NAMES, QUERY_TYPES

BACKENDS = ("auto", "onnxruntime", "tensorrt")
ANSWERS = ("auto", "reader", "heads")
ANSWERS_HELP = ("which answers: the memory reader (reads the memory once per commit; says 'not seen' and "
                "how confident it is), the query heads, or auto: the reader when the bundle has one (default)")

# how each thing a query type is given is passed on the command line
GIVEN_FLAGS = {"activity": "--activity", "object": "--image or --product", "window": "--start --end"}


def _command(module: str):
    """The function that runs subcommand ``module`` (``edge_runtime.cli.<module>.cmd_<module>``), imported
    when that subcommand runs: `lvm-edge query` does not load what `run` or `demo` need."""
    def run(args):
        from importlib import import_module

        return getattr(import_module(f"edge_runtime.cli.{module}"), f"cmd_{module}")(args)
    return run


def _query_description() -> str:
    rows = []
    for t in QUERY_TYPES:
        rows.append(f"  {t.name:9s} {t.reads.format(activity='an activity', object='an object')}")
        rows.append(" " * 12 + "given " + ", ".join(GIVEN_FLAGS[g] for g in t.given)
                    + (f"; also {', '.join('--' + o for o in t.options)}" if t.options else ""))
    return ("Ask a running `lvm-edge run` (its API, 127.0.0.1:8321 by default) one question about the stream it\n"
            "remembers, and print the answer (a short summary; --json for the API's JSON; `status` prints the\n"
            "runtime's status JSON). Windows are stream seconds (`query status` shows the coverage).\n\n" + "\n".join(rows) + "\n"
            "  status    state, coverage, fps, gaps, errors of the running stream\n\n"
            "--image is a picture of the object, --product a name in the runtime's catalog (lvm-edge catalog\n"
            "list), --activity a name or id (see /v1/labels). A runtime with several streams answers from its\n"
            "default stream unless --stream NAME names another (lvm-edge streams lists them).")


QUERY_EXAMPLES = """\
examples (quote URIs with ? in zsh):
  lvm-edge run --source 'demo://checkout?seed=3' --duration 600 --keep-serving --state-dir state/ &
  lvm-edge demo --seed 3 --save-crops crops/      # object pictures of that demo video (see the list it prints)
  lvm-edge query status
  lvm-edge query activity --image crops/object-5.png --start 0 --end 300
  lvm-edge query object --activity 1 --start 0 --end 300 --fps 1
  lvm-edge query time --image crops/object-5.png --activity 1 --start 0 --end 600 --k 3
  lvm-edge query time --product "oat milk 1l" --activity scan --start 0 --end 600"""

CATALOG_DESCRIPTION = ("The product catalog of a running `lvm-edge run` (kept in its --state-dir), or with "
                       "--state-dir DIR the one kept in DIR, with no runtime running. "
                       "Queries then take --product NAME instead of --image.")
CATALOG_EXAMPLES = """\
examples:
  lvm-edge catalog add "oat milk 1l" front.png side.jpg
  lvm-edge catalog add "oat milk 1l" photos/oat-milk/ --state-dir /var/lib/lvm-edge   # no runtime, no camera
  lvm-edge catalog list
  lvm-edge catalog remove "oat milk 1l\""""

ASK_DESCRIPTION = ("Send a question in plain words to a running `lvm-edge run` (POST /v1/ask): prints the "
                   "structured query it was read as, then the answer. See docs/ask.md.")
ASK_EXAMPLES = """\
examples:
  lvm-edge ask "when was the oat milk bagged in the last 10 minutes?"
  lvm-edge ask "what happened to the eggs since 14:05"
  lvm-edge ask "which item was scanned between 2:05 and 2:20 pm" --json
  lvm-edge ask "what happened in the last 5 minutes\""""

HAPPENED_DESCRIPTION = ("What happened in a window of a running `lvm-edge run` (POST /v1/happened): every "
                        "product's activities the memory has evidence of, one line per event with its "
                        "calibrated confidence. Products are the catalog's, or the bundle's classes when it is empty.")
HAPPENED_EXAMPLES = """\
examples:
  lvm-edge happened                      # the last 5 minutes of the memory
  lvm-edge happened --last 10m --activity scan
  lvm-edge happened --start 0 --end 600 --json"""

STREAMS_DESCRIPTION = ("The streams of a running `lvm-edge run` (GET/POST/DELETE /v1/streams). "
                       "The default stream (marked *) answers queries that name none.")
STREAMS_EXAMPLES = """\
examples:
  lvm-edge streams
  lvm-edge streams add cam2 rtsp://10.0.0.12/stream
  lvm-edge query status --stream cam2
  lvm-edge streams remove cam2"""


ALERTS_DESCRIPTION = (
    "Checkout alerts. Without --broker: the alerts a running `lvm-edge run` raised (GET /v1/alerts), newest\n"
    "first, or `ack ID [--outcome ...]` to acknowledge one with staff's verdict, or `learn` to fit the\n"
    "verifier on those verdicts (each new alert then carries p_right; with alerts.verifier.hold_below set, the\n"
    "unlikely ones are held, not sent). With --broker: every\n"
    "lane's alerts from the store's MQTT broker (topic lvm-edge/<site>/<stream>/alerts), one line each:\n"
    "site/stream, rule, product, interval (stream seconds, and the wall-clock start for live cameras),\n"
    "confidence, id. Copies of an alert (delivery is at least once) are shown once. The broker passes on\n"
    "only alerts raised while this listens, unless --client-id names a persistent session: the broker\n"
    "then keeps them while it is away.")
ALERTS_EXAMPLES = """\
examples:
  lvm-edge alerts
  lvm-edge alerts --status open --stream lane2 --since 3600
  lvm-edge alerts ack 3f9a0c51d2e84b7a9c0e11f2 --outcome confirmed
  lvm-edge alerts learn
  lvm-edge alerts --broker mqtt://127.0.0.1:1883 --follow
  lvm-edge alerts --broker mqtts://broker.store.lan:8883 --ca-file store-ca.pem --site store-12 --seconds 30"""


class Parser(argparse.ArgumentParser):
    """argparse, with a bad argument said in one line (the usage block is what --help is for)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Subcommand(Parser):
    """A subcommand's parser: its options may come before, between or after its positionals
    (``catalog add --api HOST:PORT NAME PICTURE``); plain argparse gives a positional that may be
    empty (nargs ? or *) nothing once an option has come between it and the one before."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside:  # parse_known_intermixed_args parses through this method itself
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def positive(kind, most=None):
    """An argparse type: a number of ``kind`` above 0 (and at most ``most``), else one line naming the value."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        if most is not None and not value <= most:
            raise argparse.ArgumentTypeError(f"must be at most {most}, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


def _types_with(part: str) -> str:
    """The query types given ``part`` or taking it as an option, as help text ("activity / time")."""
    return " / ".join(t.name for t in QUERY_TYPES if part in t.given + t.options)


def _client(sub, name: str, func, *, help: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """A subcommand that asks a running lvm-edge over HTTP: where it listens and its token, like all of them."""
    c = sub.add_parser(name, help=help, description=description, epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--api", default="127.0.0.1:8321", metavar="HOST:PORT")
    c.add_argument("--token", help="API token (default: env LVM_EDGE_TOKEN)")
    c.set_defaults(func=func)
    return c


def _answer_flags(p: argparse.ArgumentParser, *, json_help: str) -> None:
    """Which stream answers, and how the answer is printed (query and ask alike)."""
    p.add_argument("--stream", metavar="NAME", help="the stream to ask (default: the runtime's default stream)")
    p.add_argument("--boxes", action="store_true", help="object answers: list every box, not a summary")
    p.add_argument("--json", action="store_true", help=json_help)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Long-video memory on the device: stream, remember, answer.")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=Subcommand)

    r = sub.add_parser("run", help="stream a source into memory and serve the API")
    src = r.add_mutually_exclusive_group()
    src.add_argument("--source", action="append", metavar="[NAME=]URI",
                     help="source URI: camera index, /dev/videoN, csi://N, rtsp://..., a file, demo://checkout?seed=N; "
                          "repeat it for several streams on one engine set, each NAME=URI (API and CLI address a "
                          "stream by NAME; its snapshots go to <state dir>/streams/NAME/)")
    src.add_argument("--camera", type=int, metavar="N", help="camera index (same as --source N)")
    r.add_argument("--bundle", help="bundle folder (default from --config, else engines/lvm-tiny-fp32)")
    r.add_argument("--api", metavar="HOST:PORT", help="where to serve the API (default 127.0.0.1:8321; 'none' to not serve)")
    r.add_argument("--token", help="API token (or env LVM_EDGE_TOKEN); required off-loopback")
    r.add_argument("--state-dir", help="snapshots go here and are restored from here")
    r.add_argument("--snapshot-every", type=positive(float), metavar="S", help="periodic snapshot interval, wall seconds (default 300: a "
                   "kill loses at most the memory of the last 5 minutes; a stop drains and snapshots)")
    r.add_argument("--duration", type=positive(float), metavar="S",
                   help="stop after S seconds of stream time or when the source ends, whichever comes first (a live "
                        "source is also stopped S wall seconds after it opened: a dead one's stream time stands "
                        "still); then exit, unless --keep-serving")
    r.add_argument("--keep-serving", action=argparse.BooleanOptionalAction, default=None,
                   help="after the stream stops (the source ended or --duration was reached) keep answering "
                        "queries until Ctrl-C / SIGTERM; the default when the API is served and --duration is not given")
    r.add_argument("--reset-state", nargs="*", metavar="STREAM",
                   help="start with an empty memory: the snapshot in --state-dir is renamed aside (kept, never "
                        "deleted); needed to use a state dir with another source than the one it remembers. "
                        "Followed by stream names: only those streams' (default: every stream's)")
    r.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=None,
                   help="pace files / demo at their own speed (--no-realtime: as fast as the model runs, "
                        "whatever the config says)")
    r.add_argument("--backend", choices=BACKENDS, help="inference backend (default auto: TensorRT on a GPU that has it, "
                   "else ONNX Runtime)")
    r.add_argument("--threads", type=positive(int), help="inference threads (default: ONNX Runtime's choice)")
    r.add_argument("--answers", choices=ANSWERS, help=ANSWERS_HELP)
    r.add_argument("--config", help="runtime config YAML (e.g. configs/runtime/kiosk.yaml); flags override it")
    r.set_defaults(func=_command("run"))

    q = _client(sub, "query", _command("query"), help="ask a running lvm-edge over HTTP and print the answer",
                description=_query_description(), epilog=QUERY_EXAMPLES)
    q.add_argument("kind", choices=NAMES + ("status",))
    q.add_argument("--start", type=float, help="window start, stream seconds")
    q.add_argument("--end", type=float, help="window end, stream seconds")
    q.add_argument("--image", help=f"object picture (PNG/JPEG file) for {_types_with('object')} queries")
    q.add_argument("--product", help="instead of --image: a product of the runtime's catalog (lvm-edge catalog list)")
    q.add_argument("--activity", help=f"activity name or id for {_types_with('activity')} queries")
    q.add_argument("--fps", type=positive(float), help=f"box rate for {_types_with('fps')} queries")
    q.add_argument("--k", type=positive(int), help=f"intervals for {_types_with('k')} queries")
    _answer_flags(q, json_help="print the answer as the API's JSON (all boxes)")

    c = _client(sub, "catalog", _command("catalog"), help="add, list or remove the named products a running lvm-edge answers about",
                description=CATALOG_DESCRIPTION, epilog=CATALOG_EXAMPLES)
    c.add_argument("action", choices=("add", "list", "remove"))
    c.add_argument("name", nargs="?", help="product name (add, remove)")
    c.add_argument("images", nargs="*", metavar="PICTURE", help="add: PNG or JPEG files of the product, or folders "
                   "of them (e.g. the crops of one product)")
    c.add_argument("--state-dir", metavar="DIR", help="change the catalog kept in DIR directly, with no runtime "
                   "running (no camera needed); the runtime started with --state-dir DIR answers by it")
    c.add_argument("--json", action="store_true", help="print the API's JSON")

    k = _client(sub, "ask", _command("ask"), help="ask a running lvm-edge a question in plain words",
                description=ASK_DESCRIPTION, epilog=ASK_EXAMPLES)
    k.add_argument("question", nargs="*", help="the question (quote it, or give it as several words)")
    _answer_flags(k, json_help="print the API's whole reply")

    h = _client(sub, "happened", _command("happened"), help="what happened in a window: events of every product",
                description=HAPPENED_DESCRIPTION, epilog=HAPPENED_EXAMPLES)
    h.add_argument("--last", metavar="DURATION", help="the last N up to now (a live camera: the wall clock's now, so an "
                   "outage shows uncovered): 300, 90s, 5m, 1h (default: 5m)")
    h.add_argument("--start", type=float, help="instead of --last: window start, stream seconds")
    h.add_argument("--end", type=float, help="window end, stream seconds")
    h.add_argument("--activity", help="only events of this activity (name or id)")
    h.add_argument("--min-confidence", type=float, metavar="P",
                   help=f"the least confidence of an event shown (by default {MIN_CONFIDENCE:g}; {floors_help()})")
    h.add_argument("--stream", metavar="NAME", help="the stream to ask (default: the runtime's default stream)")
    h.add_argument("--json", action="store_true", help="print the API's JSON")

    s = _client(sub, "streams", _command("streams"), help="list, add or remove the camera streams of a running lvm-edge",
                description=STREAMS_DESCRIPTION, epilog=STREAMS_EXAMPLES)
    s.add_argument("action", nargs="?", default="list", choices=("list", "add", "remove"))
    s.add_argument("name", nargs="?", help="stream name (add, remove): 1-64 of A-Z a-z 0-9 _ . -")
    s.add_argument("uri", nargs="?", help="add: the source URI (quote URIs with ? in zsh)")
    s.add_argument("--realtime", action="store_true", help="add: pace files / demo at their own speed")
    s.add_argument("--duration", type=float, metavar="S", help="add: stop after S seconds of stream time")
    s.add_argument("--json", action="store_true", help="print the API's JSON")

    al = _client(sub, "alerts", _command("alerts"), help="list or acknowledge checkout alerts (a runtime's, or every lane's "
                 "from the store's MQTT broker)", description=ALERTS_DESCRIPTION, epilog=ALERTS_EXAMPLES)
    al.add_argument("action", nargs="?", default="list", choices=("list", "ack", "learn"),
                    help="list (default); ack ID; learn: fit the verifier on staff's verdicts and use it")
    al.add_argument("id", nargs="?", help="ack: the alert's id")
    al.add_argument("--stream", metavar="NAME", help="only this stream's alerts (with --broker too)")
    al.add_argument("--status", choices=("open", "acked"), help="only open or only acknowledged alerts")
    al.add_argument("--since", type=positive(float), metavar="S", help="only alerts raised in the last S seconds")
    al.add_argument("--limit", type=positive(int, most=500), metavar="N", help="at most N alerts (default 100, at most 500)")
    al.add_argument("--json", action="store_true", help="print the API's JSON (with --broker: each alert's JSON)")
    v = al.add_argument_group("ack's verdict (without --outcome: acknowledged, no outcome recorded)")
    v.add_argument("--outcome", choices=OUTCOMES,
                   help="confirmed, false_alert, or customer_fixed (real, and the customer paid once told)")
    v.add_argument("--note", metavar="TEXT", help="a note with the outcome (at most 200 characters)")
    v.add_argument("--by", metavar="NAME", help="who gives the verdict")
    b = al.add_argument_group("from the broker")
    b.add_argument("--broker", metavar="URL", help="mqtt://host[:port] or mqtts://host[:port]: list every lane's alerts")
    b.add_argument("--site", help="only this site's alerts (default: every site)")
    how = b.add_mutually_exclusive_group()
    how.add_argument("--follow", action="store_true", help="keep listening until Ctrl-C")
    how.add_argument("--seconds", type=positive(float), metavar="N", help="listen N seconds, then exit (default 10)")
    b.add_argument("--username")
    b.add_argument("--password-env", metavar="VAR", help="environment variable holding the password")
    b.add_argument("--ca-file", help="CA certificate(s) to trust (PEM)")
    b.add_argument("--cert-file", help="client certificate (PEM)")
    b.add_argument("--key-file", help="the client certificate's key (PEM)")
    b.add_argument("--client-id", help="a persistent session under this id: the broker keeps alerts while this is away")

    d = sub.add_parser("doctor", help="check this host: versions, GPU/TensorRT, camera, bundles, state dir",
                       description="Check this host, one row per thing the runtime needs: packages and their "
                                   "versions, GPU and TensorRT, INT8 kernels, a camera, the bundles, a state dir. "
                                   "Each row is ok, BAD or informational; the exit status is 1 if any row is BAD. "
                                   "It changes nothing (a missing state dir is not created).")
    d.add_argument("--config", help="check a runtime config as `lvm-edge run --config` would use it: the file, "
                                    "its alert settings, each source (a camera it names is opened and read: "
                                    "missing, it is BAD), its bundle and its state dir")
    d.add_argument("--bundle", help="check this bundle folder (default: the config's, else every bundle in ./engines)")
    d.add_argument("--camera", type=int, metavar="N", help="also open camera N and read a frame")
    d.add_argument("--state-dir", help="check that the runtime can write snapshots here (default: the config's)")
    d.set_defaults(func=_command("doctor"))

    m = sub.add_parser("demo", help="no camera needed: stream the checkout demo video, then answer queries beside ground truth")
    m.add_argument("--bundle", help="bundle folder (default: the shipped engines/lvm-tiny-fp32, exported from the "
                   "shipped checkpoint when missing and the export extra is installed)")
    m.add_argument("--export-if-missing", action="store_true", help="export the shipped checkpoint into --bundle when "
                   "that folder holds no bundle (without it a missing --bundle is an error)")
    m.add_argument("--backend", choices=BACKENDS, help="inference backend (default auto)")
    m.add_argument("--threads", type=positive(int), help="inference threads (default: ONNX Runtime's choice)")
    m.add_argument("--answers", choices=ANSWERS, help=ANSWERS_HELP)
    m.add_argument("--seed", type=int, help="which checkout video the generator draws (default 1000042: a held-out seed; "
                   "training used seeds under 1,000,000)")
    m.add_argument("--duration", type=positive(float), metavar="S", help="video seconds to stream (default 600)")
    m.add_argument("--queries", type=positive(int), metavar="N", help="queries to draw and answer beside their ground truth, "
                   "1-100 (default 8; a short video may hold fewer)")
    m.add_argument("--save-crops", metavar="DIR", help="write the picture of every object in the demo video "
                   "(--seed, --duration) to DIR/object-N.png, for `lvm-edge query --image`, and exit")
    # no default file: an installed package has no configs/ folder, and the settings' defaults are the demo's
    m.add_argument("--config", help="runtime config YAML (e.g. configs/runtime/demo.yaml); flags override it")
    m.set_defaults(func=_command("demo"))
    return p
