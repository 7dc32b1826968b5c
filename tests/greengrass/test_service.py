"""The counter component's runtime against the development nucleus, through the REAL awsiotsdk client:
configuration read and applied live, what is published (topic, QoS, schema), lifecycle state, a refused
token, and a nucleus that dies and comes back without a count lost."""
from __future__ import annotations

import json
import time

import pytest

from .conftest import THING, component_config, messages

pytestmark = [pytest.mark.slow, pytest.mark.tvm]

WHOLE_FRAME = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]


def _config(opencv_data, source=None, **overrides):
    base = {"counting": {"window": 1, "zones": []}, "mqtt": {"interval": 1}, "stats_interval": 2}
    for key, value in overrides.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) and key in base else value
    return component_config(source or opencv_data / "vtest.avi", **base)


def _total(message: dict) -> int:
    return sum(message["by_class"].values())


def camera_counts(server, camera: str = "main") -> list[dict]:
    """A camera's counts messages (``<prefix>/<device>/<camera>/counts``; the box's are ``.../counts``)."""
    return messages(server, f"{camera}/counts")


def test_counts_published_to_iot_core(nucleus, start_service, opencv_data, counts_schema):
    server = nucleus(_config(opencv_data))
    running = start_service(server)
    assert server.wait_for(lambda s: len(camera_counts(s)) >= 3 or running.done, timeout=90)
    assert running.stop() == 0

    assert server.states == ["RUNNING"]
    published = list(server.published_iot_core)
    topics = {m["topic"] for m in published}
    assert topics <= {f"edgecv/{THING}/{kind}" for kind in ("counts", "stats", "status", "main/counts", "main/events")}
    assert f"edgecv/{THING}/counts" in topics and f"edgecv/{THING}/main/counts" in topics
    status = [(m["payload"], m.get("retain")) for m in published if m["topic"].endswith("/status")]
    assert status[0] == (b"online", True) and status[-1] == (b"offline", True)
    for m in published:
        if m["topic"].endswith("/main/counts"):
            assert m["qos"] == 1
            message = json.loads(m["payload"])
            counts_schema(message)
            assert message["device"] == THING and message["model"] == "ssd_512_mobilenet1.0_voc"
            assert message["camera"] == "main"
        elif m["topic"].endswith("/counts"):
            assert m["qos"] == 1 and set(json.loads(m["payload"])["cameras"]) == {"main"}
        elif m["topic"].endswith("/stats"):
            assert m["qos"] == 0
    seqs = [json.loads(m["payload"])["seq"] for m in published if not m["topic"].endswith("/status")]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_configuration_changes_apply_live(nucleus, start_service, opencv_data, counts_schema):
    server = nucleus(_config(opencv_data, detect={"score_threshold": 0.95}))
    running = start_service(server)
    assert server.wait_for(lambda s: len(camera_counts(s)) >= 2 or running.done, timeout=90)
    assert all(_total(m) == 0 for m in camera_counts(server))      # nothing scores 0.95

    # a deployment's values come back as strings: "0.3" is a threshold all the same
    server.update_configuration(["detect", "score_threshold"], "0.3")
    assert server.wait_for(lambda s: any(_total(m) > 0 for m in camera_counts(s)) or running.done, timeout=60)

    # a zone drawn over the whole frame, as JSON text, appears in the counts
    before = len(camera_counts(server))
    server.update_configuration(["counting", "zones"], json.dumps([{"name": "shelf", "polygon": WHOLE_FRAME}]))
    assert server.wait_for(lambda s: any("shelf" in m["zones"] for m in camera_counts(s)[before:])
                           or running.done, timeout=60)

    # a bad value is refused with a line naming the key; the component goes on with what it had
    server.update_configuration(["counting", "window"], "zero")
    assert server.wait_for(lambda s: running.service.config_errors or running.done, timeout=30)
    assert "counting.window" in running.service.config_errors[0]
    count = len(camera_counts(server))
    assert server.wait_for(lambda s: len(camera_counts(s)) > count + 1 or running.done, timeout=60)

    service = running.service
    assert service.pipelines_started == 1 and service.reconfigured >= 2    # reconfigured, never rebuilt
    assert running.stop() == 0
    assert server.states == ["RUNNING"]
    for message in camera_counts(server):
        counts_schema(message)


def test_source_model_and_streams_changes_rebuild_only_the_pipeline(nucleus, start_service, opencv_data, detector_artifact,
                                                         tmp_path):
    import shutil

    server = nucleus(_config(opencv_data))
    running = start_service(server)
    assert server.wait_for(lambda s: len(camera_counts(s)) >= 1 or running.done, timeout=90)
    publisher = running.service.publisher

    model = tmp_path / "other-model"
    shutil.copytree(detector_artifact, model)
    server.update_configuration(["model"], str(model))
    assert server.wait_for(lambda s: running.service.pipelines_started == 2 or running.done, timeout=60)
    assert running.service.pipeline.artifact == model

    server.update_configuration(["streams"], "2")  # detection streams are set up when a loop starts
    assert server.wait_for(lambda s: running.service.pipelines_started == 3 or running.done, timeout=60)
    assert running.service.pipeline.loop.config.streams == 2
    count = len(camera_counts(server))
    assert server.wait_for(lambda s: len(camera_counts(s)) > count or running.done, timeout=60)

    # a source that can't be opened: said in one line, and the previous pipeline goes on
    server.update_configuration(["source"], "/nonexistent/video.avi")
    assert server.wait_for(lambda s: running.service.pipelines_started == 4 or running.done, timeout=60)
    assert "video file not found: /nonexistent/video.avi" in running.service.config_errors[0]
    assert running.service.pipeline.running and running.service.pipeline.settings.source.endswith("vtest.avi")

    images = tmp_path / "images"
    images.mkdir()
    for name in ("basketball1.png", "basketball2.png", "fruits.jpg"):
        shutil.copy(opencv_data / name, images / name)
    server.update_configuration(["source"], str(images))
    assert running.wait(90) == 0                # three images, then the source ends: the component finishes
    assert running.service.pipelines_started == 5
    assert running.service.publisher is publisher          # same publisher and outbox throughout
    seqs = [m["seq"] for m in messages(server, "counts") + messages(server, "stats") + messages(server, "events")]
    assert sorted(seqs) == list(range(min(seqs), max(seqs) + 1))
    frames = [m["frame"] for m in camera_counts(server)]
    assert frames[-1] <= 2                       # the last counts come from the image folder
    assert server.states == ["RUNNING"]


def test_nucleus_dies_and_comes_back_nothing_lost(nucleus, start_service, opencv_data):
    server = nucleus(_config(opencv_data))
    running = start_service(server)
    assert server.wait_for(lambda s: len(camera_counts(s)) >= 2 or running.done, timeout=90)

    server.stop()                                # the nucleus dies; counting goes on into the outbox
    outbox = running.service.publisher.outbox
    deadline = time.monotonic() + 60
    while len(outbox) < 3 and time.monotonic() < deadline and not running.done:
        time.sleep(0.2)
    assert len(outbox) >= 3 and not running.service.session.connected
    server.start()                               # it comes back on the same socket: a new client connects
    assert server.wait_for(lambda s: s.connections >= 2, timeout=30)
    assert server.wait_for(lambda s: len(outbox) == 0 or running.done, timeout=60)
    count = len(camera_counts(server))
    assert server.wait_for(lambda s: len(camera_counts(s)) > count or running.done, timeout=60)
    assert running.stop() == 0

    received = [json.loads(m["payload"])["seq"] for m in server.published_iot_core if not m["topic"].endswith("/status")]
    firsts = [s for n, s in enumerate(received) if s not in received[:n]]
    assert firsts == sorted(firsts), "first deliveries keep the order produced"
    assert firsts == list(range(firsts[0], firsts[-1] + 1)), "no message lost"
    assert server.states == ["RUNNING", "RUNNING"]           # reported again to the nucleus that came back


def test_wrong_token_is_refused(nucleus, start_service, opencv_data):
    from edgecv.greengrass.ipc import IpcError

    server = nucleus(_config(opencv_data))
    running = start_service(server, token="not-the-token", connect_deadline=2)
    with pytest.raises(IpcError, match="SVCUID was refused"):
        running.wait(30)
    assert server.refused >= 1 and server.connections == 0 and server.states == []


def test_invalid_configuration_at_start_is_errored(nucleus, start_service, opencv_data):
    server = nucleus(_config(opencv_data, detect={"score_threshold": "high"}, counting={"window": -1}))
    running = start_service(server)
    assert running.wait(60) == 1
    assert server.states == ["ERRORED"]
    error = running.service.error
    assert "detect.score_threshold" in error and "counting.window" in error and "\n" not in error


def test_topic_not_allowed_is_errored_and_kept(nucleus, start_service, opencv_data, tmp_path):
    from edgecv.edge.outbox import Outbox

    server = nucleus(_config(opencv_data), allowed_topics={"somewhere/else"})
    running = start_service(server)
    assert running.wait(90) == 1
    assert "accessControl" in running.service.error
    assert server.states == ["RUNNING", "ERRORED"] and server.published_iot_core == []
    assert len(Outbox(tmp_path / "work" / "outbox" / f"{THING}.sqlite")) >= 1   # kept for the next start


def test_local_pubsub_target(nucleus, start_service, opencv_data, counts_schema):
    server = nucleus(_config(opencv_data, publish="local"))
    assert list(server.configuration["accessControl"]) == ["aws.greengrass.ipc.pubsub"]
    running = start_service(server)
    counts = lambda s: [m["payload"] for m in s.published_local if m["topic"] == f"edgecv/{THING}/main/counts"]
    assert server.wait_for(lambda s: len(counts(s)) >= 2 or running.done, timeout=90)
    assert running.stop() == 0
    for message in counts(server):
        counts_schema(message)                   # a jsonMessage: other components get a JSON object
    assert server.published_iot_core == []


def test_source_that_cannot_be_opened_is_errored(nucleus, start_service, opencv_data):
    server = nucleus(_config(opencv_data, source="/nonexistent/video.avi"))
    running = start_service(server)
    assert running.wait(60) == 1
    assert server.states == ["ERRORED"]
    assert running.service.error.startswith("video file not found: /nonexistent/video.avi")


def test_several_cameras_publish_each_and_the_box(nucleus, start_service, opencv_data, counts_schema, tmp_path):
    """Two cameras from the deployment's `sources` (JSON text, as a deployment may send it): one detector, each
    camera's counts on its topic, the box's on the device's, within the accessControl the recipe computes."""
    import shutil

    images = tmp_path / "shelf"
    images.mkdir()
    for i in range(3):
        shutil.copy(opencv_data / "basketball1.png", images / f"{i}.png")
    sources = json.dumps([{"name": "door", "url": str(opencv_data / "vtest.avi")},
                          {"name": "shelf", "url": str(images),
                           "counting": {"window": 1, "zones": [{"name": "s", "polygon": WHOLE_FRAME}]}}])
    from edgecv.greengrass.settings import access_control

    config = _config(opencv_data, sources=sources)     # `source` stays as the recipe set it: the list wins
    config["accessControl"] = access_control(config)    # as the recipe computes it for these cameras
    server = nucleus(config)
    resources = next(iter(server.configuration["accessControl"]["aws.greengrass.ipc.mqttproxy"].values()))["resources"]
    assert f"edgecv/{{iot:thingName}}/shelf/counts" in resources and f"edgecv/{{iot:thingName}}/door/events" in resources
    running = start_service(server)
    def shelf_done() -> bool:  # the folder's three images counted (its counts are published on change, and at the end)
        pipeline = running.service.pipeline
        return pipeline is not None and pipeline.loop.camera("shelf").stats.frames == 3

    assert server.wait_for(lambda s: (shelf_done() and len(camera_counts(s, "door")) >= 3) or running.done,
                           timeout=120)
    assert running.stop() == 0 and server.states == ["RUNNING"]
    for camera in ("door", "shelf"):
        for message in camera_counts(server, camera):
            counts_schema(message)
            assert message["camera"] == camera
    assert "s" in camera_counts(server, "shelf")[-1]["zones"] and "s" not in camera_counts(server, "door")[-1]["zones"]
    assert camera_counts(server, "shelf")[-1]["frame"] == 2
    box = [m for m in messages(server, "counts") if "cameras" in m]
    assert box and set(box[-1]["cameras"]) == {"door", "shelf"}
