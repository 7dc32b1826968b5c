"""`edgecv run` end to end: a real compiled detector, Debian's vtest.avi, a real Mosquitto broker."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from importlib import resources

import jsonschema
import pytest
import yaml

from broker import Subscriber
from conftest import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.tvm]

CONFIG = {
    "device": "cam1",
    "detect": {"score_threshold": 0.3},
    "tracker": {"min_hits": 1},
    "counting": {"window": 3, "line": {"points": [[0.0, 0.5], [1.0, 0.5]]},
                 "zones": [{"name": "left", "polygon": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]], "group": "people"}]},
    "mqtt": {"interval": 0.5},
    "stats_interval": 1,
}


def _write_config(tmp_path, **changes):
    data = json.loads(json.dumps(CONFIG))
    for key, value in changes.items():  # a mapping is merged into the section, anything else replaces it
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    data["mqtt"]["outbox"] = str(tmp_path / "outbox")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _schema(name):
    return json.loads(resources.files("edgecv.edge").joinpath(f"schemas/{name}.schema.json").read_text())


@pytest.mark.broker
def test_run_on_vtest_publishes_valid_counts(broker, detector_artifact, opencv_data, tmp_path):
    sub = Subscriber(broker.port)
    video = tmp_path / "out.avi"
    result = run_cli("run", "--artifact", detector_artifact, "--source", opencv_data / "vtest.avi",
                     "--config", _write_config(tmp_path), "--mqtt", broker.url, "--max-frames", "12",
                     "--save-video", video)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["frames"] == 12 and summary["errors"] == 0
    assert 50 < summary["peak_rss_mb"] < 2000  # the process's own peak, reported for memory checks
    assert sub.wait_for(lambda m: any(p == b"offline" for t, p, _ in m if t == "edgecv/cam1/status"))
    # one camera, given as --source URL: the camera "main", its topics under edgecv/cam1/main/, the box's above
    counts, box, stats = sub.json("/cam1/main/counts"), sub.json("/cam1/counts"), sub.json("/cam1/stats")
    assert counts and box and stats
    for message in counts:
        jsonschema.validate(message, _schema("counts"))
    for message in box:
        jsonschema.validate(message, _schema("box-counts"))
    for message in stats:
        jsonschema.validate(message, _schema("stats"))
    for message in sub.json("/cam1/main/events"):
        jsonschema.validate(message, _schema("event"))
    seqs = [m["seq"] for m in counts + box + stats + sub.json("/cam1/main/events")]
    assert len(seqs) == len(set(seqs))
    assert counts[-1]["frame"] == 11 and counts[-1]["model"] == "ssd_512_mobilenet1.0_voc"
    assert counts[-1]["camera"] == "main" and box[-1]["cameras"]["main"]["frame"] == 11
    assert stats[-1]["cameras"]["main"]["frames"] == 12 and stats[-1]["sink_errors"]["mqtt"] == 0
    statuses = [p for t, p, _ in sub.messages if t == "edgecv/cam1/status"]
    assert statuses[0] == b"online" and statuses[-1] == b"offline"
    import cv2

    cap = cv2.VideoCapture(str(video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    ok, frame = cap.read()
    assert ok and frame.shape == (576, 768, 3)
    sub.close()


@pytest.mark.broker
def test_dlr_compatible_messages(broker, detector_artifact, opencv_data, tmp_path):
    sub = Subscriber(broker.port)
    config = _write_config(tmp_path, mqtt={"interval": 0.5, "format": "dlr"}, detect={"score_threshold": 0.0})
    result = run_cli("run", "--artifact", detector_artifact, "--source", opencv_data / "vtest.avi",
                     "--config", config, "--mqtt", broker.url, "--max-frames", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert sub.wait_for(lambda m: len([t for t, *_ in m if t == "ml/dlr/object-detection"]) == 2)
    message = json.loads(next(p for t, p, _ in sub.messages if t == "ml/dlr/object-detection"))
    assert message["inference-type"] == "object-detection" and isinstance(message["inference-results"], list)
    sub.close()


@pytest.mark.broker
def test_sigterm_stops_cleanly_and_publishes_offline(broker, detector_artifact, opencv_data, tmp_path):
    sub = Subscriber(broker.port)
    proc = subprocess.Popen([sys.executable, "-m", "edgecv", "run", "--artifact", str(detector_artifact),
                             "--source", str(opencv_data / "vtest.avi"), "--config", str(_write_config(tmp_path)),
                             "--mqtt", broker.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert sub.wait_for(lambda m: len(sub.json("/cam1/main/counts")) >= 1, timeout=120)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1])["frames"] >= 1
    assert sub.wait_for(lambda m: [p for t, p, _ in m if t == "edgecv/cam1/status"][-1] == b"offline")
    sub.close()


def test_broker_down_keeps_counts_on_disk_until_next_run(detector_artifact, opencv_data, tmp_path):
    from broker import Mosquitto

    down = Mosquitto(tmp_path / "b")   # configured, not started
    config = _write_config(tmp_path)
    result = run_cli("run", "--artifact", detector_artifact, "--source", opencv_data / "vtest.avi",
                     "--config", config, "--mqtt", down.url, "--max-frames", "3", "--flush-timeout", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "messages not yet delivered are kept in" in result.stderr
    down.start()
    try:
        sub = Subscriber(down.port)
        result = run_cli("run", "--artifact", detector_artifact, "--source", opencv_data / "vtest.avi",
                         "--config", config, "--mqtt", down.url, "--max-frames", "1")
        assert result.returncode == 0, result.stderr[-2000:]
        frames = [m["frame"] for m in sub.json("/cam1/main/counts")]
        assert len(frames) >= 2 and frames[-1] == 0 and 2 in frames[:-1], frames  # the first run's come first
        seqs = [m["seq"] for m in sub.json("/cam1/main/counts")]
        assert seqs == sorted(seqs)
        sub.close()
    finally:
        down.stop()


# ---- bad input: one line naming the problem and the fix ----

def _bad(tmp_path, artifact, source, config=None):
    args = ["run", "--artifact", artifact, "--source", source]
    if config:
        args += ["--config", config]
    result = run_cli(*args, timeout=120)
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return errors[0]


def test_missing_video_file(detector_artifact, tmp_path):
    assert "video file not found" in _bad(tmp_path, detector_artifact, tmp_path / "nope.mp4")


def test_camera_that_does_not_exist(detector_artifact, tmp_path):
    assert "camera /dev/video97 does not exist" in _bad(tmp_path, detector_artifact, "/dev/video97")
    assert "can't open camera 7" in _bad(tmp_path, detector_artifact, "7")


def test_unreachable_stream(detector_artifact, tmp_path):
    from broker import free_port

    assert "can't open rtsp://127.0.0.1" in _bad(tmp_path, detector_artifact, f"rtsp://127.0.0.1:{free_port()}/cam")


def test_bad_yaml(detector_artifact, opencv_data, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("detect:\n  score_threshold: [\n")
    assert "not valid YAML" in _bad(tmp_path, detector_artifact, opencv_data / "vtest.avi", config)
    config.write_text("detect:\n  score_treshold: 0.3\n")
    assert "detect.score_treshold" in _bad(tmp_path, detector_artifact, opencv_data / "vtest.avi", config)


def test_tampered_artifact(detector_artifact, opencv_data, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(detector_artifact, art)
    with open(art / "model.so", "r+b") as f:
        f.seek(1000)
        f.write(b"\xff\xff")
    assert "checksum mismatch" in _bad(tmp_path, art, opencv_data / "vtest.avi")


def test_artifact_for_another_cpu(artifacts, opencv_data, tmp_path):
    arm = artifacts("ssd_512_mobilenet1.0_voc", target="aarch64", size=256)
    assert "built for aarch64" in _bad(tmp_path, arm, opencv_data / "vtest.avi")


def test_corrupt_frames_are_skipped_and_counted(detector_artifact, opencv_data, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(opencv_data / "basketball1.png", folder / "a.png")
    (folder / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    shutil.copy(opencv_data / "messi5.jpg", folder / "c.jpg")
    result = run_cli("run", "--artifact", detector_artifact, "--source", folder)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["frames"] == 2 and summary["errors"] == 1
    assert "skipping unreadable image" in result.stderr


@pytest.mark.parametrize("streams", [1, 2])
def test_stream_that_drops_is_reconnected(detector_artifact, opencv_data, streams):
    import cv2

    from mjpeg_server import MjpegCamera

    cap = cv2.VideoCapture(str(opencv_data / "vtest.avi"))
    frames = [cv2.imencode(".jpg", cap.read()[1])[1].tobytes() for _ in range(20)]
    with MjpegCamera(frames, drop_every=5, fps=5) as camera:
        result = run_cli("run", "--artifact", detector_artifact, "--source", camera.url, "--max-frames", "8",
                         "--streams", streams, "--log-level", "warning", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["frames"] == 8
    assert camera.connections >= 2 and "reconnecting" in result.stderr


@pytest.mark.broker
def test_crop_classifier_labels_goods_tracks(broker, artifacts, detector_artifact, opencv_data, tmp_path):
    classifier = artifacts("mobilenetv2_1.0")
    sub = Subscriber(broker.port)
    config = _write_config(tmp_path, detect={"score_threshold": 0.05}, counting={"window": 1, "groups": {
        name: "goods" for name in ("person", "bottle", "chair", "tvmonitor", "pottedplant")}})
    result = run_cli("run", "--artifact", detector_artifact, "--source", opencv_data / "vtest.avi", "--config",
                     config, "--mqtt", broker.url, "--max-frames", "3", "--classifier", classifier)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert sum(summary["counts"]["goods_types"].values()) > 0
    from edgecv.edge.artifact import read_manifest

    imagenet = set(read_manifest(classifier).classes)
    assert set(summary["counts"]["goods_types"]) <= imagenet
    assert sub.wait_for(lambda m: any(c["goods_types"] for c in sub.json("/cam1/main/counts")))
    for message in sub.json("/cam1/main/counts"):
        jsonschema.validate(message, _schema("counts"))
    sub.close()


def test_classifier_artifact_must_be_a_classifier(detector_artifact, opencv_data, tmp_path):
    result = run_cli("run", "--artifact", detector_artifact, "--source", opencv_data / "vtest.avi",
                     "--classifier", detector_artifact)
    assert result.returncode == 2 and "not a classifier" in result.stderr


# ---- several cameras in one process ----

def _summary(result) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


WHOLE = [[0, 0], [1, 0], [1, 1], [0, 1]]


@pytest.mark.broker
def test_two_cameras_are_counted_separately_and_together(broker, detector_artifact, opencv_data, tmp_path):
    """vtest.avi twice, as two cameras with a zone each (one their own, one the top-level): one detector, each
    camera's counts on its own topic, the box's counts summing them."""
    sub = Subscriber(broker.port)
    config = _write_config(tmp_path, detect={"score_threshold": 0.05}, counting={"window": 1, "inertia": 1},
                           sources=[{"name": "door", "url": str(opencv_data / "vtest.avi")},
                                    {"name": "aisle", "url": str(opencv_data / "vtest.avi"),
                                     "counting": {"window": 1, "inertia": 1,
                                                  "zones": [{"name": "all", "polygon": WHOLE, "group": "people"}]}}])
    summary = _summary(run_cli("run", "--artifact", detector_artifact, "--config", config, "--mqtt", broker.url,
                               "--max-frames", "8"))
    assert summary["frames"] == 16 and set(summary["cameras"]) == {"door", "aisle"}
    assert all(c["frames"] == 8 and c["errors"] == 0 for c in summary["cameras"].values())
    assert sub.wait_for(lambda m: any(p == b"offline" for t, p, _ in m if t == "edgecv/cam1/status"))
    door, aisle = sub.json("/cam1/door/counts"), sub.json("/cam1/aisle/counts")
    for message in door + aisle:
        jsonschema.validate(message, _schema("counts"))
    assert door[-1]["frame"] == aisle[-1]["frame"] == 7
    assert set(door[-1]["zones"]) == {"left"} and set(aisle[-1]["zones"]) == {"all"}  # each its own zones
    # the same frames through the same model: the same detections and class counts, in separate tracks
    assert door[-1]["by_class"] == aisle[-1]["by_class"] and sum(door[-1]["by_class"].values()) > 0
    box = sub.json("/cam1/counts")
    for message in box:
        jsonschema.validate(message, _schema("box-counts"))
    last = box[-1]
    assert set(last["cameras"]) == {"door", "aisle"}
    for key in ("people", "goods", "people_in", "people_out"):
        assert last["totals"][key] == last["cameras"]["door"][key] + last["cameras"]["aisle"][key]
    assert last["cameras"]["aisle"]["people"] == door[-1]["counts"]["people"]
    track_ids = {(m["camera"], m["track_id"]) for m in sub.json("/cam1/door/events") + sub.json("/cam1/aisle/events")
                 if "track_id" in m}
    assert len({t for _, t in track_ids}) == len(track_ids)  # a track id means one track in the box
    sub.close()


def test_a_camera_that_drops_reconnects_while_the_other_goes_on(detector_artifact, opencv_data, tmp_path):
    import cv2

    from mjpeg_server import MjpegCamera

    cap = cv2.VideoCapture(str(opencv_data / "vtest.avi"))
    frames = [cv2.imencode(".jpg", cap.read()[1])[1].tobytes() for _ in range(20)]
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(6):
        shutil.copy(opencv_data / "basketball1.png", folder / f"{i}.png")
    with MjpegCamera(frames, drop_every=4, fps=5) as camera:
        result = run_cli("run", "--artifact", detector_artifact, "--source", f"street={camera.url}",
                         "--source", f"shelf={folder}", "--max-frames", "10", "--log-level", "info", timeout=300)
    summary = _summary(result)
    assert summary["cameras"]["street"]["frames"] == 10   # across at least two connections
    assert summary["cameras"]["shelf"]["frames"] == 6     # the folder's frames, all of them, meanwhile
    assert camera.connections >= 3 and "reconnecting" in result.stderr
    assert "camera shelf ended after 6 frames" in result.stderr


@pytest.mark.broker
def test_totals_survive_a_restart_through_the_state_file(broker, detector_artifact, opencv_data, tmp_path):
    """People entering a zone over the whole frame are counted in a first run; a second run of the same device
    starts from those totals (the state file beside the outbox) and adds to them."""
    config = _write_config(tmp_path, detect={"score_threshold": 0.05}, counting={
        "window": 1, "inertia": 1, "line": {"points": [[0.0, 0.5], [1.0, 0.5]], "hysteresis": 0.0},
        "zones": [{"name": "hall", "polygon": WHOLE, "group": "people"}],
        "groups": {name: "people" for name in ("bottle", "chair", "tvmonitor", "pottedplant", "sofa")}})
    first = _summary(run_cli("run", "--artifact", detector_artifact, "--source", opencv_data / "vtest.avi",
                             "--config", config, "--mqtt", broker.url, "--max-frames", "6"))
    entered = first["counts"]["zone_detail"]["hall"]["entered"]
    assert entered > 0
    state = json.loads((tmp_path / "outbox" / "cam1.totals.json").read_text())
    assert state["cameras"]["main"]["zones"]["hall"]["entered"] == entered
    sub = Subscriber(broker.port)
    second = _summary(run_cli("run", "--artifact", detector_artifact, "--source", opencv_data / "vtest.avi",
                              "--config", config, "--mqtt", broker.url, "--max-frames", "6"))
    assert second["counts"]["zone_detail"]["hall"]["entered"] == 2 * entered  # the same 6 frames again, added
    assert second["counts"]["people_in"] >= first["counts"]["people_in"]
    assert sub.wait_for(lambda m: len(sub.json("/cam1/main/counts")) >= 1)
    assert sub.json("/cam1/main/counts")[0]["zone_detail"]["hall"]["entered"] >= entered  # from the first message on
    sub.close()


def test_a_failing_sink_is_counted_and_logged_and_the_run_goes_on(detector_artifact, opencv_data, tmp_path):
    """The video can't be written (its folder doesn't exist): every frame's write fails, is logged and counted;
    the counting goes on to the end."""
    result = run_cli("run", "--artifact", detector_artifact, "--source", opencv_data / "vtest.avi",
                     "--max-frames", "4", "--save-video", tmp_path / "no" / "such" / "dir" / "out.mp4")
    summary = _summary(result)
    assert summary["frames"] == 4 and summary["errors"] == 4
    assert result.stderr.count("sink video failed") == 4 and "can't write video" in result.stderr
