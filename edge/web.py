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


class LiveView:
    """What the pages show, fed by the loop as a frame listener; previews are encoded on demand."""

    def __init__(self, loop, config_path: Path | None, http: HttpConfig):
        self.loop = loop
        self.config_path = Path(config_path) if config_path else None
        self.http = http
        self.viewers = 0
        self._latest: _Latest | None = None
        self._seq = 0
        self._lock = threading.Lock()
        self._preview: tuple[int, bytes] | None = None  # (seq, jpeg)
        self._preview_at = 0.0
        self.previews_encoded = 0
        loop.frame_listeners.append(self)

    def __call__(self, frame, tracked, counts) -> None:  # the loop thread: keep references, nothing else
        with self._lock:
            self._seq += 1
            self._latest = _Latest(frame.image, tracked, counts, self._seq, frame.index)

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

    def preview(self) -> tuple[int, bytes] | None:
        """The latest annotated frame as JPEG, re-encoded at most ``preview_fps`` times a second."""
        with self._lock:
            latest, cached = self._latest, self._preview
        if latest is None:
            return None
        now = time.monotonic()
        if cached is not None and (cached[0] == latest.seq or now - self._preview_at < 1.0 / self.http.preview_fps):
            return cached
        loop = self.loop
        image = annotate(latest.image, latest.tracked, loop.groups, loop.config.counting, latest.counts)
        self._preview, self._preview_at = (latest.seq, self._encode(image)), now
        self.previews_encoded += 1
        return self._preview

    def snapshot(self) -> bytes | None:
        """The camera's latest frame without drawings, for the set-up page."""
        with self._lock:
            latest = self._latest
        return None if latest is None else self._encode(latest.image)

    def frame_size(self) -> tuple[int, int] | None:
        with self._lock:
            latest = self._latest
        return None if latest is None else (int(latest.image.shape[1]), int(latest.image.shape[0]))

    # --- JSON views ---
    def counts(self) -> dict:
        loop = self.loop
        queued = len(loop.publisher.outbox) if loop.publisher is not None else 0
        stats = loop.stats.snapshot(loop.source.dropped, queued, reset=False)
        stats["fps"] = round(loop.stats.recent_fps, 2)
        with self._lock:
            latest = self._latest
        message = None
        if latest is not None and latest.counts is not None:
            message = counts_message(loop.config.device, loop.model_name, latest.frame_index, time.time(), latest.counts)
        return {"device": loop.config.device, "model": loop.model_name, "counts": message, "stats": stats}

    def counting(self) -> dict:
        c = self.loop.config.counting
        return {"line": c.line.dump() if c.line else None,
                "zones": [z.dump() for z in c.zones],
                "frame_size": self.frame_size(), "config_file": str(self.config_path) if self.config_path else None}

    def health(self) -> tuple[int, dict]:
        at = self.loop.stats.last_frame_at
        if at is None:
            return 503, {"status": "starting", "frames": 0}
        age = time.monotonic() - at
        status = "ok" if age <= STALE_AFTER_S else "stalled"
        return (200 if status == "ok" else 503), {"status": status, "frames": self.loop.stats.frames,
                                                   "last_frame_age_s": round(age, 2)}

    # --- set-up: validate, write back, apply ---
    def update_counting(self, body: dict) -> dict:
        """``{"line": {...} | null, "zones": [...]}`` -> validated, saved, applied. Raises ConfigError."""
        if not isinstance(body, dict) or set(body) - {"line", "zones"} or not {"line", "zones"} <= set(body):
            raise ConfigError("the body must be a JSON object with exactly the keys 'line' and 'zones'",
                              "send {\"line\": {...} or null, \"zones\": [...]}")
        running = self.loop.config.dump(exclude_none=True)
        running["counting"] = {**running["counting"], "line": body["line"], "zones": body["zones"]}
        new = parse_config(running, "counting set-up")  # same model as the YAML file: same errors
        saved = False
        if self.config_path is not None:
            self._write_back(new)
            saved = True
        self.loop.reconfigure(new)
        log.info("counting set-up applied%s", f" and saved to {self.config_path}" if saved else "")
        return {"applied": True, "saved": saved, "config_file": str(self.config_path) if saved else None,
                "counting": new.counting.dump(include={"line", "zones"})}

    def _write_back(self, new: RunConfig) -> None:
        """Replace counting.line/zones in the file (other keys as they were), atomically."""
        path = self.config_path
        data = yaml.safe_load(path.read_text()) if path.is_file() else {}
        data = data if isinstance(data, dict) else {}
        counting = dict(data.get("counting") or {})
        counting["line"] = new.counting.line.dump() if new.counting.line else None
        counting["zones"] = [z.dump() for z in new.counting.zones]
        if counting["line"] is None:
            counting.pop("line")
        data["counting"] = counting
        parse_config(data, str(path))  # the file itself must stay valid on its own
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(yaml.safe_dump(data, sort_keys=False))
        os.replace(tmp, path)

    # --- Prometheus ---
    def metrics(self) -> str:
        loop, stats = self.loop, self.loop.stats
        labels = f'device="{loop.config.device}",model="{loop.model_name}"'
        lines: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]):
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{sample_labels} {value:g}" for sample_labels, value in samples)

        metric("edgecv_frames_processed_total", "counter", "Frames run through the detector.",
               [(f"{{{labels}}}", stats.frames)])
        metric("edgecv_fps", "gauge", "Frames per second over the last 30 frames.",
               [(f"{{{labels}}}", round(stats.recent_fps, 3))])
        cumulative = np.cumsum(stats.histogram)
        lines.append("# HELP edgecv_inference_latency_seconds Detector latency per frame (preprocess, model, decode).")
        lines.append("# TYPE edgecv_inference_latency_seconds histogram")
        for bound, count in zip([*map(str, LATENCY_BUCKETS), "+Inf"], cumulative):
            lines.append(f'edgecv_inference_latency_seconds_bucket{{{labels},le="{bound}"}} {int(count)}')
        lines.append(f"edgecv_inference_latency_seconds_sum{{{labels}}} {stats.latency_sum:.6f}")
        lines.append(f"edgecv_inference_latency_seconds_count{{{labels}}} {int(cumulative[-1])}")
        metric("edgecv_dropped_frames_total", "counter", "Frames a live source dropped because the loop was busy.",
               [(f"{{{labels}}}", loop.source.dropped)])
        metric("edgecv_errors_total", "counter", "Frames skipped and sink failures.",
               [(f"{{{labels}}}", stats.errors + loop.source.errors)])
        counts = loop.counts
        metric("edgecv_count", "gauge", "Smoothed count per group in the frame.",
               [(f'{{{labels},group="{g}"}}', getattr(counts, g) if counts else 0) for g in ("people", "goods")])
        metric("edgecv_people_crossings_total", "counter", "People crossing the door line.",
               [(f'{{{labels},direction="{d}"}}', getattr(counts, f"people_{d}") if counts else 0)
                for d in ("in", "out")])
        metric("edgecv_zone_count", "gauge", "Smoothed count per zone.",
               [(f'{{{labels},zone="{_escape(z)}"}}', n) for z, n in (counts.zones.items() if counts else [])])
        queued = len(loop.publisher.outbox) if loop.publisher is not None else 0
        metric("edgecv_mqtt_queue_depth", "gauge", "Messages waiting in the outbox for the broker.",
               [(f"{{{labels}}}", queued)])
        metric("edgecv_preview_viewers", "gauge", "Clients watching the live view.", [(f"{{{labels}}}", self.viewers)])
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _page(name: str) -> str:
    return resources.files("edgecv.edge").joinpath("static", name).read_text()


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
        return await handler(request)

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
        return await self._image(lambda: (self.view.preview() or (0, None))[1])

    async def _snapshot(self, request):
        return await self._image(self.view.snapshot)

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
                preview = await loop.run_in_executor(None, self.view.preview)
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
        return self._web.json_response(self.view.counts())

    async def _get_counting(self, request):
        return self._web.json_response(self.view.counting())

    async def _post_counting(self, request):
        web = self._web
        try:
            body = json.loads(await request.read())
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": f"body larger than {MAX_BODY} bytes"}, status=413)
        except (ValueError, UnicodeDecodeError):
            return web.json_response({"error": "the body is not JSON"}, status=400)
        try:
            result = await asyncio.get_running_loop().run_in_executor(None, self.view.update_counting, body)
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


def start_web(loop, config: RunConfig, config_path: Path | None, listen: str | None) -> WebServer | None:
    """The web view for ``edgecv run``, when ``--http`` or ``http.listen`` asks for it."""
    listen = listen or config.http.listen
    if not listen:
        return None
    host, port = parse_listen(listen)
    token = os.environ.get(TOKEN_ENV) or config.http.token
    server = WebServer(LiveView(loop, config_path, config.http), host, port, token).start()
    log.warning("web view on %s (set-up page: %ssetup)", server.url, server.url)
    return server
