"""The installer's web view, driven like a person would: a real headless Chromium (Debian's) draws the door
line and a zone on the set-up page of a running `edgecv run --http`, saves, and the config file and the
loop's counts change. Plus /metrics as Prometheus text, the live view, tokens, and bad geometry."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from edgecv.edge.config import parse_config
from edgecv.edge.errors import ConfigError

CHROMIUM = "/usr/bin/chromium"
TOKEN = "s3cret-token-for-tests-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 10.0):
    """(status, body bytes) without raising on HTTP errors."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


class RunningLoop:
    """`edgecv run --http` on vtest.avi in its own process, as an installer starts it."""

    def __init__(self, artifact: Path, video, config: Path, host: str = "127.0.0.1", env: dict | None = None):
        """``video``: a path, or a list of ``--source`` values (several cameras)."""
        self.port = free_port()
        self.base = f"http://{host}:{self.port}/"
        self.config = config
        self.log = config.with_suffix(".log")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgecv", "run", "--artifact", str(artifact),
             *[arg for v in (video if isinstance(video, list) else [video]) for arg in ("--source", str(v))],
             "--config", str(config), "--http", f"{host}:{self.port}", "--realtime", "--log-level", "info"],
            stdout=subprocess.DEVNULL, stderr=self.log.open("w"), env={**os.environ, **(env or {})})

    def wait_ready(self, headers: dict | None = None) -> "RunningLoop":
        def healthy():
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                return request(self.base + "healthz", headers=headers, timeout=2)[0] == 200
            except OSError:
                return False
        wait_until(healthy, 120, "the web view to report a processed frame")
        return self

    def counts(self) -> dict:
        status, body = request(self.base + "api/counts")
        assert status == 200, body
        return json.loads(body)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


@pytest.fixture(scope="module")
def running(detector_artifact, opencv_data, tmp_path_factory):
    config = tmp_path_factory.mktemp("web") / "counter.yaml"
    config.write_text("# written by the test\ndevice: webtest\ndetect:\n  score_threshold: 0.4\ncounting:\n  window: 3\n")
    loop = RunningLoop(detector_artifact, opencv_data / "vtest.avi", config).wait_ready()
    yield loop
    assert loop.stop() == 0, loop.log.read_text()[-2000:]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), "Debian's chromium is missing: make setup installs it"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.mark.slow
@pytest.mark.tvm
def test_draw_line_and_zone_in_the_browser_saves_and_applies(running, browser):
    page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone screen
    page.goto(running.base + "setup")
    page.wait_for_selector("canvas[data-ready='1']", timeout=30_000)
    box = page.locator("#canvas").bounding_box()
    assert box["width"] <= 390, "the set-up page must fit a phone screen"

    def at(fx, fy):
        return box["x"] + fx * box["width"], box["y"] + fy * box["height"]

    page.click("#mode-line")
    page.fill("#line-name", "front-door")
    page.select_option("#in-side", "right")
    for fx, fy in ((0.5, 0.1), (0.5, 0.9)):
        page.mouse.click(*at(fx, fy))
    page.click("#mode-zone")
    page.fill("#zone-name", "hall")
    page.select_option("#zone-group", "people")
    for fx, fy in ((0.05, 0.05), (0.95, 0.05), (0.95, 0.95), (0.05, 0.95)):
        page.mouse.click(*at(fx, fy))
    page.click("#finish-zone")
    page.click("#save")
    page.wait_for_selector("#status.ok", timeout=15_000)
    assert "saved to" in page.inner_text("#status")

    saved = yaml.safe_load(running.config.read_text())
    assert saved["device"] == "webtest" and saved["detect"]["score_threshold"] == 0.4  # the rest kept
    line, (zone,) = saved["counting"]["line"], saved["counting"]["zones"]
    assert line["name"] == "front-door" and line["in_side"] == "right"
    assert line["points"][0] == pytest.approx([0.5, 0.1], abs=0.01)
    assert line["points"][1] == pytest.approx([0.5, 0.9], abs=0.01)
    assert zone["name"] == "hall" and zone["group"] == "people"
    assert zone["polygon"][2] == pytest.approx([0.95, 0.95], abs=0.01)
    parse_config(saved)  # the file is still a valid configuration

    # the running loop counts with the new zone, without a restart
    counts = wait_until(lambda: (c := running.counts()["counts"]) and "hall" in c["zones"] and c, 60,
                        "the running loop to count the new zone")
    assert counts["device"] == "webtest"
    # and reloading the page shows what was saved
    page.reload()
    page.wait_for_selector("canvas[data-ready='1']")
    assert "hall · people · 4 corners" in page.inner_text("#zones")
    assert page.input_value("#line-name") == "front-door"
    page.close()


@pytest.mark.slow
@pytest.mark.tvm
def test_live_view_shows_frames_and_counts(running, browser):
    page = browser.new_page()
    page.goto(running.base)
    page.wait_for_function("document.getElementById('live').naturalWidth > 0", timeout=30_000)
    page.wait_for_function("document.getElementById('fps').textContent !== '–'", timeout=15_000)
    assert page.inner_text("#device") == "webtest"
    size = page.evaluate("[document.getElementById('live').naturalWidth, document.getElementById('live').naturalHeight]")
    assert size == [768, 576]  # vtest.avi's frames, annotated
    page.close()
    status, jpeg = request(running.base + "preview.jpg")
    assert status == 200 and jpeg[:2] == b"\xff\xd8"


@pytest.mark.slow
@pytest.mark.tvm
def test_metrics_parse_as_prometheus_text(running):
    from prometheus_client.parser import text_string_to_metric_families

    status, body = request(running.base + "metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    frames = families["edgecv_frames_processed"].samples[0]
    assert frames.labels["device"] == "webtest" and frames.value >= 1
    latency = families["edgecv_inference_latency_seconds"]
    assert latency.type == "histogram"
    buckets = [s for s in latency.samples if s.name.endswith("_bucket")]
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value >= frames.value - 1
    assert [s.value for s in buckets] == sorted(s.value for s in buckets)  # cumulative
    assert {s.labels["group"] for s in families["edgecv_count"].samples} == {"people", "goods"}
    assert "edgecv_dropped_frames" in families and "edgecv_mqtt_queue_depth" in families


@pytest.mark.slow
@pytest.mark.tvm
@pytest.mark.parametrize("body, status, words", [
    ({"line": None, "zones": [{"name": "bow", "polygon": [[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]]}]},
     400, "cross each other"),
    ({"line": None, "zones": [{"name": "out", "polygon": [[0.1, 0.1], [1.4, 0.1], [0.5, 0.9]]}]}, 400, "outside the frame"),
    ({"line": None, "zones": [{"name": "many", "polygon": [[0.5 + 0.4 * __import__("math").cos(i / 10),
                                                            0.5 + 0.4 * __import__("math").sin(i / 10)]
                                                           for i in range(63)] * 2}]}, 400, "at most 64"),
    ({"line": {"points": [[0.2, 0.2], [0.2, 0.2]]}, "zones": []}, 400, "must differ"),
    ({"zones": []}, 400, "exactly the keys"),
])
def test_bad_geometry_is_refused_with_a_clear_message(running, body, status, words):
    before = running.config.read_text()
    code, reply = request(running.base + "api/counting", json.dumps(body).encode(), {"Content-Type": "application/json"})
    assert code == status, reply
    assert words in json.loads(reply)["error"]
    assert running.config.read_text() == before  # nothing written


@pytest.mark.slow
@pytest.mark.tvm
def test_oversized_and_non_json_bodies_are_refused(running):
    code, _ = request(running.base + "api/counting", b"{" + b" " * (70 * 1024) + b"}")
    assert code == 413
    code, reply = request(running.base + "api/counting", b"zones: []")
    assert code == 400 and b"not JSON" in reply


@pytest.mark.slow
@pytest.mark.tvm
def test_beyond_loopback_needs_a_token(detector_artifact, opencv_data, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("device: open\n")
    refused = subprocess.run([sys.executable, "-m", "edgecv", "run", "--artifact", str(detector_artifact),
                              "--source", str(opencv_data / "vtest.avi"), "--config", str(config),
                              "--http", f"0.0.0.0:{free_port()}"], capture_output=True, text=True, timeout=120,
                             env={k: v for k, v in os.environ.items() if k != "EDGECV_HTTP_TOKEN"})
    assert refused.returncode == 2
    assert "without a token" in refused.stderr and "EDGECV_HTTP_TOKEN" in refused.stderr

    loop = RunningLoop(detector_artifact, opencv_data / "vtest.avi", config, host="0.0.0.0",
                       env={"EDGECV_HTTP_TOKEN": TOKEN})
    try:
        base = f"http://127.0.0.1:{loop.port}/"
        loop.wait_ready(headers={"Authorization": f"Bearer {TOKEN}"})
        for path in ("", "setup", "api/counts", "metrics", "healthz", "snapshot.jpg"):
            assert request(base + path)[0] == 401, path
            assert request(base + path + "?token=wrong")[0] == 401, path
        assert request(base + "api/counts?token=" + TOKEN)[0] == 200
        assert request(base + "metrics", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
        code, _ = request(base + "api/counting", b'{"line": null, "zones": []}')
        assert code == 401
    finally:
        assert loop.stop() == 0


def test_zone_geometry_rules_are_the_config_models():
    good = {"counting": {"zones": [{"name": "a", "polygon": [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]]}]}}
    assert parse_config(good).counting.zones[0].name == "a"
    for polygon, words in (([[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]], "no area"),
                           ([[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]], "edges 1 and 3 cross")):
        with pytest.raises(ConfigError, match=words):
            parse_config({"counting": {"zones": [{"name": "z", "polygon": polygon}]}})
    with pytest.raises(ConfigError, match="http.token"):
        parse_config({"http": {"token": "short"}})


@pytest.mark.slow
@pytest.mark.tvm
def test_several_cameras_in_the_web_view_and_metrics(detector_artifact, opencv_data, tmp_path, browser):
    """Two cameras in one `edgecv run --http`: each has its counts, preview, set-up and metrics; drawing a zone
    on one is saved to that camera's own counting and changes only its counts."""
    from prometheus_client.parser import text_string_to_metric_families

    config = tmp_path / "two.yaml"
    config.write_text(yaml.safe_dump({"device": "two", "counting": {"window": 1},
                                      "sources": [{"name": "door", "url": "x"}, {"name": "aisle", "url": "y"}]}))
    video = opencv_data / "vtest.avi"
    loop = RunningLoop(detector_artifact, [f"door={video}", f"aisle={video}"], config).wait_ready()
    try:
        both = loop.counts()
        assert both["camera"] == "door" and set(both["cameras"]) == {"door", "aisle"}
        status, body = request(loop.base + "api/counts?camera=aisle")
        assert status == 200 and json.loads(body)["camera"] == "aisle"
        assert request(loop.base + "api/counts?camera=nope")[0] == 404
        status, jpeg = request(loop.base + "preview.jpg?camera=aisle")
        assert status == 200 and jpeg[:2] == b"\xff\xd8"
        families = {f.name: f for f in text_string_to_metric_families(request(loop.base + "metrics")[1].decode())}
        assert {s.labels["camera"] for s in families["edgecv_frames_processed"].samples} == {"door", "aisle"}
        assert "edgecv_camera_connected" in families and "edgecv_sink_errors" in families

        zone = {"name": "hall", "group": "people", "polygon": [[0.05, 0.05], [0.95, 0.05], [0.95, 0.95]]}
        code, reply = request(loop.base + "api/counting?camera=aisle", json.dumps({"line": None, "zones": [zone]}).encode(),
                              {"Content-Type": "application/json"})
        assert code == 200 and json.loads(reply)["camera"] == "aisle", reply
        saved = yaml.safe_load(config.read_text())
        aisle = next(s for s in saved["sources"] if s["name"] == "aisle")
        assert aisle["counting"]["zones"][0]["name"] == "hall" and aisle["counting"]["window"] == 1
        assert "counting" not in next(s for s in saved["sources"] if s["name"] == "door")
        wait_until(lambda: "hall" in (json.loads(request(loop.base + "api/counts?camera=aisle")[1])["counts"] or
                                      {"zones": {}})["zones"], 60, "the aisle camera to count its new zone")
        assert "hall" not in loop.counts()["counts"]["zones"]  # the door camera's zones are its own

        page = browser.new_page()
        page.goto(loop.base + "?camera=aisle")
        page.wait_for_selector("#camera:not([hidden])", timeout=30_000)
        assert page.input_value("#camera") == "aisle"
        page.select_option("#camera", "door")
        page.wait_for_url("**camera=door**")
        page.close()
    finally:
        assert loop.stop() == 0, loop.log.read_text()[-2000:]
