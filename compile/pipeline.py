"""``compile_model``: MODEL + TARGET -> a verified artifact folder (and its .tar.gz), atomically.

Steps: load the MXNet model -> export ONNX -> build with TVM -> write manifest + checksums ->
verify against MXNet. Builds are cached under ``~/.cache/edgecv/compiled/<key>``, keyed by a hash of
every input (model, weights, input size, target, tuning records, TVM version, this package's
source), so a re-run with the same inputs copies the artifact instead of rebuilding it.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import edgecv
from edgecv.compile.progress import Progress
from edgecv.compile.targets import TargetPreset, resolve_target
from edgecv.compile.weights import Weights
from edgecv.compile.zoo import ModelSpec, resolve_model
from edgecv.edge.artifact import (CONV_KERNELS, MANIFEST, InputSpec, Manifest, OutputSpec, TargetSpec,
                                  load_manifest, sha256_file)
from edgecv.edge.cpu import host_cpu_flags
from edgecv.edge.errors import ArtifactError, EdgecvError, VerificationError

LIBRARY = "model.so"
PARAMS = "params.npz"


def cache_root() -> Path:
    return Path(os.environ.get("EDGECV_CACHE", Path.home() / ".cache" / "edgecv"))


@dataclass(frozen=True)
class CompileRequest:
    model: str
    target: str
    out: Path
    weights: Weights
    input_size: int | None = None
    tuning_records: Path | None = None
    verify: bool = False
    verify_images: tuple[str, ...] | None = None
    classes: tuple[str, ...] | None = None
    use_cache: bool = True
    keep_reference: bool = False
    use_shipped_records: bool = True  # models/records/<model>[-<size>]/<target>/ when no --tuning-records
    decoder: str | None = None        # an ONNX detector's decoder plug-in (compile/onnx_input.py)
    int8: bool = False                # full convolutions in int8 (AVX-512 VNNI; compile/quantize.py)
    calibration: str | None = None    # int8: video/folder/glob of images to calibrate on (default: vtest.avi)
    conv_kernels: str = "direct"      # float32 convolutions: edgecv's direct kernels, or "metaschedule" (records')


@dataclass
class CompileResult:
    out: Path
    archive: Path
    manifest: Manifest
    cached: bool
    verify_report: object | None = None


# The code that shapes an artifact: a change here invalidates cached builds (and nothing else does).
_SHAPING_CODE = ("compile/heads.py", "compile/weights.py", "compile/gluon.py", "compile/onnx_export.py",
                 "compile/onnx_input.py", "compile/build.py", "compile/targets.py", "compile/pipeline.py",
                 "compile/zoo.py", "compile/leftovers.py", "compile/quantize.py", "compile/direct.py",
                 "compile/rewrite.py", "edge/artifact.py")


def _source_digest() -> str:
    # compile/ and edge/ are siblings both in the repository and installed (edgecv/compile, edgecv/edge)
    top = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for rel in _SHAPING_CODE:
        digest.update(rel.encode() + (top / rel).read_bytes())
    return digest.hexdigest()


RECORDS_DB = ("database_workload.json", "database_tuning_record.json")  # MetaSchedule's JSONDatabase files

# x86 records are kept per vector ISA, not per CPU model: MetaSchedule applies a record to any target (it matches
# the workload, not the CPU), and what a schedule is tuned for is the vector width. The host preset ``x86_64``
# looks in its own ISA's folder first, then in the other (a schedule tuned for AVX2 still runs on an AVX-512 CPU,
# and the other way round: far faster than untuned). ``x86-64-v3`` (AVX2, FMA) is written by `edgecv tune
# --target x86_64` on a CPU without AVX-512 and by the preset of that name; ``skylake-avx512`` by the preset of
# that name or by x86_64 on an AVX-512 CPU. The artifact is still compiled for the host's own CPU.
# ARM boards use their own records (tuned on the board, `edgecv tune --rpc-tracker`), then generic aarch64 ones,
# then the AVX2 ones transferred (``TRANSFERRED``): no emulator measures ARM time, and an AVX2 schedule's register
# tiles (sixteen 8-float registers) fit NEON's (thirty-two 4-float registers), where AVX-512's would spill.
X86_RECORDS = {"skylake-avx512": ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"),
               "x86-64-v3": ("avx2", "fma")}
TRANSFERRED = "x86-64-v3"
# presets whose float32 code is another's, and so its records: AVX-VNNI adds an int8 instruction, nothing else
SAME_FLOAT_CODE = {"x86-64-v3-vnni": "x86-64-v3"}


def records_levels(target: str, flags: frozenset[str] | None = None, int8: bool = False) -> list[str]:
    """The records folders a target preset uses, best first; `edgecv tune` writes to the first. An int8 model has
    only its kernel's (``quantize.INT8_KERNELS``): its schedules call that kernel's instruction, which no other
    CPU family has."""
    flags = host_cpu_flags() if flags is None else flags
    if int8:
        from edgecv.compile.quantize import INT8_KERNELS, int8_kernel

        kernel = int8_kernel(resolve_target(target), flags)
        return [kernel.records, *([INT8_KERNELS[kernel.transfers].records] if kernel.transfers else [])]
    target = SAME_FLOAT_CODE.get(target, target)
    if target == "x86_64":
        own = next((level for level, needs in X86_RECORDS.items() if set(needs) <= flags), "x86_64")
        return [own, *(level for level in X86_RECORDS if level != own)]
    if target in X86_RECORDS:
        return [target, *(level for level in X86_RECORDS if level != target)]
    if resolve_target(target).arch == "aarch64":
        return list(dict.fromkeys([target, "aarch64", TRANSFERRED]))
    return [target, TRANSFERRED]


def records_root(model: str, input_size: int | None, default_size: int) -> Path:
    folder = model if input_size in (None, default_size) else f"{model}-{input_size}"
    return Path(__file__).resolve().parent.parent / "models" / "records" / folder


def shipped_records(model: str, input_size: int | None, default_size: int, target: str, int8: bool = False) -> Path:
    """Where `edgecv tune` writes the records for a model, input size and target preset in the repository."""
    return records_root(model, input_size, default_size) / records_levels(target, int8=int8)[0]


def find_shipped_records(model: str, input_size: int | None, default_size: int, target: str,
                         int8: bool = False) -> Path | None:
    """The shipped records a compile for this target applies: the first of its folders that has records."""
    root = records_root(model, input_size, default_size)
    return next((root / level for level in records_levels(target, int8=int8)
                 if (root / level / RECORDS_DB[1]).is_file()), None)


def _records_digest(records: Path | None) -> str | None:
    if records is None:
        return None
    if not Path(records).is_dir():
        raise EdgecvError(f"tuning records folder not found: {records}", "pass a folder written by `edgecv tune`")
    digest = hashlib.sha256()
    for name in RECORDS_DB:  # the database only: tune's metadata beside it doesn't change the build
        path = Path(records) / name
        digest.update(name.encode() + (path.read_bytes() if path.is_file() else b""))
    return digest.hexdigest()


def _weights_id(weights: Weights) -> str:
    """What the weights are, by content: the manifest's ``weights`` and part of the cache key."""
    if weights.params_file is not None:
        path = Path(weights.params_file)
        return f"file:{path.name} sha256:{sha256_file(path)}" if path.is_file() else f"file:{path}"
    return weights.describe()


def cache_key(spec: ModelSpec, req: CompileRequest, target_spec: dict, records: str | None, kernel=None) -> str:
    import tvm

    parts = {"model": spec.name, "symbol": sha256_file(spec.symbol_file) if spec.symbol_file else None,
             "onnx": sha256_file(spec.onnx_file) if spec.onnx_file else None, "decode": spec.decode,
             "class_names": spec.class_names(),
             "weights": _weights_id(req.weights), "input_size": req.input_size or spec.input_size,
             "target": target_spec, "records": records, "classes": req.classes, "reference": req.keep_reference,
             "int8": _calibration_id(req), "int8_kernel": kernel.name if kernel else None,
             "conv_kernels": req.conv_kernels,
             "tvm": tvm.__version__,
             "edgecv": edgecv.__version__, "source": _source_digest()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _manifest(spec: ModelSpec, model, target: TargetPreset, tvm_target: dict, folder: Path, weights: Weights,
              records: str | None, reference: dict[str, str] | None, quantization: str | None = None,
              kernel=None, conv_kernels: str | None = None) -> Manifest:
    import tvm

    shapes = [tuple(int(d) for d in a.shape) for a in model.raw(_zeros(model.input_shape)).values()]
    outputs = tuple(OutputSpec(name=o.name, shape=s, description=o.description)
                    for o, s in zip(model.family.outputs, shapes))
    return Manifest(
        model=spec.name, task=model.family.task,
        target=TargetSpec(name=target.name, arch=target.arch, tvm=tvm_target,
                          cpu_features=target.cpu_features(tvm_target)),
        input=input_spec(spec, model), quantization=quantization, int8_kernel=kernel.name if kernel else None,
        conv_kernels=conv_kernels,
        outputs=outputs, decode=model.decode, classes=model.classes, groups=spec.groups,
        library=LIBRARY, params=PARAMS,
        files={name: sha256_file(folder / name) for name in [LIBRARY, PARAMS, *(reference or {}).values()]},
        weights=_weights_id(weights), tuning=records, reference=reference,
        tvm_version=tvm.__version__, edgecv_version=edgecv.__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))


def input_spec(spec: ModelSpec, model) -> InputSpec:
    return InputSpec(name="data", shape=model.input_shape, color=spec.color, mean=spec.mean, std=spec.std,
                     resize=spec.resize)


def _calibration_id(req: CompileRequest) -> str | None:
    if not req.int8:
        return None
    from edgecv.compile.quantize import calibration_id

    return calibration_id(req.calibration)


def _quantization(req: CompileRequest, kernel) -> str | None:
    if kernel is None:
        return None
    from edgecv.compile.quantize import DEFAULT_CALIBRATION

    return (f"int8 convolutions ({kernel.activations} activations per tensor, weights per channel in "
            f"+-{kernel.weight_max}, "
            f"{kernel.name} dot product) and uint8 inputs to the depthwise convolutions with large ones, calibrated "
            f"on {Path(req.calibration or DEFAULT_CALIBRATION).name}")


def _zeros(shape):
    import numpy as np

    return np.zeros(shape, np.float32)


def _check_out(out: Path) -> None:
    if out.exists() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise ArtifactError(f"--out {out} exists and is not an edgecv artifact",
                            "choose a new or empty folder (an existing artifact folder is replaced)")


def _publish(tmp: Path, out: Path) -> Path:
    """Move the finished folder into place and write ``<out>.tar.gz``; never a half-written --out."""
    archive = out.with_name(out.name + ".tar.gz")
    tmp_archive = tmp.with_name(tmp.name + ".tar.gz")
    with tarfile.open(tmp_archive, "w:gz") as tar:
        tar.add(tmp, arcname=out.name)
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    os.replace(tmp_archive, archive)
    shutil.rmtree(old, ignore_errors=True)
    return archive


def _shipped_weights(spec: ModelSpec, req: CompileRequest) -> CompileRequest:
    """A model shipped with its weights (a checkpoint or ONNX graph in models/) uses them unless told otherwise."""
    if not spec.brings_weights:
        return req
    if req.weights.pretrained or req.weights.random_seed is not None:
        raise EdgecvError(f"{spec.name} brings its own weights", "drop --pretrained/--random-weights")
    if spec.is_onnx:
        if req.weights.params_file is not None:
            raise EdgecvError(f"{spec.name} is an ONNX graph with its weights inside", "drop --weights")
        return dataclasses.replace(req, weights=Weights(params_file=spec.onnx_file))
    if req.weights.params_file is None:
        return dataclasses.replace(req, weights=Weights(params_file=spec.params_file))
    return req


def load_model(spec: ModelSpec, req: CompileRequest, log=lambda m: None):
    """The compile step's source model: MXNet (GluonCV, a checkpoint) or an ONNX graph (ONNX Runtime)."""
    if spec.is_onnx:
        from edgecv.compile.onnx_input import load_onnx_model

        return load_onnx_model(spec, req.classes)
    from edgecv.compile.gluon import load_source_model

    return load_source_model(spec, req.weights, req.input_size, log, req.classes)


def check_conv_kernels(conv_kernels: str) -> None:
    if conv_kernels not in CONV_KERNELS:
        raise EdgecvError(f"unknown convolution kernels {conv_kernels!r}", f"use one of {', '.join(CONV_KERNELS)}")


def compile_model(req: CompileRequest, progress: Progress | None = None) -> CompileResult:
    check_conv_kernels(req.conv_kernels)
    spec = resolve_model(req.model, req.decoder)
    req = _shipped_weights(spec, req)
    target = resolve_target(req.target)
    target.fcompile()  # a missing cross compiler is reported before any slow work
    out = Path(req.out).resolve()
    _check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    progress = progress or Progress(0)
    not_here = target.why_not_here()
    steps = 4 + (1 if req.verify and not not_here else 0) + (1 if req.int8 else 0)
    progress.total = steps
    kernel = None
    if req.int8:
        from edgecv.compile.quantize import int8_kernel

        kernel = int8_kernel(target, host_cpu_flags())
        progress.log(f"int8 kernel: {kernel.name} ({kernel.intrin})")
    if req.tuning_records is None and req.use_shipped_records:
        shipped = find_shipped_records(spec.name, req.input_size, spec.input_size, target.name, req.int8)
        if shipped is not None:
            progress.log(f"using the tuning records shipped in {shipped}"
                         + ("" if req.int8 else _records_note(target, shipped.name)))
            if kernel is not None:
                check_records_isa(shipped, target, kernel, progress.log)
            req = dataclasses.replace(req, tuning_records=shipped)
        else:
            progress.log(f"no tuning records for {target.name}{' int8' if req.int8 else ''} in "
                         f"{shipped_records(spec.name, req.input_size, spec.input_size, target.name, req.int8)}: "
                         "kernels get a basic schedule (slow; `edgecv tune` makes records)")
    elif req.tuning_records is not None:
        check_records_isa(req.tuning_records, target, kernel, progress.log)
    records = _records_digest(req.tuning_records)
    tvm_target = _tvm_target(target)
    key = cache_key(spec, req, tvm_target, records, kernel)
    cached_dir = cache_root() / "compiled" / key
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; an artifact is meant to be shared
    try:
        cached = req.use_cache and (cached_dir / MANIFEST).is_file()
        model = None
        if cached:
            progress.log(f"reusing cached build {cached_dir} (same model, weights, target, records, code)")
            shutil.copytree(cached_dir, tmp, dirs_exist_ok=True)
        if not cached or req.verify:
            with progress(f"loading {spec.name} in {'ONNX Runtime' if spec.is_onnx else 'MXNet'} "
                          f"({req.weights.describe()})"):
                model = load_model(spec, req, progress.log)
        if not cached:
            _build(model, spec, target, req, tmp, tvm_target, records, progress, kernel)
            _store_in_cache(tmp, cached_dir)
        else:
            for _ in range(3):
                progress.step += 1
        manifest = load_manifest(tmp, arch=target.arch)
        report = None
        if req.verify and not not_here:
            report = _verify(model, tmp, req, progress)
        elif req.verify:
            progress.log(f"--verify skipped: {not_here} (verify it where it runs; the tests run ARM artifacts "
                         "under qemu)")
        archive = _publish(tmp, out)
        return CompileResult(out, archive, manifest, cached, report)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        Path(str(tmp) + ".tar.gz").unlink(missing_ok=True)


def _records_note(target: TargetPreset, level: str) -> str:
    own = records_levels(target.name)[0]
    if level == TRANSFERRED and target.arch != "x86_64":
        return (f"\nwarning: these records are tuned on an x86 CPU with AVX2 and transferred to {target.name}: its "
                f"kernels are scheduled for the same register tiles, but not tuned on a {target.arch} CPU (tune on "
                f"the board: `edgecv tune --target {target.name} --rpc-tracker HOST:PORT --rpc-key KEY`)")
    if level != own:
        return (f"\nwarning: these records are tuned for {level}; there are none for {own} yet: they run on any "
                f"{target.arch} CPU, but are not tuned for this one (`edgecv tune --target {target.name}` makes them)")
    if target.name in SAME_FLOAT_CODE:
        return f" ({level}'s: {target.name} runs the same float32 code)"
    if level != target.name:
        return " (this CPU's ISA level; the library is compiled for this CPU)"
    return ""


def records_tuned_for(records: Path) -> set[str]:
    """What a records folder was tuned for, from its ``edgecv-tuning.json``: ISA levels (``records_levels``' names)
    for float32 records, int8 kernel names for int8 ones; empty if it doesn't say."""
    from edgecv.compile.quantize import INT8_KERNELS
    from edgecv.compile.tune import METADATA

    path = Path(records) / METADATA
    try:
        sessions = json.loads(path.read_text()).get("sessions", []) if path.is_file() else []
    except (OSError, ValueError):
        return set()
    by_preset = {k.preset: k.name for k in INT8_KERNELS.values()}
    tuned = set()
    for session in sessions:
        preset = (session.get("target") or {}).get("preset")
        if session.get("int8_kernel") or Path(records).name.endswith("-int8"):
            tuned.add(session.get("int8_kernel") or by_preset.get(preset, preset))
        elif preset == "x86_64":
            tuned.add(records_levels("x86_64", frozenset((session.get("machine") or {}).get("flags", ())))[0])
        elif preset:
            tuned.add(records_levels(preset)[0])
    return tuned


def check_records_isa(records: Path, target: TargetPreset, kernel, log) -> None:
    """Records given with --tuning-records (or shipped, for int8): an int8 build refuses another kernel's (their
    schedules call its instruction) except the one it transfers from (``Int8Kernel.transfers``: with a warning);
    a float32 build uses another ISA level's with a warning."""
    tuned = records_tuned_for(records)
    if not tuned:
        return
    if kernel is not None:
        if kernel.name not in tuned and kernel.transfers in tuned:
            log(f"warning: the records in {records} are tuned for the {kernel.transfers} int8 kernel and applied with "
                f"{kernel.name}'s dot product (the same schedules around another instruction): not tuned for it "
                f"(`edgecv tune --int8 --target {kernel.preset}` on such a CPU makes them)")
        elif kernel.name not in tuned:
            raise EdgecvError(f"the records in {records} are tuned for the {', '.join(sorted(tuned))} int8 kernel; "
                              f"this build uses {kernel.name}, whose schedules differ",
                              f"pass records tuned with `edgecv tune --int8 --target {kernel.preset}`, or none")
        return
    own = records_levels(target.name)[0]
    if own not in tuned:
        log(f"warning: the records in {records} are tuned for {', '.join(sorted(tuned))}, not {own}: they apply, "
            f"but are not tuned for this target")


def _tvm_target(target: TargetPreset) -> dict:
    return target.tvm_target()


def _build(model, spec, target, req, folder: Path, tvm_target, records, progress, kernel=None) -> None:
    from edgecv.compile.build import build_library
    from edgecv.compile.onnx_export import export_onnx

    reference = None
    with tempfile.TemporaryDirectory(prefix="edgecv-onnx-") as work:
        onnx_path = Path(work) / "model.onnx"
        with progress("exporting to ONNX and folding shapes (onnxsim)"):
            model.write_onnx(onnx_path) if hasattr(model, "write_onnx") else export_onnx(model, onnx_path)
        plan = None
        if kernel is not None:
            from edgecv.compile.quantize import DEFAULT_CALIBRATION, Int8Plan, calibrate, calibration_inputs

            with progress(f"calibrating int8 ranges on {req.calibration or DEFAULT_CALIBRATION}"):
                plan = Int8Plan(calibrate(onnx_path, "data", calibration_inputs(req.calibration,
                                                                                input_spec(spec, model)),
                                          progress.log), kernel)
        with progress(f"compiling with TVM for {target.name} ({target.arch})"
                      + (", int8" if req.int8 else "")
                      + (" with tuning records" if req.tuning_records else " (untuned)")):
            build_library(onnx_path, "data", model.input_shape, target, folder / LIBRARY, folder / PARAMS,
                          req.tuning_records, progress.log, plan, direct=req.conv_kernels == "direct")
        if req.keep_reference:
            reference = _write_reference(model, onnx_path, folder)
    with progress("writing manifest.json with checksums"):
        manifest = _manifest(spec, model, target, tvm_target, folder, req.weights, records, reference,
                             _quantization(req, kernel), kernel, req.conv_kernels)
        (folder / MANIFEST).write_text(manifest.to_json())


def _write_reference(model, onnx_path: Path, folder: Path) -> dict[str, str]:
    """The same graph uncompiled, for the ONNX Runtime and MXNet reference backends (bench, checks)."""
    shutil.copy(onnx_path, folder / "reference.onnx")
    if not hasattr(model, "raw_symbols"):  # an ONNX source: there is no MXNet graph
        return {"onnx": "reference.onnx"}
    import mxnet as mx

    mx.sym.Group(model.raw_symbols).save(str(folder / "reference-symbol.json"))
    mx.nd.save(str(folder / "reference-0000.params"),
               {("aux:" if k in model.aux_names else "arg:") + k: v for k, v in model.params.items()})
    return {"onnx": "reference.onnx", "mxnet_symbol": "reference-symbol.json", "mxnet_params": "reference-0000.params"}


def _store_in_cache(folder: Path, cached_dir: Path) -> None:
    cached_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=cached_dir.parent))
    shutil.copytree(folder, staging, dirs_exist_ok=True)
    try:
        staging.rename(cached_dir)
    except OSError:  # another process stored the same build first
        shutil.rmtree(staging, ignore_errors=True)


def _verify(model, folder: Path, req: CompileRequest, progress):
    from edgecv.compile.verify import read_images, verify
    from edgecv.edge.runtime import TvmModel

    images = read_images(list(req.verify_images) if req.verify_images else None)
    source = getattr(model, "reference_name", "MXNet")
    with progress(f"verifying compiled vs {source} on {len(images)} real images"):
        report = verify(model, TvmModel(folder), images)
    report.exact = not req.int8  # 8-bit steps differ from float32 by design: shown, not failed
    if not report.ok and not report.exact:
        progress.log(f"int8 differs from {source} (max |diff| {report.max_abs_diff:.2e}), as quantization does; "
                     "its accuracy on labelled images: `edgecv eval ARTIFACT`")
        return report
    if not report.ok:
        print(report.summary())
        raise VerificationError(f"compiled {model.spec.name} differs from {source} beyond float tolerance "
                                f"(max |diff| {report.max_abs_diff:.2e})",
                                "see the per-image lines above; nothing was written to --out")
    return report
