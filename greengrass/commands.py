"""``edgecv component ...``: the Greengrass commands (build, validate, run-local, serve), registered into the
``edgecv`` CLI by ``add_component_commands``. Handlers import their modules lazily, as the CLI's do."""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from edgecv.edge.errors import EdgecvError


def _build(args) -> int:
    from edgecv.greengrass.build import build_component, describe

    result = build_component(args.artifact, args.out, args.version, args.config, args.source, args.publish,
                             args.bucket, args.wheel)
    print(describe(result))
    return 0


def _validate(args) -> int:
    from edgecv.greengrass.recipes import check_build

    recipes = check_build(args.build)
    for name, recipe in recipes.items():
        print(f"ok  {name} {recipe['ComponentVersion']}  ({recipe['__path__']})")
    return 0


def _json_arg(text: str, what: str):
    try:
        return json.loads(text)
    except ValueError as exc:
        raise EdgecvError(f"{what} is not JSON ({exc})", "quote it: --merge '{\"detect\": {\"score_threshold\": 0.6}}'")


def _run_local(args) -> int:
    import tempfile

    from edgecv.greengrass.local import LocalNucleus, deps_from

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    merge = _json_arg(args.merge, "--merge") if args.merge else {}
    if not isinstance(merge, dict):
        raise EdgecvError("--merge must be a JSON object", "e.g. --merge '{\"max_frames\": 50}'")
    if args.source:
        merge["source"] = args.source
    env = {}
    for item in args.env or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise EdgecvError(f"--env {item!r} is not KEY=VALUE", "e.g. --env PIP_INDEX_URL=https://...")
        env[key] = value
    step_env = deps_from(args.deps_from) if args.deps_from else {}
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="edgecv-greengrass-"))
    nucleus = LocalNucleus(args.build, root, args.thing_name, {args.component: merge}, env, step_env,
                           shutdown_timeout=args.shutdown_timeout)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: nucleus.stop())
    result = nucleus.run(args.component, duration=args.duration)
    if args.record:
        with open(args.record, "w") as f:
            for message in result.published:
                f.write(json.dumps(message) + "\n")
    print(json.dumps(result.summary()))
    return 0 if result.state in ("FINISHED", "STOPPED") and all(c == 0 for c in result.exit_codes) else 1


def _serve(args) -> int:
    from edgecv.greengrass.service import serve

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return serve(args.model_dir, args.work, args.component, args.flush_timeout, stop)


def add_component_commands(parser: argparse.ArgumentParser) -> None:
    from edgecv.greengrass import COMPONENT, PUBLISH_TARGETS

    sub = parser.add_subparsers(dest="component_command", required=True, metavar="SUBCOMMAND")

    p = sub.add_parser("build", help="recipes and artifacts (greengrass-build layout) from compiled artifacts",
                       description="Write recipes/ and artifacts/<component>/<version>/ (and GDK projects in gdk/) "
                                   "for the counter component and one model component per compiled model.")
    p.add_argument("--artifact", action="append", required=True, type=Path, metavar="DIR",
                   help="an `edgecv compile --out` folder or its .tar.gz; repeat for other CPUs (one per CPU)")
    p.add_argument("--out", type=Path, default=Path("greengrass-build"), help="output folder (default greengrass-build)")
    p.add_argument("--version", default="1.0.0", help="component version (semantic, default 1.0.0)")
    p.add_argument("--config", type=Path, metavar="FILE.yaml", help="a run configuration (config.example.yaml) "
                   "for the component's DefaultConfiguration")
    p.add_argument("--source", default="0", help="default video source on the device (default camera 0)")
    p.add_argument("--publish", default="iotcore", choices=PUBLISH_TARGETS, help="default publish target")
    p.add_argument("--bucket", default="BUCKET_NAME", help="S3 bucket of the artifact URIs (cloud deployments)")
    p.add_argument("--wheel", type=Path, metavar="FILE.whl", help="the edgecv wheel to ship (default: built "
                   "from this checkout)")
    p.set_defaults(handler=_build)

    p = sub.add_parser("validate", help="check a build's recipes and artifacts as run-local does")
    p.add_argument("--build", required=True, type=Path, metavar="DIR", help="the --out folder of `component build`")
    p.set_defaults(handler=_validate)

    p = sub.add_parser("run-local", help="run a built component as the Greengrass nucleus would, without it",
                       description="Lay out artifacts, run Install and Run with recipe variables, timeouts and a "
                                   "development IPC nucleus on a Unix socket; print what was published.")
    p.add_argument("--build", required=True, type=Path, metavar="DIR", help="the --out folder of `component build`")
    p.add_argument("--component", default=COMPONENT, help=f"component to run (default {COMPONENT})")
    p.add_argument("--source", help="video source (merged into the configuration)")
    p.add_argument("--merge", metavar="JSON", help="configuration to merge, as a deployment's MERGE")
    p.add_argument("--root", type=Path, metavar="DIR", help="the nucleus' root (packages/, work/, logs/); "
                   "default: a new temporary folder")
    p.add_argument("--thing-name", default="edgecv-local", help="the core device's thing name")
    p.add_argument("--duration", type=float, metavar="S", help="stop the component (SIGTERM) after S seconds")
    p.add_argument("--shutdown-timeout", type=float, default=15.0, metavar="S",
                   help="seconds between SIGTERM and SIGKILL (the nucleus' Shutdown default)")
    p.add_argument("--deps-from", metavar="PYTHON", help="offline, cheap Install: pip installs only the shipped "
                   "wheel and the dependencies come from PYTHON's environment (trials, tests)")
    p.add_argument("--env", action="append", metavar="KEY=VALUE", help="environment for every lifecycle step")
    p.add_argument("--record", type=Path, metavar="FILE.jsonl", help="write every published message")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.set_defaults(handler=_run_local)

    p = sub.add_parser("serve", help="the component's Run step: count and publish as the nucleus started us",
                       description="Runs inside Greengrass (it reads the IPC socket and token the nucleus sets).")
    p.add_argument("--model-dir", required=True, type=Path, metavar="DIR",
                   help="the model component's decompressed artifacts (or an artifact folder)")
    p.add_argument("--work", type=Path, metavar="DIR", help="the component's work folder (default: current)")
    p.add_argument("--component", default=COMPONENT, help="this component's name")
    p.add_argument("--flush-timeout", type=float, default=5.0, help="seconds to deliver what is queued at stop")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(handler=_serve)
