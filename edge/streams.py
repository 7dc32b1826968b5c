"""Detection in parallel streams: each frame goes to whichever of ``count`` detectors is free (each its own model
instance, with its share of the kernel threads); the results come back in the order the frames went in.

On a box with few cores one model instance spread over all of them waits at every layer for its slowest thread,
and any other work (decoding video, tracking, publishing) that takes a core from one of its threads stalls them
all. Streams of one thread each don't wait for each other: the other work fills the gaps. Each extra stream costs
its instance's activations and kernel workspace (the measured trade-off: docs/performance.md).
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from edgecv.edge.runtime import kernel_threads, tvm_runtime


class DetectionStreams:
    """Made once per detector and count (``Detector.streams``) and kept: each thread's TVM thread pool and kernel
    workspace live until the process ends, so threads made afresh for every loop would pile them up."""

    def __init__(self, detector, count: int = 1):
        """``count`` streams over ``detector`` and its replicas; one stream gets all the kernel threads."""
        self.count = count
        self._pending: set[Future] = set()
        self._pending_lock = threading.Lock()
        idle: queue.SimpleQueue = queue.SimpleQueue()
        for replica in detector.replicas(count):
            idle.put(replica)
        threads = max(1, kernel_threads() // count)
        self._local = threading.local()

        def start():  # in each of the pool's threads, once: its own detector, its own kernel threads
            self._local.detector = idle.get_nowait()
            if count > 1:  # (one stream keeps TVM's default pool: all threads, one per core)
                tvm_runtime().use_threads(threads)

        self._pool = ThreadPoolExecutor(count, "edgecv-detect", initializer=start)

    def submit(self, frame, prepared=None) -> Future:
        """A future of (the frame's ``Detections``, the seconds its detector took); ``prepared``: as
        ``Detector.__call__`` takes it."""
        return self._track(self._pool.submit(self._detect, frame, prepared))

    def infer(self, x) -> Future:
        """A future of the model's raw outputs for input ``x`` (benchmarks: the model alone, in these streams)."""
        return self._track(self._pool.submit(lambda: self._local.detector.model(x)))

    def _track(self, future: Future) -> Future:
        with self._pending_lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future) -> None:
        with self._pending_lock:
            self._pending.discard(future)

    def settle(self) -> None:
        """Drop the work not started and wait for the work under way (a loop that ends leaves nothing running)."""
        with self._pending_lock:
            pending = list(self._pending)
        for future in pending:
            future.cancel()
        for future in pending:
            if not future.cancelled():
                future.exception()  # waits; the result or error belongs to nobody now

    def _detect(self, frame, prepared):
        detector = self._local.detector
        return detector(frame.image, frame.index, frame.timestamp, frame.source, prepared), detector.last_latency

    def close(self) -> None:
        """Stop the streams' threads, after the work under way; the work not started is dropped."""
        self._pool.shutdown(wait=True, cancel_futures=True)
