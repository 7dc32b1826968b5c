"""The edge runtime runs the compiled kernels on every physical core it may use (TVM's own default halves the
logical CPUs on x86, guessing hyper-threads), and TVM_NUM_THREADS set by the user still wins."""
from __future__ import annotations

import os
import subprocess
import sys

from edgecv.edge.runtime import physical_cores

CODE = ("import os\nfrom edgecv.edge.runtime import tvm_runtime\n"
        "print(tvm_runtime().threads(), os.environ['TVM_NUM_THREADS'])")


def _threads(env: dict) -> list[str]:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True, env=env)
    return out.stdout.split()


def test_physical_cores_counts_each_core_once():
    """Against util-linux's lscpu: one (socket, core) pair per physical core, among the CPUs we may run on."""
    listing = subprocess.run(["lscpu", "-p=CPU,CORE,SOCKET"], capture_output=True, text=True, check=True).stdout
    allowed = os.sched_getaffinity(0)
    rows = [line.split(",") for line in listing.splitlines() if line and not line.startswith("#")]
    assert physical_cores() == len({(socket, core) for cpu, core, socket in rows if int(cpu) in allowed}) >= 1


def test_kernels_use_every_physical_core_by_default():
    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    assert _threads(env) == [str(physical_cores())] * 2


def test_the_users_thread_count_wins():
    choice = 1 if physical_cores() > 1 else 2  # never what the default would be
    threads, env = _threads({**os.environ, "TVM_NUM_THREADS": str(choice)})
    assert env == str(choice)  # left as the user set it
    assert threads == str(min(choice, physical_cores()))  # and TVM ran that many (it takes no more than the cores)


def test_each_stream_thread_sets_its_own_kernel_threads():
    """TVM keeps a thread pool per calling thread: a detection stream's share of the cores leaves the others'
    (and the main thread's) alone."""
    import threading

    from edgecv.edge.runtime import kernel_threads, tvm_runtime

    runtime, seen = tvm_runtime(), {}

    def stream():
        seen["before"] = runtime.threads()
        runtime.use_threads(1)
        seen["after"] = runtime.threads()

    thread = threading.Thread(target=stream)
    thread.start()
    thread.join()
    assert seen == {"before": kernel_threads(), "after": 1}
    assert runtime.threads() == kernel_threads()
