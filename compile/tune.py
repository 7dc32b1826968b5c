"""``edgecv tune``: MetaSchedule tuning, one task at a time, into the JSON database ``edgecv compile`` applies.

The tasks are the PrimFuncs of the Relax module ``build.py`` compiles, after the passes
``static_shape_tuning_pipeline`` runs before it tunes, so ``MetaScheduleApplyDatabase`` finds every record
(``database_workload.json`` / ``database_tuning_record.json`` in the records folder).

Why not ``static_shape_tuning_pipeline(total_trials=N)`` itself (measured, see the tuning notes): its task
scheduler writes nothing until every task has had a round, and it also tunes the huge fused decoder functions,
whose search stalls for minutes for little run time. Here each task is ``tune_tasks([task])`` on a shared
database, committed when it ends: a run can stop at any time and resume, skipping tasks that have records.
The slowest tasks (timed untuned first) go first, so a time budget is spent where the milliseconds are.
"""
from __future__ import annotations

import datetime as _dt
import functools
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edgecv.compile.progress import Progress
from edgecv.compile.targets import TargetPreset, resolve_target
from edgecv.compile.weights import Weights
from edgecv.edge.errors import EdgecvError, TargetError

METADATA = "edgecv-tuning.json"   # beside the database: where, on what CPU, for what target, per-task results
SCHEMA = "edgecv.tuning/1"
MAX_FUSED_BLOCKS = 8              # more blocks and no reduction: a fused decoder/concat function, left untuned
TRIALS_PER_BATCH = 16             # candidates measured per search round; the cost model learns between rounds
INVALID_SECONDS = 1e9             # MetaSchedule records a failed build or run as 1e10 s or more
NOT_WORTH_SECONDS = 2e-6          # untuned, all calls of a task take less (a no-op reshape): not tuned
NOT_WORTH = "nothing to gain: it takes almost no time untuned"
DIRECT_KERNEL = "a direct convolution: compile gives it its own schedule (compile/direct.py, int8: leftovers.py)"


@dataclass
class Task:
    name: str
    mod: object          # the task's IRModule (one PrimFunc, "main")
    calls: int           # how many times the model calls it
    flops: float         # per call
    blocks: int
    skip: str | None = None
    untuned: float | None = None   # seconds per call without a schedule (what compile does without records)
    best: float | None = None      # seconds per call of its best record so far, if it has one

    @property
    def total_flops(self) -> float:
        return self.flops * self.calls

    def priority(self) -> tuple:
        """Slowest first: time x calls, as it runs now (its best record, else untuned: a depthwise conv is slow
        for its FLOPs), else FLOPs. Tuning again (--restart) thus starts where the model spends its time."""
        now = self.best or self.untuned
        return (now is None, -(now or 0) * self.calls, -self.total_flops, self.name)


# ---- What runs in MetaSchedule's builder processes (pickled by reference: this module must import light) ----

def load_tensor_intrinsics(target) -> None:
    """Register only the tensor intrinsics of the target's CPU family.

    ``import tvm.s_tir.tensor_intrin`` (done by every TuneContext and by the default builder in each of its
    worker processes, which restart every batch) parses the CUDA, ROCm and Hexagon intrinsics too: on a 2-core
    machine nearly the builder's whole 30 s timeout, so candidates failed. The package is registered
    without running its ``__init__``, then the one submodule the target needs is imported.
    """
    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        return
    package = importlib.util.module_from_spec(importlib.util.find_spec(name))
    sys.modules[name] = package
    keys = set(str(k) for k in target.keys) if hasattr(target, "keys") else set()
    mtriple = str(target.attrs.get("mtriple", "")) if hasattr(target, "attrs") else ""
    if "arm_cpu" in keys or mtriple.startswith(("aarch64", "arm")):
        importlib.import_module(name + ".arm_cpu")
    elif "cpu" in keys:
        importlib.import_module(name + ".x86")
        from edgecv.compile.quantize import register_int8_intrinsics

        register_int8_intrinsics()
    else:  # not a CPU: everything, as TVM does
        del sys.modules[name]
        importlib.import_module(name)


def build_candidate(mod, target, _params):
    """MetaSchedule's default build, with only this target's tensor intrinsics loaded."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    from edgecv.compile.quantize import serial_tensorized

    load_tensor_intrinsics(target)
    return tvm_build(serial_tensorized(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)), target=target)


def export_shared_library(rt_mod, cross_compiler: str | None = None) -> str:
    """A linked .so for the RPC runner (the board needs no compiler), cross-linked for ARM boards."""
    import tvm.support.cc

    path = os.path.join(tempfile.mkdtemp(prefix="edgecv-tune-"), "candidate.so")
    if cross_compiler:
        rt_mod.export_library(path, fcompile=tvm.support.cc.cross_compiler(cross_compiler))
    else:
        rt_mod.export_library(path)
    return path


# ---- Tasks ----

def extract_tasks(mod, target, prepack: bool) -> list[Task]:
    """The tasks ``static_shape_tuning_pipeline`` would tune in ``mod``, heaviest first, huge fused ones marked skip.

    The passes are the ones ``build.apply_records`` runs before ``MetaScheduleApplyDatabase``: the backend's
    library dispatch, then what ``static_shape_tuning_pipeline`` runs before ``MetaScheduleTuneIRMod``
    (tvm/relax/pipeline.py), so each task is the PrimFunc compile will look up. With ``prepack`` the weights'
    layouts are marked free, so the search also chooses how each convolution's weights are laid out.
    """
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.s_tir import Schedule
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.analysis import estimate_tir_flops

    from edgecv.compile.direct import is_direct

    with target:
        lowered = tvm.transform.Sequential([*cpu.library_dispatch_passes(target),
                                            relax.transform.DecomposeOpsForInference(),
                                            relax.transform.CanonicalizeBindings(),
                                            relax.pipeline.zero_pipeline(),
                                            *([relax.transform.AttachAttrLayoutFreeBuffers()] if prepack else [])])(mod)
    tasks = []
    for extracted in ms.relax_integration.extract_tasks(lowered, target):
        task_mod = extracted.dispatched[0]
        sch = Schedule(task_mod)
        children = sch.get_child_blocks(sch.get_sblock("root"))
        task = Task(extracted.task_name, task_mod, int(extracted.weight), float(estimate_tir_flops(task_mod)),
                    len(children))
        # a convolution with a long element-wise tail (ReLU6 as isnan/where/clip: 9 blocks) is real work and
        # tunes fine; a long chain of data movement without any reduction is the decoder/concat kind
        reduces = any(iv.iter_type == iv.CommReduce for b in children for iv in sch.get(b).iter_vars)
        if task.blocks > MAX_FUSED_BLOCKS and not reduces:
            task.skip = f"{task.blocks} fused operators: the search stalls on it, and it costs little at run time"
        elif is_direct(task_mod["main"]):
            task.skip = DIRECT_KERNEL
        tasks.append(task)
    return sorted(tasks, key=lambda t: (t.skip is not None, -t.total_flops, -t.calls, t.name))  # until measured


def measure_untuned(tasks: list[Task], target, builder, runner) -> None:
    """Time each task as compile leaves it without records (no schedule: naive single-threaded loops), on the
    runner that measures the candidates, so the slowest are tuned first and each result shows its speed-up."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.s_tir.meta_schedule.builder import BuilderInput
    from tvm.s_tir.meta_schedule.runner import RunnerInput

    built = builder.build([BuilderInput(t.mod, target) for t in tasks])
    ran = [(t, b) for t, b in zip(tasks, built) if b.error_msg is None]
    futures = runner.run([RunnerInput(b.artifact_path, "cpu", ArgInfo.from_entry_func(t.mod))
                          for t, b in ran])
    for (task, b), future in zip(ran, futures):
        result = future.result()
        if result.error_msg is None and result.run_secs:
            task.untuned = sum(float(s) for s in result.run_secs) / len(result.run_secs)
        shutil.rmtree(os.path.dirname(b.artifact_path), ignore_errors=True)


def best_seconds(db, task: Task) -> float | None:
    """The best measured time of a task's valid records in ``db``, or None."""
    if not db.has_workload(task.mod):
        return None
    for record in db.get_top_k(db.commit_workload(task.mod), 1):
        if record.run_secs:
            seconds = sum(float(s) for s in record.run_secs) / len(record.run_secs)
            if seconds < INVALID_SECONDS:
                return seconds
    return None


def applied_tasks(mod, target, records: Path) -> set[str]:
    """The functions ``edgecv compile`` schedules from ``records``: proof the database is laid out as it reads it."""
    import tvm

    from edgecv.compile.build import apply_records, records_prepacked

    staged = apply_records(mod, target, records, records_prepacked(records))
    scheduled = {gv.name_hint for gv, func in staged.functions.items()
                 if isinstance(func, tvm.tirx.PrimFunc) and func.attrs and "tirx.is_scheduled" in func.attrs}
    # pre-packing splits a task into "<task>_prepacked" and its weights' layout transform "<task>_weight_prepack"
    return {name.removesuffix("_prepacked") for name in scheduled if not name.endswith("_weight_prepack")}


# ---- The records folder ----

def compact(records: Path, slower: list[Task] = ()) -> None:
    """Keep only the best record of each workload (what compile applies): the shipped folder stays small. The
    tasks in ``slower``, whose best record runs slower than no schedule at all (a no-op reshape given a
    parallel loop), lose their records: compile then leaves them as they are."""
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    from edgecv.compile.pipeline import RECORDS_DB

    if not (records / RECORDS_DB[1]).is_file():
        return
    with tempfile.TemporaryDirectory(prefix=".compact-", dir=records) as tmp:
        (Path(tmp) / "pruned").mkdir()
        (Path(tmp) / "kept").mkdir()
        pruned = ms.database.JSONDatabase(work_dir=str(Path(tmp) / "pruned"))
        ms.database.JSONDatabase(work_dir=str(records)).dump_pruned(pruned)
        kept = ms.database.JSONDatabase(work_dir=str(Path(tmp) / "kept"))
        for record in pruned.get_all_tuning_records():
            if any(tvm_ffi.structural_equal(record.workload.mod, task.mod) for task in slower):
                continue
            kept.commit_tuning_record(ms.database.TuningRecord(
                record.trace, kept.commit_workload(record.workload.mod), record.run_secs, record.target,
                record.args_info))
        for name in RECORDS_DB:
            os.replace(Path(tmp) / "kept" / name, records / name)


def machine() -> dict:
    """The CPU the records were measured on (local runs)."""
    import tvm.target.codegen

    from edgecv.edge.benchmark import cpu_name
    from edgecv.edge.cpu import isa_summary

    return {"cpu": cpu_name(), "llvm_cpu": tvm.target.codegen.llvm_get_system_cpu(), "cores": os.cpu_count(),
            "flags": isa_summary()}


class Metadata:
    """``edgecv-tuning.json``: the sessions (machine, target, runner) and each task's result."""

    def __init__(self, path: Path, model: str, input_shape: tuple[int, ...]):
        self.path = path
        data = json.loads(path.read_text()) if path.is_file() else {}
        self.data = {"schema": SCHEMA, "model": model, "input_shape": list(input_shape), "sessions": [],
                     "tasks": {}, "skipped": {}, **data}

    def start_session(self, entry: dict) -> int:
        self.data["sessions"].append(entry)
        self.save()
        return len(self.data["sessions"]) - 1

    def task(self, name: str) -> dict | None:
        return self.data["tasks"].get(name)

    def set_task(self, name: str, **entry) -> None:
        self.data["tasks"][name] = {**self.data["tasks"].get(name, {}), **entry}
        self.save()

    def save(self) -> None:
        self.data["updated"] = _now()
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=False) + "\n")
        os.replace(tmp, self.path)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds >= 1e-4 else f"{seconds * 1e6:.2f} us"


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s"


# ---- Where candidates are measured ----

def check_measurable(preset: TargetPreset, rpc) -> None:
    """Local measuring needs a CPU that can run the target's code; say what to do otherwise."""
    from edgecv.edge.elf import host_arch

    if rpc is not None:
        return
    reason = preset.why_not_here()
    if reason:
        raise TargetError(f"{reason} to be measured",
                          "measure on the board: --rpc-tracker HOST:PORT --rpc-key KEY" if preset.arch != host_arch()
                          else "tune --target x86_64 here (its float32 records apply to any x86 CPU), or measure on a "
                               "machine that has them with --rpc-tracker HOST:PORT --rpc-key KEY")


def _builder_runner(preset: TargetPreset, rpc):
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.runner import EvaluatorConfig, RPCConfig

    evaluator = EvaluatorConfig(number=3, repeat=1, min_repeat_ms=100, enable_cpu_cache_flush=False)
    if rpc is None:
        return ms.builder.LocalBuilder(f_build=build_candidate), ms.runner.LocalRunner(evaluator_config=evaluator)
    host, port, key = rpc
    config = RPCConfig(tracker_host=host, tracker_port=port, tracker_key=key, session_timeout_sec=60)
    try:
        servers = config.count_num_servers(allow_missing=False)
    except Exception as exc:  # noqa: BLE001 - TVM raises bare errors for an unreachable tracker or missing key
        from edgecv.edge.errors import reason

        raise EdgecvError(f"no board with key {key!r} at the RPC tracker {host}:{port} ({reason(exc, 120)})",
                          "start the tracker and `python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY` "
                          "on the board") from None
    builder = ms.builder.LocalBuilder(f_build=build_candidate, f_export=functools.partial(
        export_shared_library, cross_compiler=preset.cross_compiler))
    return builder, ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator, max_workers=servers)


def _quiet_meta_schedule(log_file: Path) -> None:
    """MetaSchedule's INFO tables go to the log file, not to the console."""
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(name)s: %(message)s"))
    logger.addHandler(handler)


# ---- The command ----

def default_records(model: str, input_size: int | None, target: str, int8: bool = False) -> Path:
    from edgecv.compile.pipeline import shipped_records
    from edgecv.compile.zoo import resolve_model

    return shipped_records(resolve_model(model).name, input_size, resolve_model(model).input_size, target, int8)


@dataclass
class _Run:
    """One `edgecv tune` run: what its steps share."""
    target: object       # tvm.target.Target
    records: Path
    meta: Metadata
    db: object           # JSONDatabase on records
    builder: object
    runner: object
    where: str
    progress: Progress
    start: float
    kernel: object = None  # int8: the Int8Kernel whose dot product the search tensorizes with

    def space(self):
        """The search space: TVM's default for the target, or for int8 the kernel's own rules."""
        if self.kernel is None:
            return "post-order-apply"
        from edgecv.compile.quantize import int8_space

        return int8_space(self.kernel)


def tune_model(model: str, target: str, records: Path | None = None, trials_per_task: int = 32,
               minutes: float | None = None, resume: bool = True, input_size: int | None = None,
               weights: Weights | None = None, rpc: tuple[str, int, str] | None = None,
               max_tasks: int | None = None, progress: Progress | None = None, int8: bool = False,
               calibration: str | None = None, conv_kernels: str = "direct") -> dict:
    """Tune ``model`` for ``target`` into ``records`` (default: the shipped folder compile looks in). With the
    direct convolution kernels (``compile --conv-kernels direct``, the default) their kernels have their own
    schedule and are not tuned: the rest are."""
    import tvm

    from edgecv.compile.build import import_onnx, records_prepacked
    from edgecv.compile.direct import kernels_for
    from edgecv.compile.gluon import load_source_model
    from edgecv.compile.onnx_export import export_onnx
    from edgecv.compile.pipeline import RECORDS_DB, cache_root, check_conv_kernels
    from edgecv.compile.zoo import resolve_model

    start = time.monotonic()
    check_conv_kernels(conv_kernels)
    if trials_per_task < 1:
        raise EdgecvError(f"--trials {trials_per_task}", "use at least 1 trial per task")
    spec = resolve_model(model)
    preset = resolve_target(target)
    check_measurable(preset, rpc)
    preset.fcompile()  # a missing cross compiler is reported before any slow work
    weights = weights or (Weights() if spec.is_checkpoint else Weights(random_seed=0))
    kernel = None
    if int8:  # tuned with the kernel's own preset: its records fit every CPU that runs the kernel
        from edgecv.compile.quantize import int8_kernel
        from edgecv.edge.cpu import host_cpu_flags

        kernel = int8_kernel(preset, host_cpu_flags())
        preset = resolve_target(kernel.preset)
        check_measurable(preset, rpc)
    records = Path(records or default_records(model, input_size, target, int8)).resolve()
    progress = progress or Progress(0)
    progress.total = 4
    what = "the checkpoint's own weights" if spec.is_checkpoint and weights.params_file is None else weights.describe()
    with progress(f"loading {spec.name} in MXNet ({what}; records don't depend on the weights)"):
        source = load_source_model(spec, weights, input_size, progress.log)
    tvm_target = tvm.target.Target(preset.tvm_target())
    # new folders are tuned with the weights' layouts free (pre-packed at compile time: measured faster); a
    # folder tuned before that keeps its kind, so resuming it adds records its compile can use
    workloads = records / RECORDS_DB[0]
    prepack = not int8 and (records_prepacked(records) or not workloads.is_file() or not workloads.stat().st_size)
    with progress(f"exporting to ONNX and extracting the tuning tasks for {preset.name} ({tvm_target})"
                  + (", weights pre-packed" if prepack else ", weights as the model has them")):
        with tempfile.TemporaryDirectory(prefix="edgecv-tune-") as work:
            onnx_path = export_onnx(source, Path(work) / "model.onnx")
            plan = None
            if int8:  # the kernels depend on which convolutions are quantized, not on the ranges: a few frames do
                from edgecv.compile.pipeline import input_spec
                from edgecv.compile.quantize import Int8Plan, calibrate, calibration_inputs

                plan = Int8Plan(calibrate(onnx_path, "data", calibration_inputs(calibration, input_spec(spec, source),
                                                                                4), progress.log), kernel)
            mod, _ = import_onnx(onnx_path, "data", source.input_shape, plan, progress.log, kernels_for(tvm_target),
                                 direct=conv_kernels == "direct")
        tasks = extract_tasks(mod, tvm_target, prepack)
    load_tensor_intrinsics(tvm_target)
    from tvm.s_tir import meta_schedule as ms

    records.mkdir(parents=True, exist_ok=True)
    logs = cache_root() / "tune-logs" / f"{records.parent.name}-{records.name}"
    logs.mkdir(parents=True, exist_ok=True)
    _quiet_meta_schedule(logs / "tune.log")
    builder, runner = _builder_runner(preset, rpc)
    meta = Metadata(records / METADATA, spec.name, source.input_shape)
    meta.data["weight_prepack"] = prepack
    run = _Run(tvm_target, records, meta,
               ms.database.JSONDatabase(work_dir=str(records)), builder, runner,
               "local" if rpc is None else f"rpc {rpc[2]}@{rpc[0]}:{rpc[1]}", progress, start, kernel)
    try:
        _time_untuned(run, tasks, resume)
        summary = _tune_tasks(run, tasks, preset, trials_per_task, minutes, resume, max_tasks, logs)
    finally:
        pool = getattr(runner, "pool", None)
        if pool is not None:  # its worker process would outlive this one
            pool.shutdown()
    db = ms.database.JSONDatabase(work_dir=str(records))  # compacted
    tunable = [t for t in tasks if t.skip is None]
    with_records = {t.name for t in tunable if best_seconds(db, t) is not None}
    applied = applied_tasks(mod, tvm_target, records)
    progress.log(f"{len(with_records)} of {len(tunable)} tasks have records in {records}; compile applies "
                 f"{len(applied & with_records)} of them" + ("" if with_records <= applied else
                                                            f" (NOT: {', '.join(sorted(with_records - applied))})"))
    summary.update(with_records=len(with_records), applied_by_compile=sorted(applied),
                   elapsed_s=round(time.monotonic() - start, 1), metadata=str(records / METADATA))
    return summary


def _time_untuned(run: _Run, tasks: list[Task], resume: bool) -> None:
    """Untuned times (kept in the metadata) for the tasks to tune and the ones left out; then slowest first."""
    for t in tasks:
        untuned_us = (run.meta.task(t.name) or {}).get("untuned_us")
        t.untuned = None if untuned_us is None else untuned_us / 1e6
        t.best = best_seconds(run.db, t)
    todo = [t for t in tasks if t.untuned is None and (t.skip or not resume or best_seconds(run.db, t) is None)]
    with run.progress(f"timing {len(todo)} tasks untuned (no schedule, as compile leaves them), measured {run.where}"):
        if todo:
            measure_untuned(todo, run.target, run.builder, run.runner)
        for t in todo:
            if t.untuned is not None:
                run.meta.data["tasks"].setdefault(t.name, {})["untuned_us"] = round(t.untuned * 1e6, 3)
        for t in tasks:
            if t.skip is None and t.untuned is not None and t.untuned * t.calls < NOT_WORTH_SECONDS:
                t.skip = NOT_WORTH
        tasks.sort(key=Task.priority)
        run.meta.data["skipped"] = {t.name: t.skip for t in tasks if t.skip}
        trivial = [t.name for t in tasks if t.skip == NOT_WORTH]
        for t in tasks:
            if t.skip and t.name not in trivial:
                cost = "" if t.untuned is None else f", {_ms(t.untuned * t.calls)} untuned"
                run.progress.log(f"not tuned: {t.name[:60]}{'...' if len(t.name) > 60 else ''} ({t.skip}{cost})")
        if trivial:
            run.progress.log(f"not tuned: {len(trivial)} tasks that take almost no time untuned "
                             f"({', '.join(trivial[:4])}{', ...' if len(trivial) > 4 else ''})")


def _tune_tasks(run: _Run, tasks: list[Task], preset: TargetPreset, trials: int, minutes: float | None,
                resume: bool, max_tasks: int | None, logs: Path) -> dict:
    """Tune the tasks one by one, slowest first, until done, --max-tasks or the budget; commit, compact."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    import edgecv

    tunable = [t for t in tasks if t.skip is None]
    meta, progress = run.meta, run.progress
    session = meta.start_session({"started": _now(), "target": {"preset": preset.name, "tvm": preset.tvm_target()},
                                  "records": run.records.name, "machine": machine(), "runner": run.where,
                                  "int8_kernel": run.kernel.name if run.kernel else None,
                                  "trials_per_task": trials, "budget_minutes": minutes,
                                  "tvm_version": tvm.__version__, "edgecv_version": edgecv.__version__})
    cost_model = ms.CostModel.create("xgb", num_tuning_cores=os.cpu_count() or 1)  # shared: it learns across tasks
    budget = None if minutes is None else minutes * 60
    summary = {"records": str(run.records), "tasks": len(tunable), "tuned": [], "skipped_with_records": [],
               "not_tuned": [t.name for t in tasks if t.skip], "left": []}
    durations: list[float] = []
    with progress(f"tuning {len(tunable)} tasks, {trials} trials each, measured {run.where}"
                  + (f", budget {minutes:g} min" if minutes is not None else "") + f" (log: {logs}/tune.log)"):
        try:
            for i, task in enumerate(tunable, 1):
                label = f"task {i}/{len(tunable)} {task.name}"
                best = best_seconds(run.db, task)
                entry = meta.task(task.name) or {}
                if resume and entry.get("failed") and entry.get("done"):
                    progress.log(f"{label}: the search failed on it before, skipped (--restart tries again)")
                    continue
                if resume and entry.get("unscheduled") and entry.get("done"):
                    progress.log(f"{label}: no schedule beat none at all before, skipped (--restart tries again)")
                    summary["skipped_with_records"].append(task.name)
                    continue
                if resume and best is not None and entry.get("done", True) and task.untuned and best > task.untuned:
                    meta.set_task(task.name, unscheduled=True, best_us=None, gflops=None)  # (tuned before the rule)
                    progress.log(f"{label}: its best record {_ms(best)} is slower than untuned "
                                 f"{_ms(task.untuned)}: record dropped, left unscheduled")
                    summary["skipped_with_records"].append(task.name)
                    continue
                if resume and best is not None and entry.get("done", True):
                    progress.log(f"{label}: has records (best {_ms(best)}), skipped (--restart tunes it again)")
                    summary["skipped_with_records"].append(task.name)
                    continue
                stop = _stop_reason(time.monotonic() - run.start, budget, durations, max_tasks)
                if stop:
                    summary["left"] = [t.name for t in tunable[i - 1:] if best_seconds(run.db, t) is None]
                    progress.log(f"stopping before {label}: {stop}; {len(summary['left'])} tasks without records "
                                 "(run again to go on)")
                    break
                untuned = "" if task.untuned is None else f", untuned {_ms(task.untuned)}"
                progress.log(f"{label}: {task.flops / 1e6:,.1f} MFLOP x{task.calls}{untuned}, {trials} trials ...")
                meta.set_task(task.name, flops=task.flops, calls=task.calls, done=False, session=session)
                began = time.monotonic()
                context = ms.TuneContext(mod=task.mod, target=run.target, space_generator=run.space(),
                                         search_strategy="evolutionary", task_name=task.name,
                                         logger=logging.getLogger(f"tvm.s_tir.meta_schedule.task.{i}"),
                                         num_threads=os.cpu_count() or 1)
                try:
                    ms.tune_tasks(tasks=[context], task_weights=[float(task.calls)], work_dir=str(logs),
                                  max_trials_global=trials, max_trials_per_task=trials,
                                  num_trials_per_iter=min(trials, TRIALS_PER_BATCH), builder=run.builder,
                                  runner=run.runner, database=run.db, cost_model=cost_model,
                                  task_scheduler="round-robin")
                except Exception as exc:  # noqa: BLE001 (TVM raises ScheduleError, ValueError, ... from C++)
                    # MetaSchedule's search can fail on a function its rules don't fit: that task stays as
                    # compile leaves it, the others go on
                    first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
                    meta.set_task(task.name, done=True, failed=first, session=session)
                    summary.setdefault("failed", []).append(task.name)
                    progress.log(f"{label}: the search failed ({type(exc).__name__}: {first}); left as it is, "
                                 f"going on (details in {logs}/tune.log)")
                    durations.append(time.monotonic() - began)
                    continue
                took = time.monotonic() - began
                durations.append(took)
                best = best_seconds(run.db, task)
                unscheduled = best is not None and task.untuned is not None and best > task.untuned
                meta.set_task(task.name, done=True, trials=entry.get("trials", 0) + trials,
                              seconds=round(entry.get("seconds", 0) + took, 1),
                              best_us=None if best is None or unscheduled else round(best * 1e6, 2),
                              gflops=None if not best or unscheduled else round(task.flops / best / 1e9, 1),
                              unscheduled=unscheduled)
                summary["tuned"].append(task.name)
                elapsed = time.monotonic() - run.start
                left = "" if budget is None else f", budget left {_clock(budget - elapsed)}"
                result = ("no valid candidate (see the log)" if best is None else
                          f"best {_ms(best)} is slower than untuned {_ms(task.untuned)}: left unscheduled"
                          if unscheduled else
                          f"best {_ms(best)}" + (f" = {task.flops / best / 1e9:.1f} GFLOP/s" if task.flops else "")
                          + ("" if task.untuned is None else f", {task.untuned / best:.0f}x untuned"))
                progress.log(f"{label}: {result} in {took:.0f} s; elapsed {_clock(elapsed)}{left}")
        finally:
            compact(run.records, [t for t in tasks if t.skip or (meta.task(t.name) or {}).get("unscheduled")])
            meta.data["sessions"][session]["ended"] = _now()
            meta.data["sessions"][session]["tasks_tuned"] = len(summary["tuned"])
            meta.save()
    return summary


def _stop_reason(elapsed: float, budget: float | None, durations: list[float], max_tasks: int | None) -> str | None:
    """Why not to start another task: --max-tasks reached, or the budget can't fit a task of average length."""
    if max_tasks is not None and len(durations) >= max_tasks:
        return f"--max-tasks {max_tasks} reached"
    mean = sum(durations) / len(durations) if durations else 0.0
    if budget is not None and elapsed + mean > budget:
        return f"budget spent ({_clock(elapsed)} of {_clock(budget)}, a task takes {_clock(mean)})"
    return None
