"""`edgecv tune`: records written one task at a time, resumed, measured through a real TVM RPC tracker and
server, laid out as `edgecv compile` reads them; which shipped records a target uses."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tvm_ffi

from conftest import run_cli, verify_lines
from edgecv.compile.build import records_prepacked
from edgecv.compile.pipeline import X86_RECORDS, find_shipped_records, records_levels
from edgecv.edge.artifact import read_manifest

AVX512 = frozenset(X86_RECORDS["skylake-avx512"]) | {"avx2", "fma"}
AVX2 = frozenset({"avx", "avx2", "fma", "sse4_2"})


# ---- which records folder a target uses (no TVM needed) ----

@pytest.mark.parametrize("target,flags,expected", [
    ("x86_64", AVX512, ["skylake-avx512", "x86-64-v3"]),        # AVX-512 host: its own level first
    ("x86_64", AVX2, ["x86-64-v3", "skylake-avx512"]),          # AVX2 host (Zen 2, Haswell ...)
    ("x86_64", frozenset({"sse4_2"}), ["x86_64", "skylake-avx512", "x86-64-v3"]),
    ("skylake-avx512", AVX2, ["skylake-avx512", "x86-64-v3"]),  # an explicit preset doesn't look at the host
    ("x86-64-v3-vnni", AVX512, ["x86-64-v3", "skylake-avx512"]),  # AVX-VNNI: the same float32 code as AVX2's
    ("rk3399", AVX512, ["rk3399", "aarch64", "x86-64-v3"]),     # ARM boards: their own, generic, AVX2's transferred
    ("aarch64", AVX2, ["aarch64", "x86-64-v3"]),
    ("armv7", AVX512, ["armv7", "x86-64-v3"]),
])
def test_records_levels(target, flags, expected):
    assert records_levels(target, flags) == expected


@pytest.mark.parametrize("target,flags,expected", [
    ("x86_64", AVX512 | {"avx512_vnni"}, ["cascadelake-int8"]),  # an int8 kernel's records are its own
    ("x86-64-v3", AVX512, ["x86-64-v3-int8"]),
    ("x86-64-v3-vnni", AVX2, ["x86-64-v3-vnni-int8", "x86-64-v3-int8"]),  # then the kernel's it transfers from
    ("x86_64", AVX2 | {"avx_vnni"}, ["x86-64-v3-vnni-int8", "x86-64-v3-int8"]),
    ("rk3399", AVX2, ["aarch64-int8"]),
])
def test_int8_records_levels(target, flags, expected):
    assert records_levels(target, flags, int8=True) == expected


def test_compile_finds_the_first_level_that_has_records(tmp_path, monkeypatch):
    from edgecv.compile import pipeline

    monkeypatch.setattr(pipeline, "records_root", lambda model, size, default: tmp_path / model)
    monkeypatch.setattr(pipeline, "host_cpu_flags", lambda: AVX512)
    assert find_shipped_records("m", None, 512, "x86_64") is None
    (tmp_path / "m/x86-64-v3").mkdir(parents=True)
    (tmp_path / "m/x86-64-v3/database_tuning_record.json").write_text("")
    assert find_shipped_records("m", None, 512, "x86_64") == tmp_path / "m/x86-64-v3"  # AVX2 records, better than none
    (tmp_path / "m/skylake-avx512").mkdir()
    (tmp_path / "m/skylake-avx512/database_tuning_record.json").write_text("")
    assert find_shipped_records("m", None, 512, "x86_64") == tmp_path / "m/skylake-avx512"
    assert find_shipped_records("m", None, 512, "rk3399") == tmp_path / "m/x86-64-v3"  # transferred to ARM


def test_local_measuring_needs_a_cpu_that_runs_the_code(monkeypatch):
    from edgecv.compile.targets import resolve_target
    from edgecv.compile.tune import check_measurable
    from edgecv.edge import cpu
    from edgecv.edge.errors import TargetError

    monkeypatch.setattr(cpu, "host_cpu_flags", lambda: AVX2 | {"avx", "f16c", "bmi2"})
    with pytest.raises(TargetError, match="lacks avx512bw, avx512cd, avx512dq, avx512f, avx512vl: it can't run "
                                          "skylake-avx512 code"):
        check_measurable(resolve_target("skylake-avx512"), rpc=None)
    with pytest.raises(TargetError, match="lacks .*avx512_vnni.*cascadelake"):
        check_measurable(resolve_target("cascadelake"), rpc=None)
    check_measurable(resolve_target("skylake-avx512"), rpc=("127.0.0.1", 9190, "avx512-box"))
    check_measurable(resolve_target("x86_64"), rpc=None)
    check_measurable(resolve_target("x86-64-v3"), rpc=None)
    monkeypatch.setattr(cpu, "host_cpu_flags", lambda: AVX512 | {"avx", "f16c", "bmi2"})
    check_measurable(resolve_target("skylake-avx512"), rpc=None)


def test_why_a_target_cant_run_here_names_what_the_machine_lacks():
    """What compile --verify and local tuning say when this machine can't run a target's code."""
    from edgecv.compile.targets import resolve_target

    avx2 = AVX2 | {"avx", "f16c", "bmi2"}
    assert resolve_target("x86-64-v3").why_not_here(avx2) is None
    assert resolve_target("x86-64-v3-vnni").why_not_here(avx2) == ("this CPU lacks avx_vnni: it can't run "
                                                                   "x86-64-v3-vnni code")
    assert resolve_target("x86-64-v3-vnni").why_not_here(avx2 | {"avx_vnni"}) is None
    assert resolve_target("aarch64").why_not_here(avx2) == "aarch64 code can't run on this x86_64 machine"


@pytest.mark.parametrize("args,message", [
    (["--target", "rk3399"], "can't run on this x86_64 machine to be measured"),
    (["--target", "x86_64", "--rpc-tracker", "nohost", "--rpc-key", "k"], "bad --rpc-tracker 'nohost'"),
    (["--target", "x86_64", "--rpc-tracker", "127.0.0.1:9190"], "together with --rpc-key KEY"),
    (["--target", "x86_64", "--trials", "0"], "use at least 1 trial per task"),
    (["--target", "pdp11"], "unknown target 'pdp11'"),
])
def test_bad_tune_arguments_are_one_clear_line(args, message, tmp_path):
    result = run_cli("tune", "ssd_512_mobilenet1.0_voc", "--records", tmp_path / "rec", *args)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert not (tmp_path / "rec").exists()


# ---- real tuning of a small network ----

@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A user's net.export() of a small classifier: its convolutions tune in seconds."""
    import mxnet as mx
    from mxnet import gluon

    folder = tmp_path_factory.mktemp("tiny")
    mx.random.seed(1)
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Conv2D(16, 3, padding=1, activation="relu"),
            gluon.nn.Conv2D(32, 3, strides=2, padding=1, activation="relu"),
            gluon.nn.GlobalAvgPool2D(), gluon.nn.Dense(10))
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.zeros((1, 3, 64, 64)))
    net.export(str(folder / "tiny"))
    return folder / "tiny-symbol.json"


def _tune(checkpoint: Path, records: Path, *args: str) -> tuple[dict, str]:
    """Tuned the way the convolutions are tuned: MetaSchedule's kernels (compile's default direct ones are not)."""
    result = run_cli("tune", checkpoint, "--target", "x86_64", "--input-size", "64", "--records", records,
                     "--conv-kernels", "metaschedule", *args, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout), result.stderr


def _records(records: Path) -> list[list]:
    return [json.loads(line) for line in (records / "database_tuning_record.json").read_text().splitlines()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log) -> subprocess.Popen:
    # its own process group: TVM's tracker and server run in a child worker process, ended with it
    return subprocess.Popen([sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


@pytest.fixture
def rpc_board(tmp_path):
    """A real TVM RPC tracker and one RPC server registered with it, on loopback: (tracker, key, server log)."""
    from tvm import rpc

    key, tracker_port, server_port = "edgecv-test-board", _free_port(), _free_port()
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("tracker", "server")}
    procs = [_start(["tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(tracker_port),
                     "--port-end", str(tracker_port + 1)], logs["tracker"])]
    try:
        deadline = time.monotonic() + 60
        while True:  # the tracker first, then a server that registers with it
            try:
                tracker = rpc.connect_tracker("127.0.0.1", tracker_port)
                break
            except Exception:  # noqa: BLE001 - not listening yet
                assert time.monotonic() < deadline, (tmp_path / "tracker.log").read_text()
                time.sleep(0.2)
        procs.append(_start(["tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(server_port),
                             "--port-end", str(server_port + 1), "--tracker", f"127.0.0.1:{tracker_port}",
                             "--key", key], logs["server"]))
        while tracker.summary()["queue_info"].get(key, {}).get("free", 0) < 1:
            assert time.monotonic() < deadline and procs[1].poll() is None, (tmp_path / "server.log").read_text()
            time.sleep(0.2)
        yield f"127.0.0.1:{tracker_port}", key, tmp_path / "server.log"
    finally:
        for proc in reversed(procs):
            os.killpg(proc.pid, signal.SIGTERM)  # the group this fixture started: launcher and worker
            proc.wait(timeout=30)
        for log in logs.values():
            log.close()


@pytest.mark.slow
@pytest.mark.tvm
@pytest.mark.mxnet
def test_rpc_tuning_writes_records_that_compile_applies(tiny_checkpoint, rpc_board, tmp_path, opencv_data):
    tracker, key, server_log = rpc_board
    records = tmp_path / "records"
    summary, stderr = _tune(tiny_checkpoint, records, "--trials", "4", "--max-tasks", "1",
                            "--rpc-tracker", tracker, "--rpc-key", key)
    # one task tuned, its candidates measured on the RPC server (it loaded each one), committed to the database
    assert len(summary["tuned"]) == 1 and summary["with_records"] == 1, summary
    tuned = summary["tuned"][0]
    assert "conv2d" in tuned and "1 of" in stderr and "measured rpc" in stderr
    assert server_log.read_text().count("load_module") >= 4
    assert {p.name for p in records.iterdir()} == {"database_workload.json", "database_tuning_record.json",
                                                   "edgecv-tuning.json"}
    assert len(_records(records)) == 1  # compacted: the best record of the one workload
    meta = json.loads((records / "edgecv-tuning.json").read_text())
    assert meta["sessions"][0]["runner"] == f"rpc {key}@{tracker}"
    assert meta["tasks"][tuned]["trials"] == 4 and meta["tasks"][tuned]["best_us"] > 0
    # tuned with the weights' layouts free; compile's own pipeline schedules exactly that function from the database
    assert meta["weight_prepack"] is True and records_prepacked(records)
    assert summary["applied_by_compile"] == [tuned]

    # compiled with the records vs with an empty database (the same pipeline otherwise): a different library,
    # the same outputs as MXNet on real images
    empty = tmp_path / "empty"
    empty.mkdir()
    libraries = {}
    for name, folder in (("tuned", records), ("empty", empty)):
        out = tmp_path / name
        result = run_cli("compile", tiny_checkpoint, "--target", "x86_64", "--input-size", "64", "--out", out,
                         "--tuning-records", folder, "--conv-kernels", "metaschedule", "--verify", "--no-cache")
        assert result.returncode == 0, result.stderr[-3000:]
        assert "with tuning records" in result.stderr
        assert ("weights pre-packed" in result.stderr) == (name == "tuned")
        lines = verify_lines(result.stdout)
        assert lines and all(line.startswith("ok ") for line in lines), result.stdout
        manifest = read_manifest(out)
        assert manifest.tuning is not None
        libraries[name] = manifest.files[manifest.library]
    assert libraries["tuned"] != libraries["empty"]


@pytest.mark.slow
@pytest.mark.tvm
@pytest.mark.mxnet
def test_resume_skips_finished_tasks_and_records_the_machine(tiny_checkpoint, tmp_path):
    records = tmp_path / "records"
    first, _ = _tune(tiny_checkpoint, records, "--trials", "2", "--max-tasks", "1")
    second, stderr = _tune(tiny_checkpoint, records, "--trials", "2", "--max-tasks", "1")
    done = first["tuned"][0]
    assert second["skipped_with_records"] == [done] and f"{done}: has records" in stderr
    assert len(second["tuned"]) == 1 and second["tuned"][0] != done
    assert second["left"] and "--max-tasks 1 reached" in stderr

    meta = json.loads((records / "edgecv-tuning.json").read_text())
    # with 2 trials a small task's best may be slower than no schedule: then it is left unscheduled, no record
    new = second["tuned"][0]
    unscheduled = meta["tasks"][new]["unscheduled"]
    assert ("slower than untuned" in stderr) == unscheduled and ("x untuned" in stderr) != unscheduled
    kept = [done] + ([] if unscheduled else [new])
    assert second["with_records"] == len(kept) and sorted(second["applied_by_compile"]) == sorted(kept), stderr
    assert len(_records(records)) == len(kept)  # one best record per workload

    assert meta["schema"] == "edgecv.tuning/1" and meta["input_shape"] == [1, 3, 64, 64]
    assert [s["tasks_tuned"] for s in meta["sessions"]] == [1, 1]
    session = meta["sessions"][1]
    assert session["target"]["preset"] == "x86_64" and session["target"]["tvm"]["kind"] == "llvm"
    assert session["target"]["tvm"]["mcpu"] == session["machine"]["llvm_cpu"]  # x86_64 is this host's CPU
    assert session["machine"]["cpu"] and session["machine"]["cores"] >= 1 and session["runner"] == "local"
    assert "avx2" in session["machine"]["flags"] or "sse4_2" in session["machine"]["flags"]
    assert all(meta["tasks"][t]["done"] and meta["tasks"][t]["trials"] == 2 for t in (done, new))
    # every task was timed untuned once (the first run); those that take almost no time are not tuned at all
    assert all(entry["untuned_us"] > 0 for entry in meta["tasks"].values())
    assert len(meta["tasks"]) == first["tasks"] + len(meta["skipped"]) and "timing 0 tasks untuned" in stderr
    assert all(meta["tasks"][t]["untuned_us"] < 2 for t, why in meta["skipped"].items() if "nothing to gain" in why)

    # a task whose best record is slower than no schedule loses its record when the folder is compacted
    from tvm.s_tir import meta_schedule as ms

    from edgecv.compile.tune import Task, compact

    before = ms.database.JSONDatabase(work_dir=str(records)).get_all_tuning_records()
    compact(records, [Task("slower", before[0].workload.mod, 1, 0.0, 1)])
    left = ms.database.JSONDatabase(work_dir=str(records)).get_all_tuning_records()
    assert len(left) == len(before) - 1
    assert not any(tvm_ffi.structural_equal(r.workload.mod, before[0].workload.mod) for r in left)
