"""A real Mosquitto broker for tests: started on a free loopback port, stoppable and restartable."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    def __init__(self, workdir: Path, tls: dict | None = None, password_file: Path | None = None):
        if shutil.which("mosquitto") is None:
            raise RuntimeError("mosquitto not found: apt-get install mosquitto (make setup does)")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        # run as ourselves: as root, mosquitto would switch to the "mosquitto" user, which can't read
        # the certificates and password files pytest makes in its private temp folder
        import getpass

        lines = [f"user {getpass.getuser()}", f"listener {self.port} 127.0.0.1", "persistence false",
                 f"allow_anonymous {'false' if password_file else 'true'}"]
        if password_file:
            lines.append(f"password_file {password_file}")
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}",
                      "require_certificate true", "tls_version tlsv1.2"]
        self.conf = self.workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = self.workdir / "mosquitto.log"

    def start(self, timeout: float = 10) -> "Mosquitto":
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


def make_certificates(folder: Path) -> dict:
    """A CA, a broker certificate for 127.0.0.1/localhost and a client certificate, made with openssl."""
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", "ca.key", "-out", "ca.crt",
        "-subj", "/CN=edgecv test CA")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={'localhost' if name == 'server' else 'edgecv-client'}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-out", f"{name}.crt", *(["-extfile", "san.ext"] if name == "server" else []))
    return {n: folder / f for n, f in {"ca": "ca.crt", "cert": "server.crt", "key": "server.key",
                                       "client_cert": "client.crt", "client_key": "client.key"}.items()}


class Subscriber:
    """A paho subscriber that collects (topic, payload bytes, retain) in order."""

    def __init__(self, port: int, topic: str = "#", tls: dict | None = None, auth: tuple | None = None):
        import threading

        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{port}-{id(self)}")
        if tls:
            self.client.tls_set(ca_certs=str(tls["ca"]), certfile=str(tls["client_cert"]), keyfile=str(tls["client_key"]))
        if auth:
            self.client.username_pw_set(*auth)

        def on_connect(client, userdata, flags, reason_code, properties):
            client.subscribe(topic, qos=1)

        def on_subscribe(client, userdata, mid, reason_codes, properties):
            self._ready.set()

        def on_message(client, userdata, msg):
            with self._cond:
                self.messages.append((msg.topic, msg.payload, msg.retain))
                self._cond.notify_all()

        self.client.on_connect, self.client.on_subscribe, self.client.on_message = on_connect, on_subscribe, on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._ready.wait(10), "subscriber did not subscribe"

    def wait_for(self, predicate, timeout: float = 30) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.messages), timeout=timeout)

    def json(self, suffix: str) -> list[dict]:
        import json

        return [json.loads(p) for t, p, _ in self.messages if t.endswith(suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
