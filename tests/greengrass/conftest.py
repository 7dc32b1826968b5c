"""Greengrass fixtures: a development nucleus (IPC server) on a short Unix socket path, and the counter
component's runtime started in-process against it."""
from __future__ import annotations

import json
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from edgecv.edge.config import RunConfig
from edgecv.greengrass.devserver import IpcServer
from edgecv.greengrass.settings import COMPONENT, default_configuration

TOKEN = "5b7a0e3c9d1f4a2b8c6e0f1a2b3c4d5e"
THING = "store-12-door"
SCHEMAS = Path(__file__).resolve().parents[2] / "edge" / "schemas"


@pytest.fixture
def sock_dir():
    d = Path(tempfile.mkdtemp(dir="/tmp", prefix="ggipc"))    # AF_UNIX paths must stay under 108 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


def component_config(source, publish: str = "iotcore", **overrides) -> dict:
    """The recipe's DefaultConfiguration for ``source`` (and its accessControl), with overrides merged in."""
    config = default_configuration(RunConfig(), str(source), publish)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


@pytest.fixture
def nucleus(sock_dir):
    """``nucleus(configuration, **kwargs)`` -> a started development nucleus (stopped at teardown; it must
    have seen no protocol violation)."""
    servers = []

    def make(configuration: dict, **kwargs) -> IpcServer:
        kwargs.setdefault("thing_name", THING)
        server = IpcServer(sock_dir / "ipc.sock", TOKEN, COMPONENT, configuration, **kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
        assert server.protocol_errors == []


class RunningService:
    """``CounterService.run`` in a thread, as ``edgecv component serve`` runs it in its process."""

    def __init__(self, service):
        self.service = service
        self.stop_event = threading.Event()
        self.exit_code = None
        self.error = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            self.exit_code = self.service.run(self.stop_event)
        except BaseException as exc:
            self.error = exc

    def stop(self, timeout: float = 30) -> int:
        self.stop_event.set()
        return self.wait(timeout)

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout: float = 60):
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the service did not stop in time"
        if self.error is not None:
            raise self.error
        return self.exit_code


@pytest.fixture
def start_service(tmp_path, monkeypatch, detector_artifact):
    """``start_service(server, token=TOKEN, **kwargs)`` -> RunningService (stopped at teardown)."""
    from edgecv.greengrass.ipc import IpcSession
    from edgecv.greengrass.service import CounterService

    monkeypatch.setenv("AWS_IOT_THING_NAME", THING)
    running = []

    def start(server: IpcServer, token: str = TOKEN, model_dir: Path | None = None, **kwargs) -> RunningService:
        session = IpcSession(str(server.socket_path), token)
        service = CounterService(session, model_dir or detector_artifact, tmp_path / "work", **kwargs)
        running.append(RunningService(service))
        return running[-1]

    yield start
    for r in running:
        r.stop_event.set()
        r._thread.join(30)


def messages(server: IpcServer, kind: str) -> list[dict]:
    """Decoded JSON payloads published to IoT Core on ``.../<kind>``."""
    return [json.loads(m["payload"]) for m in list(server.published_iot_core) if m["topic"].endswith("/" + kind)]


@pytest.fixture(scope="session")
def counts_schema():
    import jsonschema

    schema = json.loads((SCHEMAS / "counts.schema.json").read_text())
    return lambda message: jsonschema.validate(message, schema)
