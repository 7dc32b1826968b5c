"""The ``edgecv`` command: subcommands registered in one table, errors mapped to exit codes here.

Handlers import their heavy modules (MXNet, the TVM compiler) lazily, so ``edgecv --help`` and the
edge commands start fast and never load MXNet.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import edgecv
from edgecv.edge.errors import EdgecvError


def _cmd_models(args) -> int:
    from edgecv.compile.zoo import model_names, resolve_model

    for name in model_names():
        spec = resolve_model(name)
        print(f"{name:28} {spec.task:15} {spec.input_size:4}  {spec.description}")
    print("\nAlso: an exported GluonCV checkpoint, given as PATH/prefix-symbol.json (prefix-0000.params beside it).")
    return 0


def _cmd_targets(args) -> int:
    from edgecv.compile.targets import TARGETS

    for t in TARGETS.values():
        cross = f"  (links with {t.cross_compiler})" if t.cross_compiler else ""
        int8 = "int8: best of this CPU" if t.name == "x86_64" else f"int8: {t.int8}" if t.int8 else "no int8"
        print(f"{t.name:16} {t.arch:8} [{int8}] {t.description}{cross}")
    return 0


def _cmd_compile(args) -> int:
    from edgecv.compile.pipeline import CompileRequest, compile_model
    from edgecv.compile.progress import Progress
    from edgecv.compile.weights import Weights
    from edgecv.compile.zoo import resolve_model

    chosen = args.pretrained or args.weights or args.random_weights is not None
    if not (chosen or args.model.endswith(".json") or resolve_model(args.model, args.decoder).brings_weights):
        raise EdgecvError("no weights chosen for " + args.model,
                          "pass --weights FILE.params, --pretrained or --random-weights SEED")
    weights = Weights(pretrained=args.pretrained, params_file=args.weights, random_seed=args.random_weights)
    classes = tuple(Path(args.classes).read_text().split("\n")) if args.classes else None
    request = CompileRequest(model=args.model, target=args.target, out=args.out, weights=weights,
                             input_size=args.input_size, tuning_records=args.tuning_records, verify=args.verify,
                             verify_images=tuple(args.verify_images) if args.verify_images else None,
                             classes=tuple(c for c in classes if c.strip()) if classes else None,
                             use_cache=not args.no_cache, keep_reference=args.keep_reference,
                             use_shipped_records=not args.untuned, decoder=args.decoder, int8=args.int8,
                             calibration=args.calibration, conv_kernels=args.conv_kernels)
    result = compile_model(request, Progress(0, quiet=args.quiet))
    if result.verify_report is not None:
        print(result.verify_report.summary())
    m = result.manifest
    print(f"{m.model} for {m.target.name} ({m.target.arch}) -> {result.out} and {result.archive.name}"
          f"{' (from cache)' if result.cached else ''}")
    return 0


def _cmd_infer(args) -> int:
    import numpy as np

    from edgecv.edge.runtime import TvmModel

    model = TvmModel(args.artifact)
    x = np.load(args.input) if args.input else np.zeros(model.manifest.input.shape, np.float32)
    outputs = model(x.astype(np.float32))
    if args.output:
        np.savez(args.output, **outputs)
    print(json.dumps({k: list(v.shape) for k, v in outputs.items()}))
    return 0


def _counts_json(c) -> dict | None:
    return None if c is None else {"people": c.people, "goods": c.goods, "people_in": c.people_in,
                                   "people_out": c.people_out, "zones": c.zones, "goods_types": c.goods_types,
                                   "lines": c.lines, "zone_detail": c.zone_detail}


def _cmd_run(args) -> int:
    import logging
    import signal
    import threading
    import traceback

    from edgecv.edge.config import load_config, parse_source_arg
    from edgecv.edge.detector import Detector
    from edgecv.edge.errors import ConfigError
    from edgecv.edge.loop import EdgeLoop, open_publisher, publishing_sinks
    from edgecv.edge.memory import status_mb
    from edgecv.edge.sinks import ProgressSink, StateSink, VideoSink
    from edgecv.edge.sources import open_sources
    from edgecv.edge.state import TotalsFile, default_state_dir

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {k: v for k, v in {"mqtt.url": args.mqtt, "device": args.device_name,
                                   "streams": args.streams}.items() if v is not None}
    config = load_config(args.config, overrides).with_sources([parse_source_arg(s) for s in args.source or []])
    if not config.sources:
        raise ConfigError("no camera to count from", "pass --source URL (or NAME=URL, once per camera), or list "
                          "the cameras under `sources:` in --config")
    if args.validate_config:
        print(f"{args.config or 'options'}: valid ({len(config.sources)} camera{'s' * (len(config.sources) > 1)})")
        return 0
    if (args.http or config.http.listen) and importlib.util.find_spec("aiohttp") is None:
        raise EdgecvError("the web view (--http, http.listen) needs aiohttp, which is not installed",
                          "pip install 'edgecv[web]', or run without --http")
    detector = Detector(args.artifact, config.detect, backend=args.backend)
    sources = open_sources(config.sources, realtime=args.realtime)
    publisher = open_publisher(config)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    classifier = None
    if args.classifier:
        from edgecv.edge.classify import CropClassifier

        classifier = CropClassifier(args.classifier)
    totals = TotalsFile(default_state_dir(config.state, config.mqtt.outbox if config.mqtt else None), config.device)
    loop = EdgeLoop(config, detector, sources, max_frames=args.max_frames, classifier=classifier, totals=totals.load())
    for sink in publishing_sinks(publisher, loop):
        loop.sinks.add(sink)
    if args.save_video:
        loop.sinks.add(VideoSink(args.save_video, list(sources),
                                 {name: getattr(s, "fps", 15.0) for name, s in sources.items()}))
    loop.sinks.add(StateSink(totals, loop))
    loop.sinks.add(ProgressSink(loop))
    web = None
    if args.http or config.http.listen:
        from edgecv.edge.web import start_web

        web = start_web(loop, config, args.config, args.http, publisher)
    failure = None
    try:
        summary = loop.run(stop)
    except Exception as exc:  # the loop closed its sinks (counts and totals flushed): deliver them, then fail
        failure, summary = exc, loop.summary()
    finally:
        if web is not None:
            web.stop()
    if publisher is not None:
        delivered = publisher.flush(timeout=args.flush_timeout)
        publisher.stop(flush_timeout=0)
        if not delivered:
            print(f"edgecv run: {len(publisher.outbox)} messages not yet delivered are kept in "
                  f"{publisher.outbox.path}; they are sent on the next run", file=sys.stderr)
        publisher.outbox.close()
    print(json.dumps({"frames": summary.frames, "fps": round(summary.fps, 2), "dropped": summary.dropped,
                      "errors": summary.errors, "peak_rss_mb": round(status_mb("VmHWM"), 1),
                      "loop_cpu_ms_per_frame": summary.loop_cpu_ms_per_frame,
                      "counts": _counts_json(summary.counts),
                      "cameras": {name: {**c, "counts": _counts_json(c["counts"])}
                                  for name, c in summary.cameras.items()}}))
    code = 0
    if isinstance(failure, EdgecvError):
        print(f"edgecv run: error: {failure}", file=sys.stderr)
        code = failure.exit_code
    elif failure is not None:  # a bug: the whole traceback, and a non-zero exit
        traceback.print_exception(failure, file=sys.stderr)
        print(f"edgecv run: error: the run stopped on a bug ({type(failure).__name__}: {failure}); the counts so "
              "far were published and saved", file=sys.stderr)
        code = 1
    # Everything is delivered or kept on disk and the video is closed: leave without the interpreter's
    # teardown, during which ONNX Runtime's thread pool (the onnxruntime reference backend) intermittently
    # aborted the process after the work was done
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _add_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--artifact", required=True, type=Path, help="detector artifact folder (edgecv compile --out)")
    p.add_argument("--source", action="append", metavar="[NAME=]URL",
                   help="a camera: index or /dev/videoN, video file, rtsp:// or http:// stream, image folder or glob; "
                   "NAME= names it (default: main); repeat for several cameras (replaces `sources:` of --config)")
    p.add_argument("--config", type=Path, help="YAML configuration (see config.example.yaml)")
    p.add_argument("--classifier", type=Path, metavar="DIR",
                   help="a classifier artifact that names the sub-type of each goods track (crop classification)")
    p.add_argument("--mqtt", metavar="URL", help="broker, e.g. mqtt://127.0.0.1:1883 (overrides mqtt.url)")
    p.add_argument("--device-name", help="device name in topics and messages (overrides device)")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop each camera after N frames")
    p.add_argument("--save-video", type=Path, metavar="OUT.mp4",
                   help="write annotated frames (several cameras: OUT-<camera>.mp4 each)")
    p.add_argument("--realtime", action="store_true", help="pace video files at their frame rate")
    p.add_argument("--streams", type=int, metavar="N", help="frames detected at once, each by its own model "
                   "instance on its share of the cores (overrides streams; default 1)")
    p.add_argument("--validate-config", action="store_true", help="check the configuration and exit")
    p.add_argument("--backend", default="tvm",
                   choices=["tvm", "onnxruntime", "openvino", "openvino-int8", "mxnet", "mxnet-hybrid"],
                   help="tvm (default); onnxruntime/openvino/mxnet run the uncompiled graph kept by --keep-reference "
                        "(openvino-int8: its NNCF int8, made by `edgecv bench`)")
    p.add_argument("--flush-timeout", type=float, default=10.0, help="seconds to wait for delivery at the end")
    p.add_argument("--http", metavar="HOST:PORT", help="serve the web view (live video, counts, line/zone set-up, "
                   "/metrics); beyond loopback it needs http.token or EDGECV_HTTP_TOKEN")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])


def _cmd_bench_loop(args) -> int:
    from edgecv.edge.benchmark import cameras_benchmark, run_benchmark

    if args.cameras > 1:
        result = cameras_benchmark(args.artifact, args.video, args.cameras, args.frames, args.out, args.streams,
                                   args.rounds)
        print(json.dumps(result, indent=2))
        return 0

    def progress(done: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{done:,}/{args.frames:,} frames", end="", file=sys.stderr, flush=True)

    result = run_benchmark(args.artifact, args.video, args.frames, args.out, viewer_frames=args.viewer_frames,
                           mqtt=args.mqtt, progress=progress, rounds=args.rounds, round_frames=args.round_frames,
                           streams=args.streams)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0


def _add_bench_loop(p: argparse.ArgumentParser) -> None:
    p.add_argument("--artifact", required=True, type=Path, help="detector artifact folder")
    p.add_argument("--video", required=True, type=Path, help="video to run (played again until --frames frames are done)")
    p.add_argument("--frames", type=int, default=1000, help="frames of the long run, for memory (default 1000)")
    p.add_argument("--rounds", type=int, default=6,
                   help="paired rounds (model alone, loop, model alone) for the frames/s ratio (default 6)")
    p.add_argument("--round-frames", type=int, default=300, metavar="N", help="loop frames per round (default 300)")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks"), help="where loop.json/loop.md go")
    p.add_argument("--mqtt", metavar="URL", help="also publish the counts to this broker, as `edgecv run` does")
    p.add_argument("--streams", type=int, default=1, metavar="N", help="the loop's detection streams (default 1)")
    p.add_argument("--cameras", type=int, default=1, metavar="N",
                   help="N > 1: the video as N cameras in one `edgecv run` against N separate `edgecv run` processes "
                   "(frames/s per camera, the loop's CPU per frame, peak RSS), --frames each, --rounds interleaved "
                   "rounds; writes loop-<N>cameras.{json,md}")
    p.add_argument("--viewer-frames", type=int, default=0, metavar="N",
                   help="also measure the web view's cost: rounds of N frames without and with a live viewer")


def _cmd_bench(args) -> int:
    from edgecv.compile.bench import run_bench
    from edgecv.compile.progress import Progress
    from edgecv.compile.weights import Weights

    from edgecv.compile.zoo import resolve_model

    if args.weights:
        weights = Weights(params_file=args.weights)
    elif args.random_weights is None and resolve_model(args.model).brings_weights:
        weights = Weights()  # the real weights shipped with the model
    else:
        weights = Weights(random_seed=0 if args.random_weights is None else args.random_weights)
    report = run_bench(args.model, [b.strip() for b in args.backends.split(",") if b.strip()], args.rounds,
                       args.threads, args.image, args.out, args.target, weights, args.input_size, args.e2e_frames,
                       Progress(0))
    for r in report["results"]:
        if r["status"] != "ok":
            print(f"{r['backend']:13} skipped: {r['reason']}")
        else:
            print(f"{r['backend']:13} p50 {r['p50_ms']:9.2f} ms  p99 {r['p99_ms']:9.2f} ms  peak RSS {r['peak_rss_mb']:7.1f} MB"
                  f"  max|diff| {r['max_abs_diff'] if r['max_abs_diff'] is not None else '-'}")
    print(f"results: {args.out}/bench-{report['model']}-{report['target']}.{{json,md,png}}")
    return 0


def _cmd_tune(args) -> int:
    from edgecv.compile.progress import Progress
    from edgecv.compile.tune import tune_model
    from edgecv.compile.weights import Weights

    rpc = None
    if args.rpc_tracker or args.rpc_key:
        host, _, port = (args.rpc_tracker or "").rpartition(":")
        if not host or not port.isdigit() or not args.rpc_key:
            raise EdgecvError(f"bad --rpc-tracker {args.rpc_tracker!r} / --rpc-key {args.rpc_key!r}",
                              "use --rpc-tracker HOST:PORT together with --rpc-key KEY")
        rpc = (host, int(port), args.rpc_key)
    weights = None  # tune_model's default: random weights (records don't depend on them), a checkpoint's own
    if args.pretrained or args.weights or args.random_weights is not None:
        weights = Weights(pretrained=args.pretrained, params_file=args.weights, random_seed=args.random_weights)
    summary = tune_model(args.model, args.target, records=args.records, trials_per_task=args.trials,
                         minutes=args.minutes, resume=not args.restart, input_size=args.input_size,
                         weights=weights, rpc=rpc, max_tasks=args.max_tasks, progress=Progress(0), int8=args.int8,
                         calibration=args.calibration, conv_kernels=args.conv_kernels)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _add_conv_kernels(p: argparse.ArgumentParser) -> None:
    from edgecv.edge.artifact import CONV_KERNELS

    p.add_argument("--conv-kernels", choices=CONV_KERNELS, default=CONV_KERNELS[0],
                   help="how float32 convolutions run: direct (default: edgecv's register-tiled kernels, fast without "
                        "tuning records) or metaschedule (TVM's searched schedules, from the tuning records)")


def _add_int8(p: argparse.ArgumentParser) -> None:
    p.add_argument("--int8", action="store_true",
                   help="int8 convolutions with the target's dot product (x86: AVX-512 VNNI, AVX-512BW or AVX2; "
                        "aarch64: sdot or NEON); records in models/records/<model>/<kernel's records>-int8")
    p.add_argument("--calibration", metavar="SRC",
                   help="--int8: video, folder or glob of images to calibrate the activation ranges on "
                        "(default: 32 frames of opencv-doc's vtest.avi, none of them in the labelled set)")


def _add_tune(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a model-zoo name (see `edgecv models`) or PATH/prefix-symbol.json")
    p.add_argument("--target", required=True, help="a target preset (see `edgecv targets`)")
    p.add_argument("--trials", type=int, default=32, metavar="N", help="MetaSchedule trials per task (default 32)")
    p.add_argument("--minutes", type=float, metavar="M", help="wall-clock budget over all tasks; heaviest go first")
    p.add_argument("--max-tasks", type=int, metavar="N", help="tune at most N tasks in this run")
    p.add_argument("--records", type=Path, metavar="DIR",
                   help="database folder (default models/records/<model>[-<size>]/<level>, where compile looks)")
    p.add_argument("--restart", action="store_true", help="tune tasks again even if they have records (default: resume)")
    p.add_argument("--input-size", type=int, metavar="N", help="square input size (default: the model's)")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weights", type=Path, metavar="FILE.params", help="weights saved with net.save_parameters()")
    w.add_argument("--pretrained", action="store_true", help="GluonCV model-zoo weights (needs the internet)")
    w.add_argument("--random-weights", type=int, metavar="SEED",
                   help="random weights (the default, seed 0: records don't depend on the weights)")
    _add_conv_kernels(p)
    _add_int8(p)
    p.add_argument("--rpc-tracker", metavar="HOST:PORT", help="measure on boards registered with TVM's RPC tracker")
    p.add_argument("--rpc-key", metavar="KEY", help="the boards' key at the tracker")


BENCH_BACKENDS = ("mxnet", "mxnet-hybrid", "onnxruntime", "openvino", "openvino-int8", "tvm", "tvm-tuned",
                  "tvm-direct", "tvm-int8")  # compile/bench.py checks


def _add_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a model-zoo name (see `edgecv models`)")
    p.add_argument("--backends", default=",".join(BENCH_BACKENDS), help=f"comma-separated, of {','.join(BENCH_BACKENDS)}")
    p.add_argument("--rounds", type=int, default=20, help="timed rounds per backend (interleaved)")
    p.add_argument("--threads", type=int, help="threads per backend (default: each runtime's own)")
    p.add_argument("--image", type=Path, help="input image (default: opencv-doc's basketball1.png)")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks"), help="folder for bench-*.json/.md/.png")
    p.add_argument("--target", default="x86_64", help="target preset (this machine's CPU)")
    p.add_argument("--input-size", type=int, help="square input size (default: the model's)")
    p.add_argument("--e2e-frames", type=int, default=10, help="frames of `edgecv run` on vtest.avi per backend (0: skip)")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weights", type=Path, metavar="FILE.params")
    w.add_argument("--random-weights", type=int, metavar="SEED",
                   help="random weights (default: seed 0, or a shipped model's own real weights)")


def _add_compile(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a model-zoo name (see `edgecv models`), PATH/prefix-symbol.json or PATH.onnx")
    p.add_argument("--decoder", metavar="FAMILY", help="an ONNX detector's decoder plug-in (nanodet)")
    p.add_argument("--target", required=True, help="a target preset (see `edgecv targets`)")
    p.add_argument("--out", required=True, type=Path, help="artifact folder to write (DIR.tar.gz too)")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weights", type=Path, metavar="FILE.params", help="weights saved with net.save_parameters()")
    w.add_argument("--pretrained", action="store_true", help="GluonCV model-zoo weights (needs the internet)")
    w.add_argument("--random-weights", type=int, metavar="SEED", help="reproducible random weights (tests, benchmarks)")
    p.add_argument("--input-size", type=int, metavar="N", help="square input size (default: the model's)")
    p.add_argument("--tuning-records", type=Path, metavar="DIR",
                   help="MetaSchedule records to apply (default: models/records/<model>/<target>/ when present)")
    p.add_argument("--untuned", action="store_true", help="ignore the shipped tuning records")
    _add_conv_kernels(p)
    _add_int8(p)
    p.add_argument("--verify", action="store_true", help="compare with MXNet on real images; fail if they differ")
    p.add_argument("--verify-images", nargs="+", metavar="FILE", help="images for --verify (default: opencv-doc samples)")
    p.add_argument("--classes", metavar="FILE", help="class names, one per line (exported checkpoints)")
    p.add_argument("--no-cache", action="store_true", help="rebuild even if an identical build is cached")
    p.add_argument("--keep-reference", action="store_true",
                   help="also store the uncompiled graph (ONNX, MXNet) for the reference backends of bench/run")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _cmd_eval(args) -> int:
    from edgecv.compile.evaluate import LABELS, evaluate_model, same_scores, summary
    from edgecv.compile.progress import Progress
    from edgecv.edge.errors import VerificationError

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    report = evaluate_model(args.model, backends, args.score_threshold, args.target, args.labels or LABELS,
                            Progress(0, quiet=args.quiet))
    print(summary(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    if not same_scores(report):
        raise VerificationError("the backends score differently on the labelled set", "see the lines above")
    return 0


def _add_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an artifact folder, or a model with real weights (compiled first)")
    p.add_argument("--backends", default="mxnet,onnxruntime,tvm", help="comma-separated, of mxnet,onnxruntime,tvm")
    p.add_argument("--score-threshold", type=float, default=0.4, help="detections below are not counted (0.4)")
    p.add_argument("--labels", type=Path, help="labelled set (default models/eval/labels.json)")
    p.add_argument("--target", default="x86_64", help="target preset when compiling a model (this CPU)")
    p.add_argument("--out", type=Path, metavar="REPORT.json", help="also write the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _add_infer(p: argparse.ArgumentParser) -> None:
    p.add_argument("--artifact", required=True, type=Path, help="artifact folder")
    p.add_argument("--input", type=Path, help=".npy input tensor (default: zeros of the input shape)")
    p.add_argument("--output", type=Path, help="write the outputs to this .npz")


def _add_component(p: argparse.ArgumentParser) -> None:
    from edgecv.greengrass.commands import add_component_commands

    add_component_commands(p)  # build, validate, run-local, serve: each sets its own handler


# name -> (help, add arguments, handler)
COMMANDS = {
    "models": ("list the models `edgecv compile` knows", lambda p: None, _cmd_models),
    "targets": ("list the target presets", lambda p: None, _cmd_targets),
    "compile": ("compile a GluonCV model into a verified TVM artifact", _add_compile, _cmd_compile),
    "infer": ("run an artifact once on a tensor (smoke test on a device)", _add_infer, _cmd_infer),
    "tune": ("MetaSchedule-tune a model for a target; records are reused by compile", _add_tune, _cmd_tune),
    "bench": ("compiled vs uncompiled backends, side by side, in one run", _add_bench, _cmd_bench),
    "eval": ("precision/recall of a detector per backend on the labelled set (models/eval)", _add_eval, _cmd_eval),
    "bench-loop": ("end-to-end vs inference frames/s and memory of the edge loop", _add_bench_loop,
                   _cmd_bench_loop),
    "run": ("count people and goods from a video source, publish over MQTT", _add_run, _cmd_run),
    "component": ("AWS IoT Greengrass v2 component: build, validate, run-local, serve", _add_component, None),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgecv", description=(
        "Compile GluonCV detectors with TVM; count people and goods at the edge."))
    parser.add_argument("--version", action="version", version=f"edgecv {edgecv.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add, handler) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        p.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except EdgecvError as exc:
        print(f"edgecv {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"edgecv {args.command}: interrupted", file=sys.stderr)
        return 130
