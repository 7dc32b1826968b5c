"""``edgecv component build`` -> ``edgecv component run-local``, through the CLI as a user runs them: the
greengrass-build layout, the model ZIP equal to the compiled artifact, the runtime wheel, the GDK projects,
clear errors; then the built component installed (a real venv, the shipped wheel) and run on vtest.avi
against the development nucleus, publishing counts that match the schema."""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import zipfile

import pytest
import yaml

from conftest import run_cli
from edgecv import boxwheels
from edgecv.greengrass.recipes import check_build


pytestmark = [pytest.mark.slow, pytest.mark.tvm]

COUNTER = "com.edgecv.Counter"
MODEL = "com.edgecv.model.ssd_512_mobilenet1.0_voc"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory, detector_artifact, opencv_data):
    """One build from the compiled artifact's .tar.gz (what `edgecv compile` ships), as a user makes it."""
    root = tmp_path_factory.mktemp("component")
    config = root / "run.yaml"
    config.write_text("counting:\n  window: 1\nmqtt:\n  interval: 1\nstats_interval: 2\n")
    archive = detector_artifact.with_name(detector_artifact.name + ".tar.gz")
    result = run_cli("component", "build", "--artifact", archive, "--out", root / "gg", "--version", "1.2.0",
                     "--config", config, "--source", opencv_data / "vtest.avi", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "gg", result.stdout


def test_build_layout(built, detector_artifact):
    out, stdout = built
    runtime_wheel = boxwheels.runtime_wheel("x86_64").name           # cached: the build made it
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == [
        f"artifacts/{COUNTER}/1.2.0/edgecv-runtime.zip",
        f"artifacts/{MODEL}/1.2.0/ssd_512_mobilenet1.0_voc-x86_64.zip",
        f"gdk/{MODEL}/gdk-config.json", f"gdk/{MODEL}/recipe.yaml",
        "gdk/edgecv-runtime/constraints.txt", "gdk/edgecv-runtime/edgecv-0.1.0-py3-none-any.whl",
        f"gdk/edgecv-runtime/{runtime_wheel}", "gdk/edgecv-runtime/gdk-config.json", "gdk/edgecv-runtime/recipe.yaml",
        f"recipes/{COUNTER}-1.2.0.yaml", f"recipes/{MODEL}-1.2.0.yaml",
    ]
    assert f'--merge "{COUNTER}=1.2.0"' in stdout and "greengrass-cli deployment create" in stdout
    recipes = check_build(out)
    counter, model = recipes[COUNTER], recipes[MODEL]
    assert counter["ComponentDependencies"] == {MODEL: {"VersionRequirement": "^1.2.0", "DependencyType": "HARD"}}
    assert [m["Platform"] for m in counter["Manifests"]] == [{"os": "linux", "architecture": "amd64"}]
    assert [m["Platform"] for m in model["Manifests"]] == [{"os": "linux", "architecture": "amd64"}]
    defaults = counter["ComponentConfiguration"]["DefaultConfiguration"]
    assert defaults["counting"]["window"] == 1 and defaults["source"].endswith("vtest.avi")
    assert defaults["accessControl"]["aws.greengrass.ipc.mqttproxy"][f"{COUNTER}:mqttproxy:1"]["resources"] == [
        f"edgecv/{{iot:thingName}}/{k}" for k in ("counts", "stats", "status", "main/counts", "main/events")]

    # the model ZIP holds exactly the compiled artifact, byte for byte
    with zipfile.ZipFile(out / "artifacts" / MODEL / "1.2.0" / "ssd_512_mobilenet1.0_voc-x86_64.zip") as z:
        packed = {name: z.read(name) for name in z.namelist()}
    manifest = json.loads(packed["manifest.json"])
    assert sorted(packed) == sorted({*manifest["files"], "manifest.json"})
    for name, digest in manifest["files"].items():
        assert _sha256(packed[name]) == digest == _sha256((detector_artifact / name).read_bytes())

    # the runtime: this edgecv's wheel (with the data the edge runtime reads), the TVM runtime without the compiler
    # for the counter's CPU, and the box lock as constraints (no MXNet, so not MXNet's numpy)
    with zipfile.ZipFile(out / "artifacts" / COUNTER / "1.2.0" / "edgecv-runtime.zip") as z:
        assert sorted(z.namelist()) == ["constraints.txt", "edgecv-0.1.0-py3-none-any.whl", runtime_wheel]
        constraints = z.read("constraints.txt").decode()
    assert "awsiotsdk==" in constraints and "edgecv-tvm-runtime==" in constraints and "mxnet" not in constraints
    assert "--find-links" in counter["Lifecycle"]["Install"]["Script"]
    with zipfile.ZipFile(out / "gdk" / "edgecv-runtime" / "edgecv-0.1.0-py3-none-any.whl") as wheel:
        names = set(wheel.namelist())
    assert {"edgecv/greengrass/service.py", "edgecv/edge/schemas/counts.schema.json",
            "edgecv/models/classes/voc.yaml"} <= names

    gdk = json.loads((out / "gdk" / "edgecv-runtime" / "gdk-config.json").read_text())
    assert gdk["component"][COUNTER]["build"] == {"build_system": "zip"}
    gdk_recipe = yaml.safe_load((out / "gdk" / "edgecv-runtime" / "recipe.yaml").read_text())
    assert gdk_recipe["Manifests"][0]["Artifacts"][0]["URI"] == \
        "s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/edgecv-runtime.zip"


@pytest.mark.parametrize("args, message", [
    (["--artifact", "/nonexistent/model"], "artifact not found: /nonexistent/model"),
    (["--artifact", "{a}", "--artifact", "{a}"], "two ssd_512_mobilenet1.0_voc artifacts for x86_64"),
    (["--artifact", "{a}", "--version", "1.0"], "--version '1.0' is not a semantic version"),
    (["--artifact", "{a}", "--config", "/nonexistent.yaml"], "config file not found"),
])
def test_build_errors(tmp_path, detector_artifact, args, message):
    args = [a.replace("{a}", str(detector_artifact)) for a in args]
    result = run_cli("component", "build", "--out", tmp_path / "gg", *args, timeout=600)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "gg").exists()                      # nothing half-written


def test_tampered_artifact_is_refused(tmp_path, detector_artifact):
    copy = tmp_path / "model"
    shutil.copytree(detector_artifact, copy)
    with open(copy / "params.npz", "ab") as f:
        f.write(b"\0")
    result = run_cli("component", "build", "--artifact", copy, "--out", tmp_path / "gg", timeout=600)
    assert result.returncode == 2 and "checksum mismatch" in result.stderr


def test_build_then_run_local_publishes_counts(built, tmp_path, counts_schema, opencv_data):
    out, _ = built
    record = tmp_path / "messages.jsonl"
    result = run_cli("component", "run-local", "--build", out, "--root", tmp_path / "gg-root",
                     "--thing-name", "door-7", "--deps-from", sys.executable, "--merge", '{"max_frames": 12}',
                     "--record", record, "--duration", "400", timeout=600)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-5000:])
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["state"] == "FINISHED" and summary["exit_codes"] == [0]
    assert summary["reported_states"] == ["RUNNING"]
    messages = [json.loads(line) for line in record.read_text().splitlines()]
    counts = [m for m in messages if m["topic"] == "edgecv/door-7/main/counts"]  # the one camera's counts
    assert len(counts) >= 2 and all(m["qos"] == 1 and m["target"] == "iotcore" for m in counts)
    for m in counts:
        counts_schema(m["message"])
    assert counts[-1]["message"]["frame"] == 11 and counts[-1]["message"]["device"] == "door-7"
    status = [m["message"] for m in messages if m["topic"] == "edgecv/door-7/status"]
    assert status == ["online", "offline"]
    assert {m["topic"] for m in messages} <= {f"edgecv/door-7/{k}" for k in ("counts", "stats", "status",
                                                                              "main/counts", "main/events")}
    # installed as the recipe says: a venv of the shipped wheel under the work folder, marked done
    venv = tmp_path / "gg-root" / "work" / COUNTER / "venv-1.2.0"
    assert (venv / ".installed").is_file() and (venv / "bin" / "edgecv").is_file()
    assert list((venv / "lib").glob("python3*/site-packages/edgecv/greengrass/service.py"))
    assert "Successfully installed edgecv-0.1.0" in result.stderr

    # again on the same root, on a live camera (it never ends) stopped by SIGTERM as the nucleus stops it: Install
    # skipped (its Skipif), a clean exit within the shutdown timeout, and the outbox's seq going on from the first run
    import cv2

    from mjpeg_server import MjpegCamera

    video = cv2.VideoCapture(str(opencv_data / "vtest.avi"))
    frames = [cv2.imencode(".jpg", video.read()[1])[1].tobytes() for _ in range(20)]
    again = tmp_path / "again.jsonl"
    with MjpegCamera(frames, drop_every=10**6, fps=10) as camera:
        result = run_cli("component", "run-local", "--build", out, "--root", tmp_path / "gg-root",
                         "--thing-name", "door-7", "--deps-from", sys.executable, "--record", again, "--duration", "20",
                         "--merge", json.dumps({"source": camera.url, "max_frames": 0}), "--shutdown-timeout", "15",
                         timeout=600)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-5000:])
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["state"] == "STOPPED" and summary["exit_codes"] == [0]
    assert "Install skipped" in result.stderr
    later = [json.loads(line) for line in again.read_text().splitlines()]
    assert [m["message"] for m in later if m["topic"].endswith("/status")] == ["online", "offline"]
    seqs = [m["message"]["seq"] for m in later if isinstance(m["message"], dict)]
    assert seqs and min(seqs) > max(m["message"]["seq"] for m in counts)
