"""``edgecv bench``: compiled vs uncompiled, side by side, in one run.

Each backend runs in its own process (``edge/bench_worker.py``) so load time and peak memory are its
own; rounds are interleaved across backends so machine noise hits all alike, each call timed once the previous
backend's threads are asleep (``settle``); warm-up is excluded; every backend gets the same real input. Accuracy
is measured against MXNet on that input.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecv.compile.pipeline import CompileRequest, compile_model, find_shipped_records, shipped_records
from edgecv.compile.zoo import resolve_model
from edgecv.compile.progress import Progress
from edgecv.compile.settle import settle
from edgecv.compile.weights import Weights
from edgecv.edge.backends import OPENVINO_INSTALL, OPENVINO_INT8
from edgecv.edge.errors import EdgecvError
from edgecv.edge.memory import drop_page_cache, page_cache_note

ALL_BACKENDS = ("mxnet", "mxnet-hybrid", "onnxruntime", "openvino", "openvino-int8", "tvm", "tvm-tuned", "tvm-direct",
                "tvm-int8")
# edgecv's own artifacts: TVM untuned (no schedules) and tuned (MetaSchedule's records), both with
# --conv-kernels metaschedule; what `edgecv compile` builds: float32 (direct convolutions, the records for the rest)
# and int8
COMPILED = ("tvm", "tvm-tuned", "tvm-direct", "tvm-int8")
_BUILDS = {"tvm-tuned": dict(int8=False, conv_kernels="metaschedule"), "tvm-direct": dict(int8=False),
           "tvm-int8": dict(int8=True)}  # CompileRequest fields beside the shipped records; "tvm": none of them
OTHERS = ("mxnet-hybrid", "onnxruntime", "openvino", "openvino-int8")  # what a user would run instead
_NEEDS = {"mxnet": ("mxnet", "pip install 'edgecv[compile]'"), "mxnet-hybrid": ("mxnet", "pip install 'edgecv[compile]'"),
          "onnxruntime": ("onnxruntime", "pip install onnxruntime"), "openvino": ("openvino", OPENVINO_INSTALL),
          "openvino-int8": ("openvino", OPENVINO_INSTALL),
          **{b: ("tvm", "pip install 'edgecv[edge]'") for b in COMPILED}}
# what must be installed to run each backend (framework part of "disk_mb")
_PACKAGES = {"mxnet": ("mxnet",), "mxnet-hybrid": ("mxnet",), "onnxruntime": ("onnxruntime",),
             "openvino": ("openvino",), "openvino-int8": ("openvino",),
             **{b: ("tvm", "tvm_ffi") for b in COMPILED}}
DEFAULT_IMAGE = Path("/usr/share/doc/opencv-doc/examples/data/basketball1.png")
VIDEO = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


@dataclass
class BackendResult:
    backend: str
    model: str
    status: str = "ok"
    reason: str | None = None
    latencies_ms: list[float] = field(default_factory=list)
    cpu_after_ms: list[float] = field(default_factory=list)  # CPU its process used after each answer (spinning)
    load_s: float | None = None
    peak_rss_mb: float | None = None
    disk_mb: float | None = None
    max_abs_diff: float | None = None
    detections: int | None = None
    detections_matched: int | None = None
    same_classes: bool | None = None
    end_to_end_fps: float | None = None
    end_to_end_peak_rss_mb: float | None = None   # the whole `edgecv run` process (video, loop, backend)

    def row(self, gflop: float | None) -> dict:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else None
        p = (lambda q: round(float(np.percentile(lat, q)), 2)) if lat is not None else (lambda q: None)
        p50 = p(50)
        return {"backend": self.backend, "model": self.model, "status": self.status, "reason": self.reason,
                "rounds": len(self.latencies_ms), "p50_ms": p50, "p90_ms": p(90), "p99_ms": p(99),
                "fps": round(1000 / p50, 2) if p50 else None,
                "gflops_per_s": round(gflop / (p50 / 1000), 1) if p50 and gflop else None,
                "load_s": None if self.load_s is None else round(self.load_s, 3),
                "peak_rss_mb": None if self.peak_rss_mb is None else round(self.peak_rss_mb, 1),
                "disk_mb": None if self.disk_mb is None else round(self.disk_mb, 1),
                "max_abs_diff": self.max_abs_diff, "detections": self.detections,
                "detections_matched": self.detections_matched, "same_classes": self.same_classes,
                "cpu_after_call_ms": round(float(np.mean(self.cpu_after_ms)), 1) if self.cpu_after_ms else None,
                "end_to_end_fps": self.end_to_end_fps, "end_to_end_peak_rss_mb": self.end_to_end_peak_rss_mb,
                "latencies_ms": [round(v, 3) for v in self.latencies_ms]}


def _tree_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 1e6
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def _package_mb(module: str) -> float:
    spec = importlib.util.find_spec(module)
    return _tree_mb(Path(spec.origin).parent) if spec and spec.origin else 0.0


def conv_gflop(onnx_path: Path) -> float:
    """Multiply-adds x 2 of the graph's Conv and Gemm/MatMul nodes, from ONNX shape inference."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)}
    inits = {i.name: numpy_helper.to_array(i).shape for i in model.graph.initializer}
    total = 0.0
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[1] in inits and node.output[0] in shapes:
            cout, cin_g, *k = inits[node.input[1]]
            out = shapes[node.output[0]]
            total += 2.0 * float(np.prod(out)) * cin_g * float(np.prod(k))
        elif node.op_type in ("Gemm", "MatMul") and node.input[1] in inits and node.output[0] in shapes:
            total += 2.0 * float(np.prod(shapes[node.output[0]])) * inits[node.input[1]][0]
    return total / 1e9


def machine() -> dict:
    from edgecv.edge.benchmark import cpu_name
    from edgecv.edge.cpu import isa_summary

    versions = {}
    for name in ("mxnet", "onnxruntime", "openvino", "nncf", "tvm", "numpy"):
        try:
            versions[name] = importlib.metadata.version(name) if name in ("openvino", "nncf") else \
                __import__(name).__version__  # (without importing those: NNCF logs on import)
        except Exception:  # not installed: its backend is reported as skipped
            versions[name] = None
    try:
        import tvm.target.codegen

        llvm_cpu = tvm.target.codegen.llvm_get_system_cpu()
    except Exception:
        llvm_cpu = None
    return {"cpu": cpu_name(), "llvm_cpu": llvm_cpu, "isa": isa_summary(), "cores": os.cpu_count(),
            "python": platform.python_version(), "versions": versions, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


# Benchmarking for an ISA level below the host's (x86-64-v3 on an AVX-512 CPU), every backend's process is made to
# see the level's CPU where the host can fault on CPUID (compile/cpuid_mask.py): ONNX Runtime's kernels (MLAS), oneDNN
# (MXNet's, OpenVINO's), OpenCV and numpy then pick the code an AVX2 box runs, as edgecv's artifact is compiled to.
# oneDNN is also capped by its own variable (older oneDNN reads DNNL_MAX_CPU_ISA), which works on any CPU.
ONEDNN_ISA_CAPS = {"x86-64-v3": "AVX2", "x86-64-v3-vnni": "AVX2_VNNI"}
ONEDNN_BACKENDS = ("mxnet", "mxnet-hybrid", "openvino", "openvino-int8")


def isa_cap(target: str, backends: list[str], flags: frozenset[str] | None = None) -> dict | None:
    """How the backends are held to ``target``'s ISA level: the CPU features hidden from every backend's process
    (those of the level's ``cpuid_mask.HIDDEN`` this CPU has; none when it has none of them, or can't hide them:
    ``cpuid_why_not``), oneDNN's cap, and which of the other runtimes are held to the level and which may run more."""
    from edgecv.compile import cpuid_mask
    from edgecv.edge.cpu import host_cpu_flags

    onednn, hidden = ONEDNN_ISA_CAPS.get(target), cpuid_mask.HIDDEN.get(target)
    if onednn is None and hidden is None:
        return None
    flags = host_cpu_flags() if flags is None else flags
    above = [f for f in hidden or () if f in flags]  # what this CPU has beyond the level
    why = cpuid_mask.why_not(flags) if above else None
    others = [b for b in backends if b not in COMPILED]
    held = [b for b in others if not above or why is None or b in ONEDNN_BACKENDS]
    return {"onednn_max_cpu_isa": onednn, "cpuid_hidden": above if above and why is None else None,
            "cpuid_why_not": why, "capped": held, "not_capped": [b for b in others if b not in held]}


def _cap_env(cap: dict | None, backend: str) -> dict:
    """The environment that holds ``backend`` to ``cap`` (empty when nothing does)."""
    env = {}
    if cap and cap["cpuid_hidden"]:
        from edgecv.compile.cpuid_mask import environment

        env.update(environment(cap["cpuid_hidden"]))
    if cap and cap["onednn_max_cpu_isa"] and backend in ONEDNN_BACKENDS:
        env.update(ONEDNN_MAX_CPU_ISA=cap["onednn_max_cpu_isa"], DNNL_MAX_CPU_ISA=cap["onednn_max_cpu_isa"])
    return env


class _Worker:
    def __init__(self, backend: str, artifact: Path, x_path: Path, out_path: Path, threads: int | None,
                 extra_env: dict | None = None):
        env = {**os.environ, **(extra_env or {})}
        if threads:
            env.update(OMP_NUM_THREADS=str(threads), TVM_NUM_THREADS=str(threads), MXNET_CPU_WORKER_NTHREADS="1")
        self.backend, self.out_path = backend, out_path
        self.proc = subprocess.Popen([sys.executable, "-m", "edgecv.edge.bench_worker", "--backend",
                                      "tvm" if backend.startswith("tvm") else backend, "--artifact", str(artifact),
                                      "--input", str(x_path), "--outputs", str(out_path),
                                      *(["--threads", str(threads)] if threads else [])],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env)

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise EdgecvError(f"benchmark worker for {self.backend} died: {self.proc.stderr.read()[-300:]}")
        return json.loads(line)

    def send(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()


def _e2e(backend: str, artifact: Path, frames: int, extra_env: dict | None = None) -> tuple[float | None, float | None]:
    """`edgecv run` on the sample video with this backend: its frames/s and its process's peak RSS (MB)."""
    result = subprocess.run([sys.executable, "-m", "edgecv", "run", "--artifact", str(artifact), "--source",
                             str(VIDEO), "--max-frames", str(frames), "--backend",
                             "tvm" if backend.startswith("tvm") else backend], capture_output=True, text=True,
                            env={**os.environ, **(extra_env or {})})
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"edgecv bench: `edgecv run` with {backend} failed (exit {result.returncode}): {last}", file=sys.stderr)
        return None, None
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    return summary["fps"], summary["peak_rss_mb"]


def run_bench(model: str, backends: list[str], rounds: int = 20, threads: int | None = None,
              image: Path | None = None, out: Path = Path("docs/benchmarks"), target: str = "x86_64",
              weights: Weights = Weights(random_seed=0), input_size: int | None = None, e2e_frames: int = 10,
              progress: Progress | None = None) -> dict:
    import cv2

    from edgecv.edge.artifact import read_manifest
    from edgecv.edge.decode import decode_detections
    from edgecv.edge.matching import match
    from edgecv.edge.preprocess import preprocess

    progress = progress or Progress(0)
    progress.total = 4 + sum(b in backends for b in (*_BUILDS, "openvino-int8"))
    unknown = [b for b in backends if b not in ALL_BACKENDS]
    if unknown:
        raise EdgecvError(f"unknown backend(s) {', '.join(unknown)}", f"use some of {', '.join(ALL_BACKENDS)}")
    results = {b: BackendResult(b, model) for b in backends}
    for b in backends:
        module, hint = _NEEDS[b]
        if importlib.util.find_spec(module) is None:
            results[b].status, results[b].reason = "skipped", f"{module} is not installed: {hint}"
    work = Path(tempfile.mkdtemp(prefix="edgecv-bench-"))
    with progress(f"compiling {model} for {target} (untuned, with the uncompiled reference graph)"):
        artifacts = {"": work / "art"}
        compile_model(CompileRequest(model=model, target=target, out=artifacts[""], weights=weights,
                                     input_size=input_size, keep_reference=True, use_shipped_records=False,
                                     conv_kernels="metaschedule"), Progress(0, quiet=True))
    records = {}
    for b, build in _BUILDS.items():
        if b in backends and results[b].status == "ok":
            records[b] = _tuned_artifact(results[b], work / b, weights, input_size, target, progress, **build)
            if results[b].status == "ok":
                artifacts[b] = work / b
    openvino_int8 = None
    if "openvino-int8" in backends and results["openvino-int8"].status == "ok":
        openvino_int8 = _openvino_int8(results["openvino-int8"], artifacts[""], progress)
    manifest = read_manifest(artifacts[""])
    picture = cv2.imread(str(image or DEFAULT_IMAGE), cv2.IMREAD_COLOR)
    if picture is None:
        raise EdgecvError(f"can't read image {image or DEFAULT_IMAGE}", "pass a readable image to --image")
    x, _ = preprocess(picture, manifest.input)
    np.save(work / "x.npy", x)
    gflop = conv_gflop(artifacts[""] / manifest.reference["onnx"])
    runnable = [b for b in backends if results[b].status == "ok"]
    workers = {}
    cap = isa_cap(target, runnable)
    env_of = {b: _cap_env(cap, b) for b in runnable}
    page_cache_dropped = drop_page_cache()  # every backend's files as read from disk (see drop_page_cache)
    with progress(f"starting {len(runnable)} backends, each in its own process"):
        for b in runnable:
            art = artifacts.get(b, artifacts[""])
            workers[b] = _Worker(b, art, work / "x.npy", work / f"{b}.npz", threads, env_of[b])
        for b, w in workers.items():
            results[b].load_s = w.read()["load_s"]
            settle(w.proc.pid)
    with progress(f"{rounds} rounds, interleaved across {', '.join(runnable)}"):
        for r in range(rounds):
            order = runnable[r % len(runnable):] + runnable[: r % len(runnable)]
            for b in order:
                results[b].latencies_ms.append(workers[b].send("run")["ms"])
                results[b].cpu_after_ms.append(settle(workers[b].proc.pid) * 1e3)  # before the next one is timed
            progress.log(f"round {r + 1}/{rounds}: " + ", ".join(
                f"{b} {results[b].latencies_ms[-1]:.1f} ms" for b in runnable))
        for b, w in workers.items():
            results[b].peak_rss_mb = w.send("quit")["peak_rss_mb"]
            w.proc.wait(timeout=60)
    with progress("accuracy against MXNet, sizes, end-to-end frames/s"):
        outputs = {b: dict(np.load(work / f"{b}.npz")) for b in runnable}
        reference_name = next((b for b in ("mxnet", "mxnet-hybrid") if b in outputs), None)
        if reference_name is None and manifest.task == "detection":
            progress.log("no MXNet backend ran: accuracy not measured")
        ref = outputs.get(reference_name)
        ref_dets = decode_detections(ref, manifest.decode) if ref is not None and manifest.task == "detection" else None
        for b in runnable:
            res = results[b]
            if ref is not None:
                res.max_abs_diff = float(max(np.abs(outputs[b][k] - ref[k]).max() for k in ref))
            if ref_dets is not None:
                dets = decode_detections(outputs[b], manifest.decode)
                m = match(ref_dets, dets, iou_threshold=0.5)
                res.detections, res.detections_matched = len(dets), len(m.pairs)
                res.same_classes = len(dets) == len(ref_dets) == len(m.pairs)
            art = artifacts.get(b, artifacts[""])
            model_files = {"onnxruntime": [manifest.reference["onnx"]], "openvino": [manifest.reference["onnx"]],
                           "openvino-int8": [f"{OPENVINO_INT8}.xml", f"{OPENVINO_INT8}.bin"],
                           "mxnet": [manifest.reference["mxnet_symbol"], manifest.reference["mxnet_params"]],
                           "mxnet-hybrid": [manifest.reference["mxnet_symbol"], manifest.reference["mxnet_params"]]
                           }.get(b, [manifest.library, manifest.params])
            res.disk_mb = sum(_package_mb(p) for p in _PACKAGES[b]) + sum(_tree_mb(art / f) for f in model_files)
            if e2e_frames:
                res.end_to_end_fps, res.end_to_end_peak_rss_mb = _e2e(b, art, e2e_frames, env_of[b])
    report = {"model": model, "target": target, "input_shape": list(manifest.input.shape), "weights":
              manifest.weights, "image": str(image or DEFAULT_IMAGE), "rounds": rounds, "threads": threads,
              "gflop_per_frame": round(gflop, 3), "machine": {**machine(), "page_cache_dropped": page_cache_dropped},
              "isa_cap": cap,
              "tuning_records": records_summary(records["tvm-tuned"]) if "tvm-tuned" in artifacts else None,
              "direct_records": records_summary(records["tvm-direct"]) if records.get("tvm-direct") else None,
              "int8_records": records_summary(records["tvm-int8"]) if records.get("tvm-int8") else None,
              "quantization": read_manifest(artifacts["tvm-int8"]).quantization if "tvm-int8" in artifacts else None,
              "openvino_quantization": openvino_int8,
              "results": [results[b].row(gflop) for b in backends]}
    write_report(report, Path(out))
    return report


def _tuned_artifact(result: BackendResult, out: Path, weights: Weights, input_size: int | None, target: str,
                    progress: Progress, int8: bool, conv_kernels: str = "direct") -> Path | None:
    """Compile ``result.model`` with its shipped records (float32 or int8) into ``out``, or mark ``result`` skipped and
    why (no int8 path for the target; no records, where the convolutions need them: a direct build without records is
    what `edgecv compile` does then too). Returns the records used, if any."""
    model = result.model
    default_size = resolve_model(model).input_size
    if int8:
        from edgecv.compile.quantize import int8_kernel
        from edgecv.compile.targets import resolve_target
        from edgecv.edge.cpu import host_cpu_flags

        try:
            int8_kernel(resolve_target(target), host_cpu_flags())
        except EdgecvError as exc:
            result.status, result.reason = "skipped", str(exc)
            return None
    records = find_shipped_records(model, input_size, default_size, target, int8)
    if records is None and conv_kernels == "metaschedule":
        result.status = "skipped"
        result.reason = (f"no tuning records in {shipped_records(model, input_size, default_size, target, int8)}"
                         f": run `edgecv tune {model} --target {target}{' --int8' if int8 else ''} "
                         "--conv-kernels metaschedule`")
        return None
    with progress(f"compiling {model}{' in int8' if int8 else ''} ({conv_kernels} convolutions) with "
                  + (f"the tuning records in {records}" if records else "no tuning records")):
        compile_model(CompileRequest(model=model, target=target, out=out, weights=weights, input_size=input_size,
                                     tuning_records=records, use_shipped_records=False, int8=int8,
                                     conv_kernels=conv_kernels), Progress(0, quiet=True))
    return records


def _openvino_int8(result: BackendResult, artifact: Path, progress: Progress) -> str | None:
    """NNCF's int8 of the artifact's ONNX graph, beside it: how it was made, or None with ``result`` marked
    skipped and why."""
    from edgecv.compile.openvino_int8 import describe, write_openvino_int8

    with progress("quantizing the ONNX graph for openvino-int8 with NNCF (post-training, on vtest.avi frames)"):
        try:
            return describe(write_openvino_int8(artifact, log=progress.log))
        except EdgecvError as exc:
            result.status, result.reason = "skipped", str(exc)
            return None


def records_summary(records: Path) -> dict:
    """What the tvm-tuned artifact was tuned with: the records folder, and where and how it was tuned."""
    from edgecv.compile.tune import METADATA

    meta = json.loads((records / METADATA).read_text()) if (records / METADATA).is_file() else {}
    tasks = meta.get("tasks", {})
    sessions = meta.get("sessions", [])
    return {"folder": f"{records.parent.name}/{records.name}",
            "tasks_with_records": sum(1 for t in tasks.values() if t.get("best_us")),
            "trials": sum(t.get("trials", 0) for t in tasks.values()),
            "tuned_on": sorted({f"{s['machine']['cpu']} ({s['machine'].get('llvm_cpu')})" for s in sessions
                                if s.get("machine")})}


def _ratio(rows: dict, a: str, b: str) -> str | None:
    if rows.get(a, {}).get("p50_ms") and rows.get(b, {}).get("p50_ms"):
        return f"{rows[a]['p50_ms'] / rows[b]['p50_ms']:.2f}"
    return None


def _ratio_table(rows: dict) -> list[str]:
    """edgecv's artifacts' p50 over each other runtime's, one row per artifact, one column per runtime."""
    mine = [t for t in COMPILED if rows.get(t, {}).get("p50_ms")]
    others = [b for b in OTHERS if rows.get(b, {}).get("p50_ms")]
    if not mine or not others:
        return []
    return ["", "p50 latency ratios, edgecv's artifact / the other runtime (below 1: edgecv's is faster):", "",
            "| artifact | " + " | ".join(f"/ {b}" for b in others) + " |", "|---" * (len(others) + 1) + "|",
            *(f"| {t} | " + " | ".join(_ratio(rows, t, b) for b in others) + " |" for t in mine)]


def _isa_cap_note(cap: dict | None, target: str) -> str:
    if not cap:
        return ""
    how = (f"this CPU's {', '.join(cap['cpuid_hidden'])} hidden from every backend's process (CPUID masked)"
           if cap["cpuid_hidden"] else "nothing above it on this CPU" if not cap["cpuid_why_not"] else
           f"oneDNN's only, with ONEDNN_MAX_CPU_ISA={cap['onednn_max_cpu_isa']} ({cap['cpuid_why_not']})")
    return (f" Held to {target}'s ISA like the artifact: {how}; held: {', '.join(cap['capped']) or 'none'}"
            + (f"; NOT held (they use what this CPU has): {', '.join(cap['not_capped'])}" if cap["not_capped"] else "")
            + ".")


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stem = f"bench-{report['model']}-{report['target']}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    rows = {r["backend"]: r for r in report["results"]}
    m = report["machine"]
    lines = [f"# {report['model']} on {report['target']} ({m['date']})", "",
             f"{m['cpu']} (LLVM: {m['llvm_cpu']}; ISA: {' '.join(m.get('isa') or ['?'])}), {m['cores']} cores, "
             f"Python {m['python']}; "
             + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v) + "."
             + (f" {page_cache_note(m['page_cache_dropped'])}." if "page_cache_dropped" in m else ""),
             f"Input {report['input_shape']}, weights {report['weights']}, {report['rounds']} interleaved rounds "
             "(each call timed once the previous backend's threads were all asleep), "
             f"{report['gflop_per_frame']} GFLOP per frame."
             + ("" if not report.get("tuning_records") else
                " tvm-tuned: records {folder} ({tasks_with_records} tasks, {trials} trials, tuned on {on}).".format(
                    on=", ".join(report["tuning_records"]["tuned_on"]) or "?", **report["tuning_records"]))
             + ("" if not report.get("direct_records") else
                " tvm-direct: direct convolutions, records {folder} for the other kernels.".format(
                    **report["direct_records"]))
             + ("" if not report.get("int8_records") else
                " tvm-int8: {q}, direct convolutions; records {folder} for the other kernels.".format(
                    q=report.get("quantization"), **report["int8_records"]))
             + ("" if not report.get("openvino_quantization") else f" openvino-int8: {report['openvino_quantization']}.")
             + _isa_cap_note(report.get("isa_cap"), report["target"]),
             "",
             "| backend | p50 ms | p90 ms | p99 ms | fps | GFLOP/s | CPU ms after each call | load s | peak RSS MB "
             "| disk MB | max abs diff | detections (matched) | end-to-end fps | end-to-end peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        if r["status"] != "ok":
            lines.append(f"| {r['backend']} | skipped: {r['reason']} |||||||||||||")
            continue
        dets = "" if r["detections"] is None else f"{r['detections']} ({r['detections_matched']})"
        diff = "" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.2e}"
        lines.append(f"| {r['backend']} | {r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} | {r['fps']} | "
                     f"{r['gflops_per_s']} | {r['cpu_after_call_ms']} | {r['load_s']} | {r['peak_rss_mb']} | "
                     f"{r['disk_mb']} | {diff} | {dets} | "
                     f"{r['end_to_end_fps'] or ''} | {r.get('end_to_end_peak_rss_mb') or ''} |")
    lines += _ratio_table(rows)
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    _chart(report, out / f"{stem}.png")


def _chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if r["status"] == "ok"]
    if not rows:
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    names = [r["backend"] for r in rows]
    a.bar(names, [r["p50_ms"] for r in rows], color="#4c72b0")
    a.set_ylabel("p50 latency (ms, log)")
    a.set_yscale("log")
    b.bar(names, [r["peak_rss_mb"] for r in rows], color="#dd8452")
    b.set_ylabel("peak RSS (MB)")
    for ax in (a, b):
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"{report['model']} on {report['machine']['cpu']} ({report['machine']['cores']} cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
