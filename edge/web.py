"""The installer's web view (``edgecv run --http HOST:PORT``): live annotated video, counts, and a set-up
page to draw the door line and shelf zones on a snapshot of the camera.

The loop thread only hands over references to its latest frame (a frame listener); JPEG encoding happens
here, on the server's thread, only while someone watches, at most ``http.preview_fps`` times a second.
Zones and lines from the set-up page are validated by the same config model as the YAML file, written back
to the file atomically, and applied to the running loop (``EdgeLoop.reconfigure``).
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from edgecv.edge.annotate import annotate
from edgecv.edge.config import HttpConfig, RunConfig, parse_config
from edgecv.edge.errors import ConfigError, EdgecvError
from edgecv.edge.payloads import counts_message
from edgecv.edge.stats import LATENCY_BUCKETS

log = logging.getLogger("edgecv.web")
MAX_BODY = 64 * 1024
STALE_AFTER_S = 30.0  # /healthz turns unhealthy when no frame was processed for this long
TOKEN_ENV = "EDGECV_HTTP_TOKEN"


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) < 65536):
        raise ConfigError(f"--http {value!r} is not HOST:PORT", "e.g. --http 127.0.0.1:8080")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class _Latest:
    image: np.ndarray
    tracked: object
    counts: object
    seq: int
    frame_index: int


class _Preview:
    """One camera's latest frame and its encoded preview."""

    def __init__(self):
        self.latest: _Latest | None = None
        self.seq = 0
        self.jpeg: tuple[int, bytes] | None = None  # (seq, jpeg)
        self.at = 0.0


class LiveView:
    """What the pages show, fed by the loop as a sink (each camera's latest frame); previews are encoded on demand.
    Every view takes a camera name (``?camera=NAME``; default the first camera)."""

    name = "web"

    def __init__(self, loop, config_path: Path | None, http: HttpConfig, publisher=None):
        self.loop = loop
        self.publisher = publisher
        self.config_path = Path(config_path) if config_path else None
        self.http = http
        self.viewers = 0
        self._lock = threading.Lock()
        self._cameras = {c.name: _Preview() for c in loop.cameras}
        self.previews_encoded = 0
        loop.sinks.add(self)

    def handle(self, record) -> None:  # the loop thread: keep references, nothing else
        view = self._cameras[record.camera.name]
        with self._lock:
            view.seq += 1
            view.latest = _Latest(record.frame.image, record.tracked, record.counts, view.seq, record.frame.index)

    def close(self) -> None:
        pass

    def camera(self, name: str | None):
        """The loop's camera ``name`` (default: the first). Raises ConfigError for a name it doesn't have."""
        if not name:
            return self.loop.cameras[0]
        for camera in self.loop.cameras:
            if camera.name == name:
                return camera
        raise ConfigError(f"no camera named {name!r}", "use one of " + ", ".join(c.name for c in self.loop.cameras))

    def _latest(self, name: str | None) -> tuple[object, _Preview, _Latest | None]:
        camera = self.camera(name)
        view = self._cameras[camera.name]
        with self._lock:
            return camera, view, view.latest

    def _encode(self, image: np.ndarray) -> bytes:
        import cv2

        h, w = image.shape[:2]
        if w > self.http.preview_width:
            image = cv2.resize(image, (self.http.preview_width, round(h * self.http.preview_width / w)),
                               interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 75])
        if not ok:
            raise EdgecvError("JPEG encoding failed", "report this frame's format")
        return jpeg.tobytes()

    def preview(self, name: str | None = None) -> tuple[int, bytes] | None:
        """A camera's latest annotated frame as JPEG, re-encoded at most ``preview_fps`` times a second."""
        camera, view, latest = self._latest(name)
        if latest is None:
            return None
        now, cached = time.monotonic(), view.jpeg
        if cached is not None and (cached[0] == latest.seq or now - view.at < 1.0 / self.http.preview_fps):
            return cached
        image = annotate(latest.image, latest.tracked, camera.groups, camera.counting, latest.counts)
        view.jpeg, view.at = (latest.seq, self._encode(image)), now
        self.previews_encoded += 1
        return view.jpeg

    def snapshot(self, name: str | None = None) -> bytes | None:
        """A camera's latest frame without drawings, for the set-up page."""
        _, _, latest = self._latest(name)
        return None if latest is None else self._encode(latest.image)

    def frame_size(self, name: str | None = None) -> tuple[int, int] | None:
        _, _, latest = self._latest(name)
        return None if latest is None else (int(latest.image.shape[1]), int(latest.image.shape[0]))

    # --- JSON views ---
    def _queued(self) -> int:
        return len(self.publisher.outbox) if self.publisher is not None else 0

    def _camera_view(self, camera) -> dict:
        stats = camera.stats.snapshot(camera.dropped, self._queued(), reset=False)
        stats["fps"], stats["errors"] = round(camera.stats.recent_fps, 2), camera.errors
        latest = self._cameras[camera.name].latest
        message = None
        if latest is not None and latest.counts is not None:
            message = counts_message(self.loop.config.device, camera.name, self.loop.model_name, latest.frame_index,
                                     time.time(), latest.counts)
        return {"counts": message, "stats": stats, "connected": bool(getattr(camera.source, "connected", True))}

    def counts(self, name: str | None = None) -> dict:
        """The chosen camera's counts message and stats (``counts``, ``stats``), and every camera's."""
        loop, chosen = self.loop, self.camera(name)
        cameras = {c.name: self._camera_view(c) for c in loop.cameras}
        return {"device": loop.config.device, "model": loop.model_name, "camera": chosen.name,
                **cameras[chosen.name], "cameras": cameras}

    def counting(self, name: str | None = None) -> dict:
        camera = self.camera(name)
        c = camera.counting
        return {"camera": camera.name, "cameras": [x.name for x in self.loop.cameras],
                "line": c.line.dump() if c.line else None, "zones": [z.dump() for z in c.zones],
                "frame_size": self.frame_size(camera.name),
                "config_file": str(self.config_path) if self.config_path else None}

    def health(self) -> tuple[int, dict]:
        """200 while every camera's frames flow; 503 (naming the cameras) when one has had none for 30 s."""
        now, cameras, worst = time.monotonic(), {}, "ok"
        for camera in self.loop.cameras:
            at = camera.stats.last_frame_at
            if at is None:
                state = "starting" if not camera.stop.is_set() else "ended"
            else:
                state = "ok" if now - at <= STALE_AFTER_S or camera.stop.is_set() else "stalled"
            cameras[camera.name] = {"status": state, "frames": camera.stats.frames,
                                    "last_frame_age_s": None if at is None else round(now - at, 2)}
            if state in ("starting", "stalled") and worst != "stalled":
                worst = state
        frames = sum(c.stats.frames for c in self.loop.cameras)
        return (200 if worst == "ok" else 503), {"status": worst, "frames": frames, "cameras": cameras}

    # --- set-up: validate, write back, apply ---
    @staticmethod
    def _own_counting(holder: dict, camera: str, sources: list, top: dict) -> dict:
        """Where a camera's line and zones live in a configuration mapping: its own ``counting`` in ``sources``
        if it has one or shares the box with other cameras (drawing on one camera must not move another's
        line), else the top-level ``counting``."""
        entry = next((s for s in sources if isinstance(s, dict) and s.get("name") == camera), None)
        if entry is None:
            return top
        if entry.get("counting") is None and len(sources) == 1:
            return holder.setdefault("counting", {})
        if entry.get("counting") is None:
            entry["counting"] = {k: v for k, v in top.items() if k not in ("line", "zones")}
        return entry["counting"]

    def update_counting(self, body: dict, name: str | None = None) -> dict:
        """``{"line": {...} | null, "zones": [...]}`` for a camera -> validated, saved, applied. Raises ConfigError."""
        if not isinstance(body, dict) or set(body) - {"line", "zones"} or not {"line", "zones"} <= set(body):
            raise ConfigError("the body must be a JSON object with exactly the keys 'line' and 'zones'",
                              "send {\"line\": {...} or null, \"zones\": [...]}")
        camera = self.camera(name)
        running = self.loop.config.dump(exclude_none=True)
        running.setdefault("counting", {})
        target = self._own_counting(running, camera.name, running.get("sources", []), running["counting"])
        target["line"], target["zones"] = body["line"], body["zones"]
        if target["line"] is None:
            target.pop("line")
        new = parse_config(running, "counting set-up")  # same model as the YAML file: same errors
        saved = False
        if self.config_path is not None:
            self._write_back(new, camera.name)
            saved = True
        self.loop.reconfigure(new)
        log.info("counting set-up of camera %s applied%s", camera.name,
                 f" and saved to {self.config_path}" if saved else "")
        counting = next((c.counting for c in new.sources if c.name == camera.name and c.counting), None) \
            or new.counting
        return {"applied": True, "saved": saved, "camera": camera.name,
                "config_file": str(self.config_path) if saved else None,
                "counting": counting.dump(include={"line", "zones"})}

    def _write_back(self, new: RunConfig, camera: str) -> None:
        """Replace the camera's counting line/zones in the file (other keys as they were), atomically."""
        path = self.config_path
        data = yaml.safe_load(path.read_text()) if path.is_file() else {}
        data = data if isinstance(data, dict) else {}
        data["counting"] = dict(data.get("counting") or {})
        spec = next((c for c in new.sources if c.name == camera), None)
        counting = new.counting_of(spec) if spec is not None else new.counting
        target = self._own_counting(data, camera, data.get("sources") or [], data["counting"])
        target["line"] = counting.line.dump() if counting.line else None
        target["zones"] = [z.dump() for z in counting.zones]
        if target["line"] is None:
            target.pop("line")
        if not data["counting"]:
            data.pop("counting")
        parse_config(data, str(path))  # the file itself must stay valid on its own
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(yaml.safe_dump(data, sort_keys=False))
        os.replace(tmp, path)

    # --- Prometheus ---
    def metrics(self) -> str:
        loop = self.loop
        box = f'device="{loop.config.device}",model="{loop.model_name}"'
        lines: list[str] = []

        def labels(camera, **more) -> str:
            extra = "".join(f',{k}="{_escape(str(v))}"' for k, v in more.items())
            return f'{{{box},camera="{_escape(camera.name)}"{extra}}}'

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]):
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{sample_labels} {value:g}" for sample_labels, value in samples)

        cameras = loop.cameras
        metric("edgecv_frames_processed_total", "counter", "Frames run through the detector, per camera.",
               [(labels(c), c.stats.frames) for c in cameras])
        metric("edgecv_fps", "gauge", "Frames per second over the last 30 frames, per camera.",
               [(labels(c), round(c.stats.recent_fps, 3)) for c in cameras])
        lines.append("# HELP edgecv_inference_latency_seconds Detector latency per frame (preprocess, model, decode).")
        lines.append("# TYPE edgecv_inference_latency_seconds histogram")
        for c in cameras:
            cumulative = np.cumsum(c.stats.histogram)
            for bound, count in zip([*map(str, LATENCY_BUCKETS), "+Inf"], cumulative):
                lines.append(f"edgecv_inference_latency_seconds_bucket{labels(c, le=bound)} {int(count)}")
            lines.append(f"edgecv_inference_latency_seconds_sum{labels(c)} {c.stats.latency_sum:.6f}")
            lines.append(f"edgecv_inference_latency_seconds_count{labels(c)} {int(cumulative[-1])}")
        metric("edgecv_dropped_frames_total", "counter", "Frames a live source dropped because the loop was busy.",
               [(labels(c), c.dropped) for c in cameras])
        metric("edgecv_errors_total", "counter", "Frames skipped (unreadable, or refused by the model).",
               [(labels(c), c.errors) for c in cameras])
        metric("edgecv_camera_connected", "gauge", "1 while a camera delivers frames, 0 while it reconnects.",
               [(labels(c), int(bool(getattr(c.source, "connected", True)))) for c in cameras])
        metric("edgecv_count", "gauge", "Smoothed count per group in the frame.",
               [(labels(c, group=g), getattr(c.counts, g) if c.counts else 0) for c in cameras
                for g in ("people", "goods")])
        metric("edgecv_people_crossings_total", "counter", "People crossing the door line.",
               [(labels(c, direction=d), getattr(c.counts, f"people_{d}") if c.counts else 0) for c in cameras
                for d in ("in", "out")])
        metric("edgecv_zone_count", "gauge", "Tracks inside each zone.",
               [(labels(c, zone=z), n) for c in cameras for z, n in (c.counts.zones.items() if c.counts else [])])
        metric("edgecv_sink_errors_total", "counter", "Failures of each sink (logged; the loop goes on).",
               [(f'{{{box},sink="{_escape(name)}"}}', n) for name, n in sorted(loop.sinks.failures.items())])
        metric("edgecv_mqtt_queue_depth", "gauge", "Messages waiting in the outbox for the broker.",
               [(f"{{{box}}}", self._queued())])
        metric("edgecv_preview_viewers", "gauge", "Clients watching the live view.", [(f"{{{box}}}", self.viewers)])
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _page(name: str) -> str:
    """A page of ``static/``, with the fragments the pages share put in place of their ``<!--NAME-->`` marks
    (inline: a page's every request carries ``?token=``, a ``<script src>`` could not)."""
    static = resources.files("edgecv.edge").joinpath("static")
    text = static.joinpath(name).read_text()
    for shared in ("camera-choice.html",):
        text = text.replace(f"<!--{shared}-->", static.joinpath(shared).read_text())
    return text


class WebServer:
    """aiohttp on its own thread and event loop; ``start`` returns once it listens (or raises)."""

    def __init__(self, view: LiveView, host: str, port: int, token: str | None):
        if not is_loopback(host) and not token:
            raise ConfigError(f"the web view on {host} would be reachable from the network without a token",
                              f"set http.token in the config or {TOKEN_ENV}, or bind 127.0.0.1")
        self.view, self.host, self.port, self.token = view, host, port, token
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="edgecv-http", daemon=True)

    # --- lifecycle ---
    def start(self) -> "WebServer":
        self._thread.start()
        self._started.wait(30)
        if isinstance(self._error, OSError):
            raise EdgecvError(f"the web view cannot listen on {self.host}:{self.port}: {self._error.strerror}",
                              "pick a free port and an address of this machine with --http HOST:PORT") from None
        if self._error is not None:
            raise self._error
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._open())
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
        pending = asyncio.all_tasks(self._loop)  # streams still open: end them before closing the loop
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    async def _open(self) -> None:
        from aiohttp import web

        app = web.Application(client_max_size=MAX_BODY, middlewares=[web.middleware(lambda request, handler: self._auth(request, handler))])
        app.add_routes([web.get("/", self._live), web.get("/setup", self._setup),
                        web.get("/stream.mjpg", self._stream), web.get("/preview.jpg", self._preview_jpg),
                        web.get("/snapshot.jpg", self._snapshot), web.get("/api/counts", self._counts),
                        web.get("/api/counting", self._get_counting), web.post("/api/counting", self._post_counting),
                        web.get("/healthz", self._healthz), web.get("/metrics", self._metrics)])
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        """Close the listener and open streams (a viewer's stream ends), then the event loop."""
        if self._loop is not None and self._loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(10)

    # --- handlers ---
    @property
    def _web(self):
        from aiohttp import web

        return web

    async def _auth(self, request, handler):  # middleware: every request, pages included
        web = self._web
        if self.token is not None:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip() \
                or request.query.get("token", "")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return web.json_response({"error": "missing or wrong token",
                                          "fix": "send Authorization: Bearer <token> or ?token=<token>"}, status=401)
        try:
            return await handler(request)
        except ConfigError as exc:  # ?camera= names no camera of this box
            return web.json_response({"error": exc.problem, "fix": exc.fix}, status=404)

    async def _live(self, request):
        return self._web.Response(text=_page("live.html"), content_type="text/html")

    async def _setup(self, request):
        return self._web.Response(text=_page("setup.html"), content_type="text/html")

    async def _image(self, make) -> object:
        jpeg = await asyncio.get_running_loop().run_in_executor(None, make)
        if jpeg is None:
            return self._web.json_response({"error": "no frame yet"}, status=503)
        return self._web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def _preview_jpg(self, request):
        name = request.query.get("camera")
        return await self._image(lambda: (self.view.preview(name) or (0, None))[1])

    async def _snapshot(self, request):
        name = request.query.get("camera")
        return await self._image(lambda: self.view.snapshot(name))

    async def _stream(self, request):
        """MJPEG: a new part whenever a new preview exists, at most preview_fps parts a second."""
        web = self._web
        response = web.StreamResponse(headers={"Content-Type": "multipart/x-mixed-replace; boundary=frame",
                                               "Cache-Control": "no-store"})
        await response.prepare(request)
        self.view.viewers += 1
        sent = -1
        try:
            loop = asyncio.get_running_loop()
            while True:
                preview = await loop.run_in_executor(None, self.view.preview, request.query.get("camera"))
                if preview is not None and preview[0] != sent:
                    sent = preview[0]
                    await response.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(preview[1])).encode() + b"\r\n\r\n" + preview[1] + b"\r\n")
                await asyncio.sleep(1.0 / self.view.http.preview_fps)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.view.viewers -= 1
        return response

    async def _counts(self, request):
        return self._web.json_response(self.view.counts(request.query.get("camera")))

    async def _get_counting(self, request):
        return self._web.json_response(self.view.counting(request.query.get("camera")))

    async def _post_counting(self, request):
        web = self._web
        try:
            body = json.loads(await request.read())
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": f"body larger than {MAX_BODY} bytes"}, status=413)
        except (ValueError, UnicodeDecodeError):
            return web.json_response({"error": "the body is not JSON"}, status=400)
        try:
            result = await asyncio.get_running_loop().run_in_executor(None, self.view.update_counting, body,
                                                                      request.query.get("camera"))
        except ConfigError as exc:
            return web.json_response({"error": exc.problem, "fix": exc.fix}, status=400)
        except OSError as exc:
            return web.json_response({"error": f"cannot write {self.view.config_path}: {exc.strerror}",
                                      "fix": "make the config file writable by this process"}, status=500)
        return web.json_response(result)

    async def _healthz(self, request):
        status, body = self.view.health()
        return self._web.json_response(body, status=status)

    async def _metrics(self, request):
        return self._web.Response(body=self.view.metrics().encode(),
                                  headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def start_web(loop, config: RunConfig, config_path: Path | None, listen: str | None,
              publisher=None) -> WebServer | None:
    """The web view for ``edgecv run``, when ``--http`` or ``http.listen`` asks for it."""
    listen = listen or config.http.listen
    if not listen:
        return None
    host, port = parse_listen(listen)
    token = os.environ.get(TOKEN_ENV) or config.http.token
    server = WebServer(LiveView(loop, config_path, config.http, publisher), host, port, token).start()
    log.warning("web view on %s (set-up page: %ssetup)", server.url, server.url)
    return server
