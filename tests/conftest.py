"""Shared fixtures: real compiled artifacts (built once, cached under ~/.cache/edgecv by the compile
step's own cache), sample media from Debian's opencv-doc, and the CLI as a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# The test process builds TVM modules (ARM runtime tests) and also loads artifacts through the edge runtime,
# which imports TVM runtime-only when it is the first to import it; a runtime-only TVM cannot build anything.
# Import the full TVM first so the order tests run in does not matter. Whether the edge runtime alone stays
# runtime-only is checked in a fresh process (tests/edge/test_boundaries.py).
os.environ.pop("TVM_USE_RUNTIME_LIB", None)
import tvm  # noqa: E402,F401

REPO = Path(__file__).resolve().parent.parent
OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
# AVX-VNNI's vpdpbusd is AVX-512 VNNI's on 256-bit registers, VEX-encoded: a CPU with AVX-512 VNNI and VL but no
# AVX-VNNI (AMD Zen 4, Intel Ice Lake-SP) runs the same instruction EVEX-encoded, which LLVM emits for these
# features (it picks VEX only with +avxvnni). Kernel -> (the CPU features the twin needs, its target's mattr).
EVEX_TWINS = {"avx-vnni": (frozenset({"avx512_vnni", "avx512vl"}), ["+avx512vnni", "+avx512vl"])}
# What needs Debian packages: these fixtures (Mosquitto, opencv-doc's media) and markers (qemu-user, cross g++)
DEBIAN_FIXTURES = {"broker", "opencv_data"}
DEBIAN_MARKERS = {"broker", "arm"}


def pytest_collection_modifyitems(items):
    """Mark every test that needs Debian packages ``debian`` (make test-unit leaves them out)."""
    for item in items:
        if DEBIAN_FIXTURES & set(item.fixturenames) or any(item.get_closest_marker(m) for m in DEBIAN_MARKERS):
            item.add_marker(pytest.mark.debian)


def verify_lines(stdout: str) -> list[str]:
    """The per-image lines `edgecv compile --verify` prints: "ok", "diff" (int8's expected differences) or "FAIL"."""
    return [line for line in stdout.splitlines() if line.startswith(("ok ", "diff ", "FAIL "))]


def run_cli(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """``edgecv ARGS`` in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "edgecv", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def broker(tmp_path):
    from broker import Mosquitto

    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def detector_artifact(artifacts):
    """A small real detector for loop tests: SSD MobileNet at 128 px (untuned TVM runs it in ~0.4 s)."""
    return artifacts("ssd_512_mobilenet1.0_voc", size=128)


@pytest.fixture(scope="session")
def opencv_data() -> Path:
    assert (OPENCV_DATA / "vtest.avi").is_file(), "Debian's opencv-doc is missing: make setup installs it"
    return OPENCV_DATA


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """``artifacts(model, target, size=None, seed=0)`` -> a compiled artifact folder (session-shared).

    Built by the real CLI in its own process (the compile step's cache makes repeats quick).
    """
    root = tmp_path_factory.mktemp("artifacts")
    built: dict[tuple, Path] = {}

    def get(model: str, target: str = "x86_64", size: int | None = None, seed: int = 0,
            reference: bool = False) -> Path:
        key = (model, target, size, seed, reference)
        if key not in built:
            out = root / f"{model}-{target}-{size or 'default'}-{seed}{'-ref' if reference else ''}"
            args = ["compile", model, "--target", target, "--random-weights", str(seed), "--out", str(out),
                    *(["--keep-reference"] if reference else [])]
            result = run_cli(*args, *(["--input-size", str(size)] if size else []))
            assert result.returncode == 0, result.stderr[-3000:]
            built[key] = out
        return built[key]

    return get
