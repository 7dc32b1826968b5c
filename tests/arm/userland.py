"""A cached aarch64 Python userland for running ARM artifacts under qemu-user.

Plain stdlib on purpose: it is imported by pytest on the x86 side and must not
need numpy, TVM or anything else.

Two cached pieces, each in ``cache_root/<name>-<hash>/`` (hash = short sha256
of the piece's inputs), built in a temp dir next to it and ``os.rename``'d into
place on success, under an ``fcntl.flock`` so parallel pytest processes build
once:

* ``rootfs-bookworm-arm64-<hash>``: a Debian arm64 minbase + python3 (3.11).
  ``debootstrap --foreign`` downloads and unpacks the base system, then the
  remaining packages (python3 & co) are unpacked on the host with
  ``dpkg-deb | tar``. No second stage and no binfmt_misc are needed: nothing
  inside the rootfs is ever executed except through ``qemu-aarch64-static``.
* ``site-cp311-aarch64-<hash>``: ``pip install --target`` of exactly pinned
  aarch64 wheels (numpy, apache-tvm runtime, pyyaml, ...), installed
  from the x86 side without emulation.

Run code with ``qemu-aarch64-static -L ROOTFS ROOTFS/usr/bin/python3.11``, see
:meth:`ArmPython.run`.

Pitfall of ``-L``: every absolute path the guest opens is looked up in ROOTFS
first and falls back to the host, so e.g. ``/etc`` is the rootfs's, while
``/tmp/pytest-of-root/...`` (absent from the rootfs) is the host's.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

__all__ = [
    "ArmPython",
    "UserlandUnavailable",
    "ensure_aarch64_python",
    "DEBIAN_SUITE",
    "DEBIAN_ARCH",
    "DEBIAN_VARIANT",
    "DEBIAN_INCLUDE",
    "WHEEL_PINS",
    "DEFAULT_CACHE_ROOT",
]

ARCH = "aarch64"
DEBIAN_ARCH = "arm64"
DEBIAN_SUITE = "bookworm"  # python3 == 3.11, matching the cp311 wheels
DEBIAN_VARIANT = "minbase"
DEBIAN_INCLUDE = ("python3",)
PYTHON_IN_ROOTFS = "usr/bin/python3.11"
QEMU = "qemu-aarch64-static"

# The complete dependency closure of the edge runtime, pinned exactly (pip
# installs them with dependency resolution, and the build fails if anything
# outside this list gets pulled in). numpy 1.26.4 has a cp311
# manylinux2014_aarch64 wheel; the rest follow /root/.cache/edgecv/probe-freeze.txt
# and requirements-build.lock.
WHEEL_PINS = (
    "numpy==1.26.4",
    "apache-tvm==0.27.0.post1",
    "apache-tvm-ffi==0.1.14.post0",
    "ml_dtypes==0.5.4",  # apache-tvm
    "typing_extensions==4.16.0",  # apache-tvm, apache-tvm-ffi
    "PyYAML==6.0.4",
)
PIP_PLATFORM_ARGS = (
    "--platform", "manylinux_2_28_aarch64",
    "--platform", "manylinux2014_aarch64",
    "--platform", "manylinux_2_17_aarch64",
    "--only-binary=:all:",
    "--python-version", "3.11",
    "--implementation", "cp",
    "--abi", "cp311",
)

# Bump when the build recipe changes in a way that changes the result.
_ROOTFS_RECIPE = 1
_SITE_RECIPE = 1
_MARKER = ".edgecv-userland.json"

DEFAULT_CACHE_ROOT = Path.home() / ".cache" / "edgecv" / "arm"


class UserlandUnavailable(RuntimeError):
    """The ARM userland cannot be built or used here (one-line reason + fix)."""


@dataclass(frozen=True)
class ArmPython:
    arch: str  # "aarch64"
    rootfs: Path  # debootstrap'ed root with python3.11
    site: Path  # pip --target dir with the aarch64 wheels

    @property
    def python(self) -> Path:
        return self.rootfs / PYTHON_IN_ROOTFS

    def command(self, args: Sequence[str]) -> list[str]:
        """The argv that runs the emulated python with *args*."""
        qemu = shutil.which(QEMU)
        if qemu is None:
            raise UserlandUnavailable(f"{QEMU} not found: apt-get install qemu-user-static")
        return [qemu, "-L", str(self.rootfs), str(self.python), *map(str, args)]

    def environ(self, pythonpath: Iterable[Path] = (), env: Mapping[str, str | None] | None = None) -> dict:
        """The guest environment: a clean one (nothing of the host's PYTHON*,
        LD_*, VIRTUAL_ENV leaks in), PYTHONPATH = pythonpath + [site],
        TVM_USE_RUNTIME_LIB=1; *env* entries override, a value of None removes."""
        out = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "PYTHONNOUSERSITE": "1",
            "PYTHONPATH": os.pathsep.join([*(str(p) for p in pythonpath), str(self.site)]),
            "TVM_USE_RUNTIME_LIB": "1",
        }
        for key, value in (env or {}).items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = str(value)
        return out

    def run(
        self,
        args: list[str],
        pythonpath: Sequence[Path] = (),
        env: dict | None = None,
        timeout: float = 900,
        cwd=None,
    ) -> subprocess.CompletedProcess:
        """Run ``ROOTFS/usr/bin/python3.11 *args`` under qemu-aarch64-static -L ROOTFS.

        Output is captured as text; the return code is not checked.
        """
        return subprocess.run(
            self.command(args),
            env=self.environ(pythonpath, env),
            cwd=None if cwd is None else str(cwd),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


# --------------------------------------------------------------------------- helpers


def _short_hash(inputs: dict) -> str:
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _rootfs_inputs() -> dict:
    return {
        "what": "rootfs",
        "recipe": _ROOTFS_RECIPE,
        "suite": DEBIAN_SUITE,
        "arch": DEBIAN_ARCH,
        "variant": DEBIAN_VARIANT,
        "include": sorted(DEBIAN_INCLUDE),
    }


def _site_inputs() -> dict:
    return {
        "what": "site",
        "recipe": _SITE_RECIPE,
        "arch": ARCH,
        "pins": list(WHEEL_PINS),
        "pip": list(PIP_PLATFORM_ARGS),
    }


def _du(path: Path) -> int:
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += st.st_blocks * 512
    return total


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.0f} MB"


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join((text or "").strip().splitlines()[-lines:])


def _run_step(cmd: list[str], what: str, fix: str, **kw) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    except FileNotFoundError as e:
        raise UserlandUnavailable(f"{what}: {e.filename} not found: {fix}") from None
    if proc.returncode != 0:
        raise UserlandUnavailable(
            f"{what} failed (exit {proc.returncode}): {fix}\n$ {' '.join(cmd)}\n{_tail(proc.stdout)}\n{_tail(proc.stderr)}"
        )
    return proc


def _require_tool(name: str, package: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        raise UserlandUnavailable(f"{name} not found: apt-get install {package}")
    return path


def _apt_sources() -> list[dict]:
    """Entries of /etc/apt/sources.list{,.d/*.list,.d/*.sources} as dicts with
    types, uris, suites, components, signed_by."""
    entries: list[dict] = []
    files = ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]
    for fname in files:
        try:
            text = Path(fname).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            options = {}
            m = re.match(r"^(deb|deb-src)\s+\[([^\]]*)\]\s+(.*)$", line)
            if m:
                kind, opts, rest = m.groups()
                for opt in opts.split():
                    if "=" in opt:
                        k, v = opt.split("=", 1)
                        options[k] = v
            else:
                kind, _, rest = line.partition(" ")
            parts = rest.split()
            if kind not in ("deb", "deb-src") or len(parts) < 2:
                continue
            entries.append(
                {
                    "types": [kind],
                    "uris": [parts[0]],
                    "suites": [parts[1]],
                    "components": parts[2:],
                    "signed_by": options.get("signed-by"),
                }
            )
    for fname in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        try:
            text = Path(fname).read_text()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            key = None
            for line in stanza.splitlines():
                if line.startswith("#") or not line.strip():
                    continue
                if line[0] in " \t" and key:
                    fields[key] += " " + line.strip()
                    continue
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
            if not fields or fields.get("enabled", "yes").lower() == "no":
                continue
            signed_by = fields.get("signed-by")
            entries.append(
                {
                    "types": fields.get("types", "").split(),
                    "uris": fields.get("uris", "").split(),
                    "suites": fields.get("suites", "").split(),
                    "components": fields.get("components", "").split(),
                    "signed_by": signed_by if signed_by and os.path.isfile(signed_by) else None,
                }
            )
    return entries


def _debian_mirror(suite: str) -> tuple[str, str | None]:
    """(mirror URI, keyring or None) of the apt source that serves *suite* main."""
    override = os.environ.get("EDGECV_DEBIAN_MIRROR")
    if override:
        return override, None
    for entry in _apt_sources():
        if "deb" in entry["types"] and suite in entry["suites"] and "main" in entry["components"] and entry["uris"]:
            return entry["uris"][0], entry["signed_by"]
    raise UserlandUnavailable(
        f"no apt source for Debian {suite} main in /etc/apt/sources.list(.d): add one or set EDGECV_DEBIAN_MIRROR"
    )


class _Lock:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _is_built(path: Path, inputs: dict) -> bool:
    try:
        return json.loads((path / _MARKER).read_text()).get("inputs") == inputs
    except (OSError, ValueError):
        return False


def _cached_build(
    cache_root: Path,
    name: str,
    inputs: dict,
    build: Callable[[Path], None],
    log: Callable[[str], None],
    describe: str,
    eta: str,
) -> Path:
    """Return cache_root/<name>-<hash>, building it with build(tmpdir) if absent."""
    final = cache_root / f"{name}-{_short_hash(inputs)}"
    if _is_built(final, inputs):
        return final
    cache_root.mkdir(parents=True, exist_ok=True)
    with _Lock(cache_root / f".{final.name}.lock"):
        if _is_built(final, inputs):  # another process built it meanwhile
            return final
        # Leftovers of interrupted builds of this piece (we hold its lock).
        for stale in cache_root.glob(f".tmp-{final.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # no valid marker: half-built or foreign, never reuse
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=cache_root))
        log(f"building {describe} ({eta}, cached in {final})")
        t0 = time.monotonic()
        try:
            build(tmp)
            seconds = time.monotonic() - t0
            size = _du(tmp)
            (tmp / _MARKER).write_text(
                json.dumps(
                    {"inputs": inputs, "build_seconds": round(seconds, 1), "bytes": size,
                     "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
                    indent=1,
                )
            )
            os.chmod(tmp, 0o755)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log(f"built {final.name} in {seconds:.0f} s, {_mb(size)}")
    return final


# --------------------------------------------------------------------------- builders


def _build_rootfs(root: Path, log: Callable[[str], None]) -> None:
    debootstrap = _require_tool("debootstrap", "debootstrap")
    qemu = _require_tool(QEMU, "qemu-user-static")
    for tool, pkg in (("dpkg-deb", "dpkg"), ("tar", "tar")):
        _require_tool(tool, pkg)
    if os.geteuid() != 0:
        raise UserlandUnavailable("debootstrap needs root: run the ARM tests as root (or prebuild the cache as root)")
    mirror, keyring = _debian_mirror(DEBIAN_SUITE)
    log(f"  debootstrap --foreign {DEBIAN_SUITE} {DEBIAN_ARCH} from {mirror}")
    cmd = [
        debootstrap,
        f"--arch={DEBIAN_ARCH}",
        f"--variant={DEBIAN_VARIANT}",
        f"--include={','.join(DEBIAN_INCLUDE)}",
        "--foreign",
    ]
    if keyring:
        cmd.append(f"--keyring={keyring}")
    cmd += [DEBIAN_SUITE, str(root), mirror]
    _run_step(cmd, "debootstrap", "check network access to the Debian mirror (see debootstrap/debootstrap.log)")

    # Second stage without executing anything: unpack the packages debootstrap
    # downloaded but did not extract (python3 & co.) with the host's dpkg-deb.
    meta = root / "debootstrap"
    debpaths = dict(
        line.split(None, 1) for line in (meta / "debpaths").read_text().splitlines() if line.strip()
    )
    base = (meta / "base").read_text().split()
    log(f"  unpacking {len(base)} packages: {' '.join(base)}")
    for pkg in base:
        deb = root / debpaths[pkg].strip().lstrip("/")
        dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        tar = subprocess.run(
            ["tar", "-xf", "-", "-C", str(root), "--keep-directory-symlink"],
            stdin=dpkg.stdout, capture_output=True, text=True,
        )
        dpkg.stdout.close()
        if dpkg.wait() != 0 or tar.returncode != 0:
            raise UserlandUnavailable(f"unpacking {deb.name} failed: {tar.stderr.strip()[:300]}")

    python = root / PYTHON_IN_ROOTFS
    if not python.is_file():
        raise UserlandUnavailable(f"{PYTHON_IN_ROOTFS} missing after debootstrap: is {DEBIAN_SUITE}'s python3 3.11?")
    # An ld.so.cache for the arm64 libraries (the rootfs's static ldconfig,
    # emulated); without it the guest's ld.so would read the host's cache.
    _run_step([qemu, "-L", str(root), str(root / "usr/sbin/ldconfig"), "-r", str(root)],
              "ldconfig in the rootfs", "rebuild the cache (delete it)")
    # The downloaded .debs and debootstrap's state are not needed any more.
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    shutil.rmtree(meta)
    proc = _run_step([qemu, "-L", str(root), str(python), "-c", "import platform; print(platform.machine())"],
                     "python3.11 under qemu", "rebuild the cache (delete it)", env={"PATH": "/usr/bin:/bin"})
    if proc.stdout.strip() != ARCH:
        raise UserlandUnavailable(f"emulated python reports machine {proc.stdout.strip()!r}, expected {ARCH}")


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pip_python() -> str:
    try:
        import pip  # noqa: F401

        return sys.executable
    except ImportError:
        python3 = shutil.which("python3")
        if python3 is None:
            raise UserlandUnavailable("no python with pip found: apt-get install python3-pip") from None
        return python3


def _build_site(site: Path, log: Callable[[str], None]) -> None:
    python = _pip_python()
    cmd = [
        python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q",
        "--target", str(site), *PIP_PLATFORM_ARGS, *WHEEL_PINS,
    ]
    log(f"  pip install --target (aarch64 wheels): {' '.join(WHEEL_PINS)}")
    _run_step(cmd, "pip install of the aarch64 wheels", "check PyPI access and the pins in tests/arm/userland.py")
    wanted = {_canon(p.split("==")[0]): p.split("==")[1] for p in WHEEL_PINS}
    got = {}
    for dist in site.glob("*.dist-info"):
        name, _, version = dist.name[: -len(".dist-info")].partition("-")
        got[_canon(name)] = version
    if got != wanted:
        extra = sorted(f"{k}=={v}" for k, v in got.items() if wanted.get(k) != v)
        missing = sorted(f"{k}=={v}" for k, v in wanted.items() if got.get(k) != v)
        raise UserlandUnavailable(
            f"aarch64 site dir does not match WHEEL_PINS: unexpected {extra}, missing {missing}: update WHEEL_PINS"
        )


# --------------------------------------------------------------------------- entry point


def ensure_aarch64_python(cache_root: Path = DEFAULT_CACHE_ROOT, log=print) -> ArmPython:
    """Build (first call, ~30-60 s) or reuse the cached aarch64 userland.

    Raises UserlandUnavailable with a one-line reason and fix when a tool is
    missing or a build step fails.
    """
    cache_root = Path(cache_root).expanduser()
    if shutil.which(QEMU) is None:
        raise UserlandUnavailable(f"{QEMU} not found: apt-get install qemu-user-static")
    rootfs = _cached_build(
        cache_root,
        f"rootfs-{DEBIAN_SUITE}-{DEBIAN_ARCH}",
        _rootfs_inputs(),
        lambda d: _build_rootfs(d, log),
        log,
        f"{DEBIAN_ARCH} rootfs with debootstrap",
        "\u22481 min",
    )
    site = _cached_build(
        cache_root,
        f"site-cp311-{ARCH}",
        _site_inputs(),
        lambda d: _build_site(d, log),
        log,
        f"{ARCH} site dir with pip --target",
        "\u224830 s",
    )
    return ArmPython(arch=ARCH, rootfs=rootfs, site=site)


if __name__ == "__main__":  # python tests/arm/userland.py [cache_root]
    arm = ensure_aarch64_python(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_CACHE_ROOT)
    print(arm)
    r = arm.run(["-c", "import platform, numpy; print(platform.machine(), numpy.__version__)"])
    print(r.returncode, r.stdout, r.stderr)
