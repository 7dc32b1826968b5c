"""The reference backends run the uncompiled graph kept in the artifact; all three agree."""
import numpy as np
import pytest

from edgecv.edge.backends import open_backend
from edgecv.edge.errors import ArtifactError

pytestmark = [pytest.mark.slow, pytest.mark.tvm, pytest.mark.mxnet]


def test_tvm_onnxruntime_and_mxnet_agree(artifacts):
    folder = artifacts("ssd_512_mobilenet1.0_voc", size=128, reference=True)
    models = {name: open_backend(name, folder, threads=2) for name in ("tvm", "onnxruntime", "mxnet")}
    x = np.random.default_rng(0).standard_normal(models["tvm"].manifest.input.shape).astype(np.float32)
    out = {name: m(x) for name, m in models.items()}
    for name in ("onnxruntime", "mxnet"):
        for key, want in out["tvm"].items():
            np.testing.assert_allclose(out[name][key], want, rtol=1e-3, atol=1e-3 * float(np.abs(want).max()),
                                       err_msg=f"{name} {key}")


def test_reference_backend_without_reference_files_says_how(artifacts):
    with pytest.raises(ArtifactError, match="--keep-reference"):
        open_backend("onnxruntime", artifacts("ssd_512_mobilenet1.0_voc", size=128))
