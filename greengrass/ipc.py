"""Greengrass IPC for the counter component: one connection that survives the nucleus going away, and a
publisher that sends the durable outbox through it.

``IpcSession`` owns the ``GreengrassCoreIPCClientV2``. The SDK never reconnects a client whose connection
closed (every later call raises ``ConnectionClosedError``), so a lost connection is replaced by a new client,
with backoff, and listeners (the publisher, the configuration subscription) are told after every connect.

``IpcPublisher`` has the edge loop's publisher interface (``edgecv.edge.mqtt.OutboxPublisher``): messages are
written to the same on-disk outbox first and deleted when the nucleus answers the publish call, so counts
produced while the nucleus is down are delivered, in order, once it is back. ``iotcore`` publishes with
``PublishToIoTCore`` (the message's QoS: 1 for counts and events), ``local`` with ``PublishToTopic`` (JSON
payloads as ``jsonMessage``, anything else as ``binaryMessage``).
"""
from __future__ import annotations

import concurrent.futures
import itertools
import json
import logging
import os
import threading
import time
from typing import Callable

from edgecv.edge.errors import EdgecvError
from edgecv.edge.mqtt import OutboxPublisher
from edgecv.edge.outbox import Outbox

log = logging.getLogger("edgecv.greengrass")

SOCKET_ENV = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"
TOKEN_ENV = "SVCUID"
CALL_TIMEOUT = 10.0


class IpcError(EdgecvError):
    """The Greengrass nucleus can't be reached or refused us."""


class Disconnected(Exception):
    """No IPC connection right now (a new one is being made)."""


def in_greengrass(environ=None) -> bool:
    """Whether this process was started by a Greengrass nucleus (it sets the IPC socket and token)."""
    environ = os.environ if environ is None else environ
    return bool(environ.get(SOCKET_ENV)) and bool(environ.get(TOKEN_ENV))


def _connection_errors() -> tuple:
    from awscrt.exceptions import AwsCrtError
    from awsiot.eventstreamrpc import ConnectionClosedError, StreamClosedError

    return (ConnectionClosedError, StreamClosedError, AwsCrtError, concurrent.futures.TimeoutError,
            concurrent.futures.CancelledError)


class IpcSession:
    """The component's IPC connection. ``call(fn)`` runs ``fn(client)``; a connection error marks the
    session down, starts reconnecting in the background and raises ``Disconnected``."""

    def __init__(self, socket_path: str | None = None, token: str | None = None, connect_timeout: float = 5.0,
                 max_backoff: float = 10.0):
        self.socket_path = socket_path or os.environ.get(SOCKET_ENV)
        self.token = token or os.environ.get(TOKEN_ENV)
        if not self.socket_path or not self.token:
            raise IpcError(f"not running under Greengrass: {SOCKET_ENV} and {TOKEN_ENV} are not set",
                           "deploy the component, or try it with `edgecv component run-local`")
        self.connect_timeout, self.max_backoff = connect_timeout, max_backoff
        self._client = None
        self._generation = 0
        self._lock = threading.Lock()
        self._up = threading.Event()
        self._closed = threading.Event()
        self._reconnecting = False
        self._listeners: list[Callable] = []
        self.connects = 0
        self.last_error: str | None = None

    # --- connecting ---
    def _new_client(self):
        import awsiot.greengrasscoreipc as ggipc
        from awsiot.eventstreamrpc import LifecycleHandler
        from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

        session = self

        class Handler(LifecycleHandler):
            generation = None

            def on_disconnect(self, reason):
                session._lost(self.generation, f"the nucleus closed the IPC connection ({reason})")

            def on_error(self, error):
                log.warning("IPC connection error: %s", error)
                return True

        handler = Handler()
        connection = ggipc.connect(ipc_socket=self.socket_path, authtoken=self.token, lifecycle_handler=handler,
                                   timeout=self.connect_timeout)
        return GreengrassCoreIPCClientV2(client=connection), handler

    def connect(self, deadline: float = 30.0) -> "IpcSession":
        """Connect now, retrying until ``deadline`` seconds pass; ``IpcError`` (one line) if it can't."""
        end = time.monotonic() + deadline
        delay = 0.2
        while True:
            try:
                self._open()
                return self
            except Exception as exc:
                reason = self._describe(exc)
                if time.monotonic() + delay > end or self._closed.is_set():
                    raise IpcError(f"can't connect to the Greengrass nucleus at {self.socket_path}: {reason}",
                                   "check that the nucleus runs and that the component was started by it "
                                   f"(a wrong {TOKEN_ENV} is refused by closing the socket)") from None
                log.warning("connecting to the nucleus failed (%s); retrying", reason)
                time.sleep(delay)
                delay = min(delay * 2, self.max_backoff)

    @staticmethod
    def _describe(exc: BaseException) -> str:
        name = getattr(exc, "name", None)
        if name == "AWS_IO_SOCKET_CLOSED":
            return "the nucleus closed the socket during the handshake (the token in SVCUID was refused?)"
        text = str(exc) or type(exc).__name__
        if "AWS_ERROR_FILE_INVALID_PATH" in text or "AWS_IO_SOCKET_CONNECTION_REFUSED" in text:
            return "no IPC socket there (the nucleus is not running)"
        return text

    def _open(self) -> None:
        client, handler = self._new_client()
        with self._lock:
            self._generation += 1
            handler.generation = self._generation
            old, self._client = self._client, client
            self.connects += 1
            self.last_error = None
            self._up.set()
        if old is not None:
            _close_quietly(old)
        log.info("connected to the Greengrass nucleus (connection %d)", self.connects)
        for listener in list(self._listeners):
            try:
                listener(client)
            except Disconnected:
                return
            except Exception as exc:
                log.error("after connecting: %s", exc)

    def _lost(self, generation: int | None, reason: str) -> None:
        with self._lock:
            if generation is not None and generation != self._generation:
                return                          # an older client's late goodbye
            if not self._up.is_set() and self._reconnecting:
                return
            self._up.clear()
            self.last_error = reason
            start = not self._reconnecting and not self._closed.is_set()
            self._reconnecting = self._reconnecting or start
        if start:
            log.warning("%s; reconnecting", reason)
            threading.Thread(target=self._reconnect, name="edgecv-ipc-reconnect", daemon=True).start()

    def _reconnect(self) -> None:
        delay = 0.5
        while not self._closed.is_set():
            try:
                self._open()
            except Exception as exc:
                log.debug("reconnect failed: %s", self._describe(exc))
            with self._lock:
                if self._up.is_set() or self._closed.is_set():
                    self._reconnecting = False
                    return
            self._closed.wait(delay)
            delay = min(delay * 2, self.max_backoff)
        with self._lock:
            self._reconnecting = False

    # --- using it ---
    def on_connect(self, listener: Callable) -> None:
        """``listener(client)`` after every (re)connect, on the connecting thread."""
        self._listeners.append(listener)

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._up.wait(timeout)

    def call(self, fn: Callable, what: str = "IPC call"):
        with self._lock:
            client, generation = (self._client, self._generation) if self._up.is_set() else (None, None)
        if client is None:
            raise Disconnected(what)
        try:
            return fn(client)
        except _connection_errors() as exc:
            self._lost(generation, f"{what} failed: {self._describe(exc)}")
            raise Disconnected(what) from None
        except RuntimeError as exc:
            if type(exc).__module__.startswith("awsiot.greengrasscoreipc"):
                raise                                # a modeled error (UnauthorizedError...): the caller's
            if "closed" in str(exc).lower():
                self._lost(generation, f"{what} failed: {exc}")
                raise Disconnected(what) from None
            raise

    def update_state(self, state: str) -> bool:
        """Report RUNNING / ERRORED to the nucleus; False if it can't be told right now."""
        try:
            self.call(lambda c: c.update_state_async(state=state).result(CALL_TIMEOUT), f"UpdateState {state}")
            return True
        except Disconnected:
            return False
        except Exception as exc:
            log.error("UpdateState %s failed: %s", state, exc)
            return False

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            client, self._client = self._client, None
            self._up.clear()
        if client is not None:
            _close_quietly(client)


def _close_quietly(client) -> None:
    try:
        client.close(executor_wait=False)
    except Exception as exc:   # closing a dead connection may complain; nothing to do about it
        log.debug("closing the IPC client: %s", exc)


class IpcPublisher(OutboxPublisher):
    """Publish the outbox through the nucleus: ``iotcore`` (PublishToIoTCore) or ``local`` (PublishToTopic)."""

    def __init__(self, session: IpcSession, target: str, topic_prefix: str, device: str, outbox: Outbox,
                 qos: int = 1, window: int = 50):
        if target not in ("iotcore", "local"):
            raise ValueError(f"IPC publish target must be iotcore or local, not {target!r}")
        super().__init__(outbox, topic_prefix, device, qos, window, name=f"edgecv-ipc-{target}")
        self.session, self.target = session, target
        self.status_topic = self.topic("status")
        self.fatal_error: str | None = None
        self.dropped = 0
        self._tokens = itertools.count(1)
        self._started = False

    def _on_session_connect(self, client) -> None:
        if self._stop.is_set():
            return
        self._send_status("online")
        self._connected_now()

    def start(self) -> "IpcPublisher":
        self.session.on_connect(self._on_session_connect)
        self._start_pump()
        self._started = True
        if self.session.connected:
            self._on_session_connect(None)
        return self

    def _call_publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        from awsiot.greengrasscoreipc import model

        if self.target == "iotcore":
            self.session.call(lambda c: c.publish_to_iot_core_async(
                topic_name=topic, qos=model.QOS.AT_LEAST_ONCE if qos else model.QOS.AT_MOST_ONCE, payload=payload,
                retain=True if retain else None).result(CALL_TIMEOUT), f"PublishToIoTCore {topic}")
            return
        message = _local_message(payload)
        self.session.call(lambda c: c.publish_to_topic_async(topic=topic, publish_message=message)
                          .result(CALL_TIMEOUT), f"PublishToTopic {topic}")

    def _send(self, topic: str, payload: bytes, qos: int, retain: bool):
        from awsiot.greengrasscoreipc import model

        if self.fatal_error is not None:
            return None
        try:
            self._call_publish(topic, payload, qos, retain)
        except Disconnected:
            self._disconnected_now()
            self.last_error = f"IPC connection lost; {len(self.outbox)} messages kept on disk"
            return None
        except model.UnauthorizedError:
            policy = "aws.greengrass.ipc.mqttproxy" if self.target == "iotcore" else "aws.greengrass.ipc.pubsub"
            self.fatal_error = (f"the nucleus does not allow publishing to {topic!r}: add it to the component's "
                                f"accessControl ({policy}) and deploy again")
            self.last_error = self.fatal_error
            self._disconnected_now()
            log.error("%s; %d messages kept on disk", self.fatal_error, len(self.outbox))
            return None
        except (model.InvalidArgumentsError, model.ServiceError) as exc:
            # the nucleus will never take this one (too large, say): drop it rather than block the queue
            self.dropped += 1
            log.error("the nucleus rejected a message to %s (%s): dropped", topic, exc)
        token = next(self._tokens)
        self._acked(token)
        return token

    def _send_status(self, text: str) -> None:
        try:
            self._call_publish(self.status_topic, text.encode(), 1, True)
        except Disconnected:
            pass
        except Exception as exc:
            log.warning("publishing status %s failed: %s", text, exc)

    def stop(self, flush_timeout: float = 5.0) -> None:
        if self.fatal_error is None:
            self.flush(flush_timeout)
            if self.connected:
                self._send_status("offline")
        self._stop.set()
        self._disconnected_now()
        self._stop_pump()


def _local_message(payload: bytes):
    from awsiot.greengrasscoreipc import model

    try:
        value = json.loads(payload)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return model.PublishMessage(json_message=model.JsonMessage(message=value))
    return model.PublishMessage(binary_message=model.BinaryMessage(message=payload))
