"""The wheels a box installs: edgecv itself and TVM's runtime library without the compiler.

PyPI ships Apache TVM as one wheel, ``apache-tvm``, whose ``tvm/lib`` holds the compiler (``libtvm_compiler.so``)
beside the runtime (``libtvm_runtime.so``), and no runtime-only package. Running an artifact needs the runtime
alone (``edge/runtime.py`` loads ``tvm/lib/libtvm_runtime.so`` with ``tvm_ffi``, never ``import tvm``), so
``runtime_wheel`` repacks that one library, byte for byte, from the apache-tvm wheel of the same version and
CPU architecture as ``edgecv-tvm-runtime`` (Apache-2.0, TVM's license inside). It installs the library at the
path the edge runtime looks in and no ``tvm`` Python package: nothing of TVM's compiler can be imported on a box.

``edgecv[edge]`` requires ``edgecv-tvm-runtime``; ``edgecv[compile]`` requires ``apache-tvm``: the two are
alternatives for one environment (the build machine has the whole TVM, which holds the runtime too).
The runtime wheel is not on PyPI: pip finds it through ``--find-links`` in the folder ``python -m
edgecv.boxwheels`` fills (``make box-wheels``), next to the edgecv wheel.

Built wheels are cached under ``~/.cache/edgecv/wheels/`` keyed by the sha256 of the apache-tvm wheel they come
from and this module's recipe version; the apache-tvm wheels themselves (one per architecture, from PyPI through
``pip download``) under ``wheels/downloads/``.
"""
from __future__ import annotations

import argparse
import base64
import email.parser
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

import edgecv
from edgecv.edge.artifact import sha256_file
from edgecv.edge.elf import host_arch, read_elf
from edgecv.edge.errors import EdgecvError

RUNTIME_DIST = "edgecv-tvm-runtime"
LIBRARY = "tvm/lib/libtvm_runtime.so"            # where edge/runtime.py loads it from
ARCHS = {"x86_64": "manylinux_2_28_x86_64", "aarch64": "manylinux_2_28_aarch64"}   # PyPI has apache-tvm for these
RECIPE = 1                                         # bump when the repacked wheel's layout changes
CACHE = Path(os.environ.get("EDGECV_CACHE", Path.home() / ".cache" / "edgecv")) / "wheels"
SOURCE_TREE = Path(edgecv.__file__).resolve().parent.parent     # a checkout: setup.cfg, the locks
BOX_LOCK = SOURCE_TREE / "requirements-box.lock"
ZIP_TIME = (1980, 1, 1, 0, 0, 0)                   # fixed member times: the same inputs give the same bytes

# data files the edge runtime reads at run time: (folder in the checkout, package folder in the wheel)
RUNTIME_DATA = (("models/classes", "edgecv/models/classes"), ("edge/schemas", "edgecv/edge/schemas"))


def tvm_version() -> str:
    """The apache-tvm version of this build machine: artifacts compiled here need that runtime."""
    try:
        return metadata.version("apache-tvm")
    except metadata.PackageNotFoundError:
        raise EdgecvError("apache-tvm is not installed here", "build the box wheels on the build machine "
                          "(pip install -c requirements-build.lock -e '.[compile]')") from None


def _platform(arch: str) -> str:
    if arch not in ARCHS:
        raise EdgecvError(f"no TVM runtime wheel for {arch}", f"use one of {', '.join(ARCHS)} (armv7: "
                          "compile/armv7/build_runtime.sh builds the runtime from source)")
    return ARCHS[arch]


def tvm_wheel(arch: str, version: str, cache: Path = CACHE) -> Path:
    """The apache-tvm wheel for ``arch``: from the download cache, or from PyPI (``pip download``) once."""
    downloads = cache / "downloads"
    suffix = "_" + arch + ".whl"
    found = sorted(p for p in downloads.glob(f"apache_tvm-{version}-*.whl") if p.name.endswith(suffix))
    if found:
        return found[-1]
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=downloads) as tmp:
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                 "--platform", _platform(arch), "--disable-pip-version-check", "-q", "-d", tmp,
                                 f"apache-tvm=={version}"], capture_output=True, text=True, timeout=1800)
        got = sorted(Path(tmp).glob("apache_tvm-*.whl"))
        if result.returncode != 0 or not got:
            last = (result.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise EdgecvError(f"could not download apache-tvm=={version} for {arch} ({last})",
                              "check the connection to PyPI, or put the wheel into " + str(downloads))
        target = downloads / got[0].name
        os.replace(got[0], target)
    return target


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def runtime_wheel(arch: str | None = None, version: str | None = None, cache: Path = CACHE) -> Path:
    """``edgecv-tvm-runtime`` for ``arch`` (default: this machine's) and TVM ``version`` (default: this build
    machine's), built once per apache-tvm wheel and kept in the cache."""
    arch = arch or host_arch()
    _platform(arch)
    source = tvm_wheel(arch, version or tvm_version(), cache)
    key = hashlib.sha256(f"{sha256_file(source)} recipe {RECIPE}".encode()).hexdigest()[:12]
    folder = cache / f"tvm-runtime-{arch}-{key}"
    built = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    if built:
        return built[0]
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=cache))
    try:
        _repack(source, arch, tmp)
        try:
            tmp.rename(folder)
        except OSError:              # another process built it meanwhile
            shutil.rmtree(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(folder.glob("*.whl"))[0]


def _repack(source: Path, arch: str, out: Path) -> Path:
    """The runtime library and TVM's license out of the apache-tvm wheel ``source``, as a wheel in ``out``."""
    with zipfile.ZipFile(source) as z:
        names = z.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        dist_info = info.rsplit("/", 1)[0]
        meta = email.parser.Parser().parsestr(z.read(info).decode())
        wheel_meta = email.parser.Parser().parsestr(z.read(f"{dist_info}/WHEEL").decode())
        library = z.read(LIBRARY)
        licenses = {n.rsplit("/", 1)[-1]: z.read(n) for n in names
                    if n.startswith(f"{dist_info}/licenses/") and not n.endswith("/")}
    scratch = out / "check.so"
    scratch.write_bytes(library)
    found = read_elf(scratch).arch
    scratch.unlink()
    if found != arch:
        raise EdgecvError(f"{source.name} holds a runtime for {found}, not {arch}", "remove it from the cache")
    version = meta["Version"]
    ffi = [r for r in meta.get_all("Requires-Dist", []) if r.startswith("apache-tvm-ffi")]
    platforms = [t.split("-", 2)[2] for t in wheel_meta.get_all("Tag", [])]
    tag = "py3-none-" + ".".join(sorted(set(platforms)))
    name = RUNTIME_DIST.replace("-", "_")
    info_dir = f"{name}-{version}.dist-info"
    metadata_text = "\n".join([
        "Metadata-Version: 2.1", f"Name: {RUNTIME_DIST}", f"Version: {version}",
        f"Summary: Apache TVM's runtime library alone ({LIBRARY} of the apache-tvm {version} wheel), to run "
        "compiled models without TVM's compiler",
        "License: Apache-2.0", f"Requires-Python: {meta.get('Requires-Python', '>=3.10')}",
        *(f"Requires-Dist: {r}" for r in ffi), "", ""])
    files = {LIBRARY: library, f"{info_dir}/METADATA": metadata_text.encode(),
             f"{info_dir}/WHEEL": "\n".join(["Wheel-Version: 1.0", "Generator: edgecv.boxwheels",
                                             "Root-Is-Purelib: false", f"Tag: {tag}", "", ""]).encode(),
             **{f"{info_dir}/licenses/{n}": data for n, data in licenses.items()}}
    record = "".join(f"{n},{_record_hash(d)},{len(d)}\n" for n, d in files.items()) + f"{info_dir}/RECORD,,\n"
    files[f"{info_dir}/RECORD"] = record.encode()
    wheel = out / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for member, data in files.items():
            entry = zipfile.ZipInfo(member, ZIP_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = (0o755 if member.endswith(".so") else 0o644) << 16
            z.writestr(entry, data)
    return wheel


def edgecv_wheel(dest: Path, source: Path = SOURCE_TREE) -> Path:
    """This edgecv as a wheel, built from a copy of the checkout (nothing written into the checkout)."""
    if not (source / "setup.cfg").is_file():
        raise EdgecvError(f"edgecv is not running from a source checkout ({source})",
                          "pass the edgecv wheel with --wheel FILE.whl")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgecv-wheel-") as tmp:
        tree = Path(tmp) / "src"
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", ".pytest_cache")
        tree.mkdir()
        for name in ("setup.cfg", "pyproject.toml", "README.md"):
            shutil.copy2(source / name, tree / name)
        for package in ("edgecv", "edge", "compile", "greengrass", "models"):
            shutil.copytree(source / package, tree / package, ignore=ignore)
        result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                                 "--no-index", "--disable-pip-version-check", "-q", "-w", str(dest), str(tree)],
                                capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise EdgecvError(f"building the edgecv wheel failed: {result.stderr.strip().splitlines()[-1:]}",
                              "check that setuptools and wheel are installed, or pass --wheel FILE.whl")
    wheels = sorted(dest.glob(f"edgecv-{edgecv.__version__}-*.whl"))
    if not wheels:
        raise EdgecvError("pip built no edgecv wheel", "pass --wheel FILE.whl")
    check_wheel(wheels[-1], source)
    return wheels[-1]


def check_wheel(wheel: Path, source: Path = SOURCE_TREE) -> None:
    """Refuse a wheel without the data files the edge runtime reads (class maps, schemas): installed from it,
    the counter would fail at its first frame."""
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    missing = [f"{package}/{path.name}" for folder, package in RUNTIME_DATA
               for path in sorted((source / folder).glob("*")) if path.is_file() and f"{package}/{path.name}" not in names]
    if missing:
        raise EdgecvError(f"the edgecv wheel lacks files the edge runtime reads: {', '.join(missing)}",
                          "add them to [options.package_data] in setup.cfg (e.g. edgecv.models = ... classes/*.yaml)")


def box_lock() -> str:
    """The box's pinned versions (pip constraints), from the checkout."""
    if not BOX_LOCK.is_file():
        raise EdgecvError(f"{BOX_LOCK.name} not found beside setup.cfg", "run from a checkout of edgecv")
    return BOX_LOCK.read_text()


def wheelhouse(lock: Path = BOX_LOCK, cache: Path = CACHE) -> Path:
    """A folder with the PyPI wheels the box lock pins, for this machine's CPU and Python, downloaded once (kept
    under the cache, keyed by the lock's hash): with it and the box wheels a box installs without an index."""
    pins = [line for line in Path(lock).read_text().splitlines()
            if line.strip() and not line.startswith("#") and not line.startswith(RUNTIME_DIST + "==")]
    key = hashlib.sha256(("\n".join(pins) + f"\n{sys.version_info[:2]} {host_arch()}").encode()).hexdigest()[:12]
    folder = cache / f"box-deps-{key}"
    if folder.is_dir():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=cache))
    try:
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                 "--disable-pip-version-check", "-q", "-d", str(tmp), *pins],
                                capture_output=True, text=True, timeout=1800)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise EdgecvError(f"could not download the box's wheels ({last})", "check the connection to PyPI")
        try:
            tmp.rename(folder)
        except OSError:              # another process downloaded them meanwhile
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def box_wheels(dest: Path, archs=None, wheel: Path | None = None) -> list[Path]:
    """Into ``dest``: the edgecv wheel (``wheel``, or built from this checkout) and ``edgecv-tvm-runtime`` for
    each of ``archs`` (default: this machine's). Returns the files, edgecv's first."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if wheel is None:
        wheel = edgecv_wheel(dest)
    else:
        wheel = Path(wheel)
        if not wheel.is_file() or not wheel.name.startswith("edgecv-") or wheel.suffix != ".whl":
            raise EdgecvError(f"{wheel} is not an edgecv wheel", "pass the file `pip wheel .` wrote (edgecv-*.whl)")
        if (SOURCE_TREE / "setup.cfg").is_file():
            check_wheel(wheel)
        if wheel.parent.resolve() != dest.resolve():
            wheel = Path(shutil.copy2(wheel, dest / wheel.name))
    out = [wheel]
    for arch in dict.fromkeys(archs or [host_arch()]):
        runtime = runtime_wheel(arch)
        out.append(Path(shutil.copy2(runtime, dest / runtime.name)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgecv.boxwheels",
                                     description="Write the wheels a box installs: edgecv and the TVM runtime "
                                     "without the compiler. Install on the box with: pip install --find-links "
                                     "DIR -c requirements-box.lock 'edgecv[edge]'")
    parser.add_argument("--arch", action="append", choices=sorted(ARCHS),
                        help="CPU architecture of a runtime wheel (repeatable; default: this machine's)")
    parser.add_argument("--out", type=Path, default=Path("dist"), help="folder for the wheels (default: dist)")
    args = parser.parse_args(argv)
    try:
        for path in box_wheels(args.out, args.arch):
            print(f"{path}  {path.stat().st_size / 1e6:.1f} MB")
    except EdgecvError as exc:
        print(f"edgecv.boxwheels: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
