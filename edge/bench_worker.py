"""One backend in its own process, driven line by line from ``edgecv bench`` (so its load time and peak
memory are its own, and rounds can be interleaved across backends).

stdin: ``run`` (one timed inference) or ``quit``; stdout: one JSON object per line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from edgecv.edge.memory import status_mb


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", required=True)
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--outputs", required=True)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    x = np.load(args.input)
    start = time.perf_counter()
    from edgecv.edge.backends import open_backend

    model = open_backend(args.backend, args.artifact, args.threads)
    load_s = time.perf_counter() - start
    outputs = None
    for _ in range(args.warmup):
        outputs = model(x)
    print(json.dumps({"ready": True, "load_s": load_s}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "run":
            t = time.perf_counter()
            outputs = model(x)
            print(json.dumps({"ms": (time.perf_counter() - t) * 1000}), flush=True)
        elif command == "quit":
            break
    np.savez(args.outputs, **(outputs or {}))
    print(json.dumps({"peak_rss_mb": status_mb("VmHWM")}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
