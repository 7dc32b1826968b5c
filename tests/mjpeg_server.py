"""A small MJPEG-over-HTTP camera for tests: serves frames of a video, dropping the connection every
``drop_every`` frames (a flaky network camera). Loopback only."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class MjpegCamera:
    def __init__(self, frames_jpeg: list[bytes], drop_every: int, fps: float = 50.0):
        self.frames, self.drop_every, self.fps = frames_jpeg, drop_every, fps
        self.connections = 0
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                import time

                camera.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    for n in range(camera.drop_every):
                        jpeg = camera.frames[(camera.connections * camera.drop_every + n) % len(camera.frames)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                        time.sleep(1 / camera.fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True  # the "network" drops

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/video.mjpg"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
