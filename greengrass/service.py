"""The counter component's runtime (``edgecv component serve``): the edge loop driven by Greengrass.

- Reads the component configuration over IPC and validates it (``settings.parse_component_config``).
- Subscribes to configuration updates and applies them live: thresholds, tracker, each camera's line, zones and
  intervals through ``EdgeLoop.reconfigure`` (totals carried over); new cameras or a new model rebuild only the
  pipeline (a new ``EdgeLoop`` with the same publisher and outbox; totals kept in the state file beside the
  outbox); a new publish target or device, the publisher.
- Publishes through ``IpcPublisher`` (``iotcore`` / ``local``) or ``MqttPublisher`` (``mqtt``), both over the
  durable outbox under the component's work folder.
- Reports ``RUNNING`` once counting, ``ERRORED`` before exiting on an error; a lost IPC connection is
  replaced (the outbox keeps what is counted meanwhile); SIGTERM stops it cleanly: final counts, a bounded
  flush, ``offline``.
"""
from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from pathlib import Path

from edgecv.edge.errors import ArtifactError, ConfigError, EdgecvError
from edgecv.greengrass.ipc import CALL_TIMEOUT, Disconnected, IpcPublisher, IpcSession
from edgecv.greengrass.settings import COMPONENT, ComponentSettings, parse_component_config, thing_name

log = logging.getLogger("edgecv.greengrass")


def find_artifact(path: Path) -> Path:
    """An artifact folder, or a folder holding one artifact per CPU (a model component's decompressed
    artifacts): the one built for this machine."""
    from edgecv.edge.artifact import MANIFEST, read_manifest
    from edgecv.edge.elf import host_arch

    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    if not path.is_dir():
        raise ArtifactError(f"model folder not found: {path}", "deploy the model component, or set `model` to an "
                            "artifact folder made by `edgecv compile`")
    arch = host_arch()
    found = {}
    for candidate in sorted(p for p in path.iterdir() if (p / MANIFEST).is_file()):
        found[candidate] = read_manifest(candidate).target.arch
    mine = [p for p, a in found.items() if a == arch]
    if len(mine) == 1:
        return mine[0]
    if not mine:
        have = ", ".join(f"{p.name} ({a})" for p, a in found.items()) or "no artifacts"
        raise ArtifactError(f"no artifact for this machine ({arch}) in {path}: {have}",
                            "deploy the model component version built for this CPU")
    raise ArtifactError(f"several artifacts for {arch} in {path}: {', '.join(p.name for p in mine)}",
                        "set `model` to one of them")


class Pipeline:
    """Cameras -> one detector -> ... -> sinks (publisher, totals, progress), running an ``EdgeLoop`` in its own
    thread."""

    def __init__(self, settings: ComponentSettings, model_dir: Path, publisher, events: queue.Queue,
                 progress: bool = False):
        from edgecv.edge.detector import Detector
        from edgecv.edge.loop import EdgeLoop, publishing_sinks
        from edgecv.edge.sinks import ProgressSink, StateSink
        from edgecv.edge.sources import open_sources
        from edgecv.edge.state import TotalsFile, default_state_dir

        self.settings = settings
        self.artifact = find_artifact(Path(settings.model) if settings.model else model_dir)
        detector = Detector(self.artifact, settings.run.detect)
        run = settings.run
        sources = open_sources(run.sources)
        totals = TotalsFile(default_state_dir(run.state, run.mqtt.outbox), run.device)
        self.loop = EdgeLoop(run, detector, sources, max_frames=settings.max_frames or None, totals=totals.load())
        for sink in publishing_sinks(publisher, self.loop):
            self.loop.sinks.add(sink)
        self.loop.sinks.add(StateSink(totals, self.loop))
        if progress:
            self.loop.sinks.add(ProgressSink(self.loop, sys.stderr))
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.summary = None
        self._events = events
        self._thread = threading.Thread(target=self._run, name="edgecv-pipeline", daemon=True)

    def start(self) -> "Pipeline":
        log.info("counting from %s with %s", ", ".join(f"{c.name} ({c.url})" for c in self.settings.run.sources),
                 self.artifact)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.summary = self.loop.run(self.stop_event)
        except BaseException as exc:  # reported by the service, which decides what happens next
            self.error = exc
        self._events.put(("ended", self))

    def reconfigure(self, settings: ComponentSettings) -> None:
        self.settings = settings
        self.loop.max_frames = settings.max_frames or None
        self.loop.reconfigure(settings.run)

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()


class CounterService:
    """The component: one IPC session, one publisher, one pipeline at a time."""

    def __init__(self, session: IpcSession, model_dir: Path, work: Path | None = None, component: str = COMPONENT,
                 flush_timeout: float = 5.0, progress: bool = False, connect_deadline: float = 30.0):
        self.session, self.model_dir, self.component = session, Path(model_dir), component
        self.connect_deadline = connect_deadline
        self.work = Path(work) if work else Path.cwd()
        self.flush_timeout = flush_timeout
        self.progress = progress
        self.events: queue.Queue = queue.Queue()
        self.settings: ComponentSettings | None = None
        self.publisher = None
        self.pipeline: Pipeline | None = None
        self.pipelines_started = 0
        self.reconfigured = 0
        self.config_errors: list[str] = []
        self.error: str | None = None
        self._subscribed_generation = None

    # --- configuration ---
    def read_settings(self) -> ComponentSettings:
        response = self.session.call(lambda c: c.get_configuration_async().result(CALL_TIMEOUT), "GetConfiguration")
        return parse_component_config(response.value, thing_name=thing_name(), work=self.work,
                                      component=self.component)

    def _on_connect(self, client) -> None:
        """After every (re)connect: subscribe to configuration updates again and re-read the configuration
        (it may have changed while the connection was down)."""
        self.session.call(lambda c: c.subscribe_to_configuration_update(
            on_stream_event=lambda event: self.events.put(("config", None)),
            on_stream_error=lambda error: (log.warning("configuration updates stream: %s", error), True)[1]),
            "SubscribeToConfigurationUpdate")
        self.events.put(("config", None))
        if self.pipeline is not None:
            self.session.update_state("RUNNING")

    def _apply(self, settings: ComponentSettings) -> None:
        old = self.settings
        if old is not None and settings == old:
            return
        if old is None:
            self._replace_publisher(settings)
            self._start_pipeline(settings)
        elif settings.publisher_key() != old.publisher_key():
            self._stop_pipeline()
            self._replace_publisher(settings)
            settings = self._restart(settings, old)
        elif settings.pipeline_key() != old.pipeline_key() or self.pipeline is None or not self.pipeline.running:
            self._stop_pipeline()
            settings = self._restart(settings, old)
        else:
            self.pipeline.reconfigure(settings)
            self.reconfigured += 1
            log.info("configuration updated live")
        self.settings = settings

    def _restart(self, settings: ComponentSettings, old: ComponentSettings) -> ComponentSettings:
        """A new pipeline for ``settings``; if its source or model can't be opened, the previous one again."""
        try:
            self._start_pipeline(settings)
            return settings
        except EdgecvError as exc:
            self.config_errors.append(str(exc))
            log.error("%s; going on with the previous source and model", exc)
            previous = ComponentSettings(old.source, settings.publish, old.model, old.max_frames,
                                         settings.run.replace(sources=old.run.sources))
            self._start_pipeline(previous)
            return previous

    def _replace_publisher(self, settings: ComponentSettings) -> None:
        from edgecv.edge.loop import default_outbox, open_publisher
        from edgecv.edge.outbox import Outbox

        if self.publisher is not None:
            self.publisher.stop(flush_timeout=min(2.0, self.flush_timeout))
            self.publisher.outbox.close()
        run = settings.run
        if settings.publish == "mqtt":  # as `edgecv run --mqtt` publishes
            self.publisher = open_publisher(run)
        else:  # the same outbox file: what one transport didn't deliver, the other sends
            self.publisher = IpcPublisher(self.session, settings.publish, run.mqtt.topic_prefix, run.device,
                                          Outbox(default_outbox(run.device, run.mqtt.outbox)), qos=run.mqtt.qos).start()
        log.info("publishing to %s as %s (%d messages waiting in %s)", settings.publish, run.device,
                 len(self.publisher.outbox), self.publisher.outbox.path)

    def _start_pipeline(self, settings: ComponentSettings) -> None:
        self.pipeline = Pipeline(settings, self.model_dir, self.publisher, self.events, self.progress).start()
        self.pipelines_started += 1

    def _stop_pipeline(self) -> None:
        if self.pipeline is not None:
            self.pipeline.stop()
            self.pipeline = None

    # --- the component's life ---
    def run(self, stop: threading.Event) -> int:
        """Serve until ``stop`` (SIGTERM), the end of a file source or ``max_frames`` (0), or an error (1)."""
        self.session.on_connect(self._on_connect)
        self.session.connect(self.connect_deadline)
        try:
            try:
                self._apply(self.read_settings())
            except Disconnected:
                raise EdgecvError("the IPC connection to the nucleus closed at start", "the nucleus restarts it")
            self.session.update_state("RUNNING")
            return self._serve(stop)
        except EdgecvError as exc:
            self.error = str(exc)
            log.error("%s", exc)
            self.session.update_state("ERRORED")
            return 1
        except Exception as exc:  # a bug: say so with the traceback, and tell the nucleus
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("the component failed")
            self.session.update_state("ERRORED")
            return 1
        finally:
            self._shutdown()

    def _serve(self, stop: threading.Event) -> int:
        while not stop.is_set():
            if self.publisher is not None and getattr(self.publisher, "fatal_error", None):
                raise EdgecvError(self.publisher.fatal_error)
            try:
                kind, item = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            if kind == "config":
                self._debounce()
                try:
                    settings = self.read_settings()
                except Disconnected:
                    continue                          # re-read after the reconnect
                except ConfigError as exc:
                    self.config_errors.append(str(exc))
                    log.error("%s; keeping the previous configuration", exc)
                    continue
                self._apply(settings)
            elif kind == "ended" and item is self.pipeline:
                if item.error is not None:
                    error = item.error
                    raise error if isinstance(error, EdgecvError) else EdgecvError(
                        f"the pipeline stopped: {type(error).__name__}: {error}")
                log.info("the source ended after %d frames", item.summary.frames if item.summary else 0)
                return 0
        return 0

    def _debounce(self, quiet: float = 0.3) -> None:
        """A deployment changes several keys at once (one event each): read the configuration once."""
        deadline = time.monotonic() + quiet
        while time.monotonic() < deadline:
            try:
                kind, item = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            if kind != "config":
                self.events.put((kind, item))
                return

    def _shutdown(self) -> None:
        self._stop_pipeline()
        if self.publisher is not None:
            refused = getattr(self.publisher, "fatal_error", None)     # nothing more will be accepted: don't wait
            delivered = self.publisher.flush(0 if refused else self.flush_timeout)
            if not delivered:
                log.warning("%d messages not yet delivered are kept in %s for the next start",
                            len(self.publisher.outbox), self.publisher.outbox.path)
            self.publisher.stop(flush_timeout=0)
            self.publisher.outbox.close()
        self.session.close()


def serve(model_dir: Path, work: Path | None = None, component: str = COMPONENT, flush_timeout: float = 5.0,
          stop: threading.Event | None = None) -> int:
    """``edgecv component serve``: run as the nucleus started us (IPC socket and token from the environment)."""
    session = IpcSession()
    service = CounterService(session, model_dir, work, component, flush_timeout, progress=True)
    return service.run(stop or threading.Event())


__all__ = ["CounterService", "Pipeline", "find_artifact", "serve"]
