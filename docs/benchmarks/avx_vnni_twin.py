"""The avx-vnni int8 kernel against the avx2 one, side by side in one process, on a CPU without AVX-VNNI.

The avx-vnni kernel's instruction, 256-bit vpdpbusd, is AVX-512 VNNI's on ymm registers; a CPU with AVX-512 VNNI
and VL but no AVX-VNNI (AMD Zen 4) runs it EVEX-encoded. So this compiles the model int8 twice, with the shipped
x86-64-v3-int8 records (avx-vnni applies them with its dot product, as it does on a real AVX-VNNI box): for
``x86-64-v3`` (avx2) and for ``x86-64-v3-vnni`` with ``+avx512vnni,+avx512vl`` in place of ``+avxvnni`` (the twin),
then times both, calls alternated, and writes JSON + Markdown. The twin's other kernels may use AVX-512 (its
target has AVX-512F), so this measures the int8 convolutions' dot product, not an AVX-VNNI box.

    TVM_NUM_THREADS=2 python docs/benchmarks/avx_vnni_twin.py ssd_300_mobilenetv2_oid --rounds 60 --out docs/benchmarks
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from edgecv.compile import targets
    from edgecv.compile.bench import machine
    from edgecv.compile.pipeline import CompileRequest, compile_model
    from edgecv.compile.progress import Progress
    from edgecv.compile.weights import Weights
    from edgecv.compile.zoo import resolve_model
    from edgecv.edge.runtime import TvmModel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    ap.add_argument("--build", type=Path, default=Path("/tmp/edgecv-avx-vnni-twin"))
    args = ap.parse_args()

    own = targets.TARGETS["x86-64-v3-vnni"]
    targets.TARGETS["x86-64-v3-vnni"] = dataclasses.replace(own, tvm={**own.tvm, "mattr": ["+avx512vnni", "+avx512vl"]})
    weights = Weights() if resolve_model(args.model).brings_weights else Weights(random_seed=0)
    folders = {}
    for kernel, target in (("avx2", "x86-64-v3"), ("avx-vnni (EVEX twin)", "x86-64-v3-vnni")):
        out = args.build / f"{args.model}-{target}"
        result = compile_model(CompileRequest(model=args.model, target=target, out=out, weights=weights, int8=True,
                                              use_cache=True), Progress(0))
        folders[kernel] = result.out
    models = {k: TvmModel(f) for k, f in folders.items()}
    x = np.random.default_rng(0).random(next(iter(models.values())).manifest.input.shape, dtype=np.float32)
    for m in models.values():
        for _ in range(5):
            m(x)
    times = {k: [] for k in models}
    for _ in range(args.rounds):
        for k, m in models.items():
            start = time.perf_counter()
            m(x)
            times[k].append((time.perf_counter() - start) * 1e3)
    rows = {k: {"p50_ms": round(float(np.median(t)), 2), "p90_ms": round(float(np.percentile(t, 90)), 2),
                "min_ms": round(float(np.min(t)), 2)} for k, t in times.items()}
    ratio = rows["avx-vnni (EVEX twin)"]["p50_ms"] / rows["avx2"]["p50_ms"]
    now = datetime.datetime.now(datetime.timezone.utc)
    report = {"model": args.model, "date": now.isoformat(timespec="seconds"), "rounds": args.rounds,
              "threads": os.environ.get("TVM_NUM_THREADS"), "machine": machine(), "results": rows,
              "avx_vnni_over_avx2_p50": round(ratio, 3),
              "records": "x86-64-v3-int8 (shipped; avx-vnni applies them with its dot product)"}
    stem = f"avx-vnni-twin-{args.model}-{now:%Y-%m-%dT%H%M}"  # (model names have dots: no with_suffix)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    m = report["machine"]
    lines = [f"# avx-vnni (EVEX twin) vs avx2 int8: {args.model}", "",
             f"{report['date']}, {m['cpu']} ({m.get('cores')} cores), TVM_NUM_THREADS={report['threads']}, "
             f"{args.rounds} rounds alternated in one process, the shipped x86-64-v3-int8 records for both.", "",
             "| kernel | p50 ms | p90 ms | min ms |", "|---|---|---|---|",
             *(f"| {k} | {r['p50_ms']} | {r['p90_ms']} | {r['min_ms']} |" for k, r in rows.items()), "",
             f"avx-vnni / avx2 p50: {ratio:.3f}", ""]
    (args.out / f"{stem}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
