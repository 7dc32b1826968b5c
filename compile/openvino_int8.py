"""OpenVINO's own int8, for ``edgecv bench``'s ``openvino-int8`` backend: what an x86 user gets without edgecv.

NNCF's post-training quantization (``nncf.quantize``, its defaults: the performance preset, int8 weights per
output channel, activations per tensor, fast bias correction) of the artifact's kept ONNX graph
(``compile --keep-reference``), calibrated on the frames edgecv's own int8 calibrates on
(``compile/quantize.py`` ``calibration_inputs``: 32 frames of vtest.avi, none of them in the labelled set).
The result is an OpenVINO IR written beside ``reference.onnx`` (``reference-openvino-int8.xml/.bin``) with a
``.json`` saying what it was made from (the ONNX file's sha256, which the edge backend checks, and the IR's).

Quantizing takes a while, so the IR is cached under ``~/.cache/edgecv/openvino-int8/<key>``, the key a hash of
everything it depends on: the ONNX file, the calibration frames (their preprocessed values), the openvino and
nncf versions and the settings below.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from edgecv.compile.pipeline import cache_root
from edgecv.edge.artifact import read_manifest, sha256_file
from edgecv.edge.backends import OPENVINO_INSTALL, OPENVINO_INT8
from edgecv.edge.errors import EdgecvError

FORMAT = 1  # bump when what is written (or how) changes: part of the cache key
SETTINGS = {"preset": "performance", "fast_bias_correction": True}  # nncf.quantize's defaults, named for the key


def _versions() -> dict[str, str]:
    try:
        import openvino
        with contextlib.redirect_stdout(sys.stderr):  # NNCF logs to the stdout it finds on import: keep it clean
            import nncf
    except ImportError as exc:
        raise EdgecvError(f"{exc.name} is not installed (openvino-int8 is quantized with NNCF)",
                          OPENVINO_INSTALL) from None
    return {"openvino": openvino.__version__, "nncf": nncf.__version__}


def describe(meta: dict) -> str:
    """One line for the bench report: how the openvino-int8 model was made."""
    return (f"NNCF {meta['nncf']} post-training quantization ({meta['settings']['preset']} preset: int8 weights per "
            f"channel, activations per tensor) for OpenVINO {meta['openvino'].split('-')[0]}, calibrated on "
            f"{meta['calibration_frames']} frames of {Path(meta['calibration']).name}")


def write_openvino_int8(folder: Path, calibration: str | None = None, log=print) -> dict:
    """Put ``reference-openvino-int8.{xml,bin,json}`` into artifact ``folder`` (quantizing unless cached):
    the ``.json``'s contents."""
    import numpy as np

    from edgecv.compile.quantize import DEFAULT_CALIBRATION, calibration_inputs

    folder = Path(folder)
    versions = _versions()
    manifest = read_manifest(folder)
    if not (manifest.reference or {}).get("onnx"):
        raise EdgecvError(f"{folder} has no uncompiled ONNX graph to quantize",
                          "recompile it with `edgecv compile ... --keep-reference`")
    onnx_path = folder / manifest.reference["onnx"]
    frames = calibration_inputs(calibration, manifest.input)
    frames_digest = hashlib.sha256()
    for x in frames:
        frames_digest.update(repr(x.shape).encode() + np.ascontiguousarray(x, np.float32).tobytes())
    meta = {"format": FORMAT, "onnx_sha256": sha256_file(onnx_path), "calibration": calibration or DEFAULT_CALIBRATION,
            "calibration_frames": len(frames), "calibration_sha256": frames_digest.hexdigest(), **versions,
            "settings": SETTINGS}
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    cached = cache_root() / "openvino-int8" / key
    if not (cached / f"{OPENVINO_INT8}.json").is_file():
        log(f"quantizing {onnx_path.name} with NNCF {versions['nncf']} on {len(frames)} calibration frames "
            f"(cached in {cached})")
        _quantize(onnx_path, frames, meta, cached)
    for suffix in ("xml", "bin", "json"):
        shutil.copyfile(cached / f"{OPENVINO_INT8}.{suffix}", folder / f"{OPENVINO_INT8}.{suffix}")
    return json.loads((folder / f"{OPENVINO_INT8}.json").read_text())


def _quantize(onnx_path: Path, frames: list, meta: dict, cached: Path) -> None:
    import logging

    import nncf
    import openvino as ov

    nncf.set_log_level(logging.ERROR)
    model = ov.Core().read_model(str(onnx_path))
    quantized = nncf.quantize(model, nncf.Dataset(frames), preset=nncf.QuantizationPreset.PERFORMANCE,
                              subset_size=len(frames), fast_bias_correction=SETTINGS["fast_bias_correction"])
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cached.name}-", dir=cached.parent))
    try:
        ov.save_model(quantized, str(tmp / f"{OPENVINO_INT8}.xml"), compress_to_fp16=False)
        files = {suffix: sha256_file(tmp / f"{OPENVINO_INT8}.{suffix}") for suffix in ("xml", "bin")}
        (tmp / f"{OPENVINO_INT8}.json").write_text(json.dumps({**meta, "files": files}, indent=2) + "\n")
        os.replace(tmp, cached)  # atomic: a concurrent run either finds the whole folder or makes its own
    except OSError:
        if not (cached / f"{OPENVINO_INT8}.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
