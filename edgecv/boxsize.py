"""How much a box installs: ``edgecv[edge]`` against the same edge loop with the whole apache-tvm wheel, with ONNX
Runtime and with MXNet in place of the TVM runtime.

Each install goes into a fresh venv made without pip (so its site-packages holds only what was installed), by this
Python's pip; the size is what the files take on disk (``du``: allocated blocks), in all and per distribution (from
each one's ``RECORD``). The box installs from the box wheels and the box lock's wheels, without an index; the
others from PyPI, with the box lock's versions where they apply (MXNet's own numpy pin wins for MXNet).

    python -m edgecv.boxsize [--out docs/benchmarks]   ->   box-install-<arch>-<date>.json and .md
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from edgecv import boxwheels
from edgecv.edge.elf import host_arch
from edgecv.edge.errors import EdgecvError

# name -> (what it is, the requirements beside the edgecv wheel's [loop] extra, keep the box lock's numpy)
VARIANTS = {
    "edgecv[edge]": ("the box install: TVM's runtime library without the compiler", None, True),
    "apache-tvm": ("the edge loop with the whole apache-tvm wheel (compiler included)", "apache-tvm", True),
    "onnxruntime": ("the edge loop with ONNX Runtime instead of TVM", "onnxruntime", True),
    "mxnet": ("the edge loop with MXNet instead of TVM", "mxnet", False),
}


def _du(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def _by_distribution(site: Path) -> dict[str, int]:
    """Bytes on disk of each installed distribution's files (as its RECORD lists them)."""
    out = {}
    for dist in metadata.distributions(path=[str(site)]):
        size = 0
        for f in dist.files or []:
            try:
                size += os.lstat(site / f).st_blocks * 512
            except OSError:
                pass
        out[dist.metadata["Name"]] = size
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _pins(numpy: bool) -> list[str]:
    return [line for line in boxwheels.box_lock().splitlines() if line.strip() and not line.startswith("#")
            and (numpy or not line.lower().startswith("numpy=="))]


def install(name: str, root: Path, wheels: list[Path]) -> dict:
    """One variant into a fresh venv under ``root``; its sizes."""
    _, extra, numpy = VARIANTS[name]
    venv = root / name.replace("[", "-").replace("]", "")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    constraints = root / f"{venv.name}.constraints.txt"
    constraints.write_text("\n".join(_pins(numpy)) + "\n")
    edgecv_wheel = wheels[0]
    if extra is None:
        target = [f"{edgecv_wheel}[edge]"]
        source = ["--no-index", "--find-links", str(wheels[1].parent), "--find-links", str(boxwheels.wheelhouse())]
    else:
        target = [f"{edgecv_wheel}[loop]", extra]
        source = []
    result = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                             "--disable-pip-version-check", *source, "-c", str(constraints), *target],
                            capture_output=True, text=True, timeout=1800,
                            env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise EdgecvError(f"installing {name} failed ({last})", "check the connection to PyPI")
    return {"what": VARIANTS[name][0], "bytes": _du(site), "distributions": _by_distribution(site)}


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f}"


TVM_RUNTIME = {"edgecv-tvm-runtime", "apache-tvm", "apache-tvm-ffi", "ml_dtypes"}   # running a TVM artifact


def report(results: dict, meta: dict) -> str:
    base = results["edgecv[edge]"]
    loop = set(base["distributions"]) - TVM_RUNTIME
    lines = [f"# Box install size ({meta['date']}, {meta['arch']}, {meta['cpu']}, Python {meta['python']})", "",
             "`python -m edgecv.boxsize`: each install in a fresh venv without pip; bytes on disk of its "
             "site-packages (`du`). \"runtime\" is what the variant installs to run a model beyond the edge loop's "
             "own libraries (numpy, OpenCV, paho-mqtt, PyYAML, edgecv). The ONNX Runtime and MXNet installs also "
             "hold apache-tvm-ffi (edgecv's [loop] extra), which they would not need: \"as needed\" leaves it out.",
             "",
             "| install | site-packages MB | as needed MB | / edgecv[edge] | runtime MB | runtime distributions |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        dists = r["distributions"]
        tvm = any(d in dists for d in ("edgecv-tvm-runtime", "apache-tvm"))
        needed = r["bytes"] - (0 if tvm else dists.get("apache-tvm-ffi", 0))
        own = {d: b for d, b in dists.items() if d not in loop and (tvm or d != "apache-tvm-ffi")}
        lines.append(f"| `{name}`: {r['what']} | {_mb(r['bytes'])} | {_mb(needed)} | {needed / base['bytes']:.2f} | "
                     f"{_mb(sum(own.values()))} | {', '.join(f'{d} {_mb(b)}' for d, b in own.items())} |")
    lines += ["", "Largest distributions of the box install:", "", "| distribution | MB |", "|---|---|"]
    lines += [f"| {d} | {_mb(b)} |" for d, b in list(base["distributions"].items())[:8]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgecv.boxsize", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=boxwheels.SOURCE_TREE / "docs" / "benchmarks")
    parser.add_argument("--only", action="append", choices=list(VARIANTS), help="measure these installs only")
    args = parser.parse_args(argv)
    names = args.only or list(VARIANTS)
    if "edgecv[edge]" not in names:
        names.insert(0, "edgecv[edge]")
    try:
        with tempfile.TemporaryDirectory(prefix="edgecv-boxsize-") as tmp:
            wheels = boxwheels.box_wheels(Path(tmp) / "wheels")
            results = {}
            for name in names:
                print(f"installing {name} ...", flush=True)
                results[name] = install(name, Path(tmp), wheels)
                print(f"  {_mb(results[name]['bytes'])} MB", flush=True)
    except EdgecvError as exc:
        print(f"edgecv.boxsize: error: {exc}", file=sys.stderr)
        return exc.exit_code
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M"), "arch": host_arch(), "cpu": _cpu(),
            "python": platform.python_version(), "tvm": boxwheels.tvm_version()}
    stem = f"box-install-{meta['arch']}-{time.strftime('%Y-%m-%d')}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps({**meta, "installs": results}, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(report(results, meta))
    print(args.out / f"{stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
