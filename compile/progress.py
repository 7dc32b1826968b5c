"""Progress lines for long steps, on stderr: ``[2/6] exporting ONNX ... done in 3.1 s``."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager


class Progress:
    def __init__(self, total: int, stream=None, quiet: bool = False):
        self.total = total
        self.step = 0
        self.stream = stream or sys.stderr
        self.quiet = quiet

    def log(self, message: str) -> None:
        if not self.quiet:
            print(f"      {message}", file=self.stream, flush=True)

    @contextmanager
    def __call__(self, what: str):
        self.step += 1
        start = time.perf_counter()
        if not self.quiet:
            print(f"[{self.step}/{self.total}] {what} ...", file=self.stream, flush=True)
        yield self
        if not self.quiet:
            print(f"      done in {time.perf_counter() - start:.1f} s", file=self.stream, flush=True)
