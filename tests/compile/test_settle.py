"""Waiting for a benchmark worker to stop spinning: real processes, one that keeps a core busy after its
answer (as thread pools do) and one that sleeps."""
import subprocess
import sys
import time

from edgecv.compile.settle import cpu_s, running_threads, settle

SPIN_THEN_SLEEP = """
import threading, time
def spin():
    end = time.monotonic() + 0.4
    while time.monotonic() < end:
        pass
print("answer", flush=True)
threading.Thread(target=spin).start()
time.sleep(30)
"""


def _start(code: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "answer"
    return proc


def test_settle_waits_out_a_thread_that_spins_after_the_answer_and_counts_its_cpu():
    proc = _start(SPIN_THEN_SLEEP)
    try:
        start = time.monotonic()
        used = settle(proc.pid)
        waited = time.monotonic() - start
        assert running_threads(proc.pid) == 0
        assert 0.3 < waited < 2.0, waited  # the spin's 0.4 s (less what ran before we looked), not the timeout
        assert 0.2 < used < 0.6, used
    finally:
        proc.kill()


def test_settle_returns_at_once_for_a_sleeping_process():
    proc = _start("print('answer', flush=True); import time; time.sleep(30)")
    try:
        time.sleep(0.1)
        before = cpu_s(proc.pid)
        start = time.monotonic()
        assert settle(proc.pid) < 0.02
        assert time.monotonic() - start < 0.2
        assert cpu_s(proc.pid) - before < 0.02
    finally:
        proc.kill()
