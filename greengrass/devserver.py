"""A development Greengrass v2 IPC server: what ``edgecv component run-local`` and the tests run a component
against, spoken to by the real ``awsiotsdk`` client.

It behaves like the Greengrass nucleus (the C "lite" nucleus as observed on the wire): AWS eventstream framing
over a Unix socket, the eventstream-RPC handshake (CONNECT with ``{"authToken": ...}`` -> CONNECT_ACK, or a
silent close for a wrong token), one stream id per operation, ``aws.greengrass#...`` JSON shapes for
responses, errors and subscription events.

Parsing is strict: a bad prelude or message CRC, a malformed header block, missing or mistyped RPC headers,
a stream id that is not the next one, a request whose ``service-model-type`` does not match its
``operation``... is recorded in ``protocol_errors`` and the connection is dropped (as the real nucleus drops
it), so tests can assert that the client under test speaks the real protocol.

Authorization: with ``allowed_topics`` given, those topics (exact, ``*`` globs or MQTT filters) are allowed
for every publish/subscribe operation. Without it, the component's own ``accessControl`` configuration is
enforced as the nucleus does (per IPC service and operation, ``{iot:thingName}`` in resources interpolated
with ``thing_name`` as nucleus v2.6+ does); a component with no ``accessControl`` at all is allowed
everything (a convenience for quick tests; the nucleus would refuse).

Stdlib only. Usage::

    server = IpcServer(Path(tmp) / "ipc.socket", token="tok", component="com.example.C",
                       configuration={"a": {"b": 1}}, allowed_topics={"t/1"}).start()
    ...
    server.stop()        # the nucleus dies: listener and every client connection closed
    server.start()       # the nucleus comes back on the same path (state and records are kept)
"""
from __future__ import annotations

import base64
import binascii
import copy
import inspect
import json
import os
import socket
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Callable

__all__ = ["IpcServer", "ProtocolError", "encode_message", "decode_message", "read_message"]

# --- eventstream framing -----------------------------------------------------------------------------

PRELUDE_LEN = 12
MIN_MESSAGE_LEN = 16                 # prelude + message CRC
MAX_MESSAGE_LEN = 16 * 1024 * 1024   # aws-c-event-stream limits
MAX_HEADERS_LEN = 128 * 1024

H_TRUE, H_FALSE, H_BYTE, H_INT16, H_INT32, H_INT64, H_BYTES, H_STRING, H_TIMESTAMP, H_UUID = range(10)

# eventstream-RPC message types and flags
MSG_APPLICATION = 0
MSG_APPLICATION_ERROR = 1
MSG_PING = 2
MSG_PING_RESPONSE = 3
MSG_CONNECT = 4
MSG_CONNECT_ACK = 5
MSG_PROTOCOL_ERROR = 6
MSG_INTERNAL_ERROR = 7
FLAG_CONNECTION_ACCEPTED = 1
FLAG_TERMINATE_STREAM = 2

RPC_VERSION = "0.1.0"
JSON = "application/json"
NS = "aws.greengrass#"


class ProtocolError(Exception):
    """The peer broke the eventstream / eventstream-RPC protocol."""


def _encode_header(name: str, value) -> bytes:
    raw_name = name.encode()
    if not 0 < len(raw_name) < 256:
        raise ValueError(f"bad header name {name!r}")
    out = bytes([len(raw_name)]) + raw_name
    if isinstance(value, bool):
        return out + bytes([H_TRUE if value else H_FALSE])
    if isinstance(value, int):
        return out + bytes([H_INT32]) + struct.pack(">i", value)
    if isinstance(value, str):
        raw = value.encode()
        return out + bytes([H_STRING]) + struct.pack(">H", len(raw)) + raw
    if isinstance(value, (bytes, bytearray)):
        return out + bytes([H_BYTES]) + struct.pack(">H", len(value)) + bytes(value)
    raise TypeError(f"unsupported header value {value!r}")


def encode_message(headers: list[tuple[str, Any]], payload: bytes = b"") -> bytes:
    """One eventstream message: ints are int32 headers, strs string headers."""
    block = b"".join(_encode_header(n, v) for n, v in headers)
    total = PRELUDE_LEN + len(block) + len(payload) + 4
    prelude = struct.pack(">II", total, len(block))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + block + payload
    return body + struct.pack(">I", zlib.crc32(body))


def _decode_prelude(prelude: bytes) -> tuple[int, int]:
    total, headers_len, crc = struct.unpack(">III", prelude)
    if zlib.crc32(prelude[:8]) != crc:
        raise ProtocolError(f"prelude CRC mismatch (got {crc:#010x}, computed {zlib.crc32(prelude[:8]):#010x})")
    if total < MIN_MESSAGE_LEN or total > MAX_MESSAGE_LEN:
        raise ProtocolError(f"message length {total} out of range")
    if headers_len > MAX_HEADERS_LEN or headers_len > total - MIN_MESSAGE_LEN:
        raise ProtocolError(f"headers length {headers_len} does not fit message length {total}")
    return total, headers_len


def _decode_headers(block: bytes) -> dict[str, tuple[int, Any]]:
    headers: dict[str, tuple[int, Any]] = {}
    i, n = 0, len(block)

    def take(k: int) -> bytes:
        nonlocal i
        if i + k > n:
            raise ProtocolError("header block truncated")
        chunk = block[i:i + k]
        i += k
        return chunk

    while i < n:
        name_len = take(1)[0]
        if name_len == 0:
            raise ProtocolError("empty header name")
        try:
            name = take(name_len).decode()
        except UnicodeDecodeError as e:
            raise ProtocolError(f"header name not UTF-8: {e}") from None
        htype = take(1)[0]
        if htype == H_TRUE:
            value: Any = True
        elif htype == H_FALSE:
            value = False
        elif htype == H_BYTE:
            value = struct.unpack(">b", take(1))[0]
        elif htype == H_INT16:
            value = struct.unpack(">h", take(2))[0]
        elif htype == H_INT32:
            value = struct.unpack(">i", take(4))[0]
        elif htype in (H_INT64, H_TIMESTAMP):
            value = struct.unpack(">q", take(8))[0]
        elif htype in (H_BYTES, H_STRING):
            length = struct.unpack(">H", take(2))[0]
            value = take(length)
            if htype == H_STRING:
                try:
                    value = value.decode()
                except UnicodeDecodeError as e:
                    raise ProtocolError(f"string header {name!r} not UTF-8: {e}") from None
        elif htype == H_UUID:
            value = take(16)
        else:
            raise ProtocolError(f"header {name!r} has unknown value type {htype}")
        if name in headers:
            raise ProtocolError(f"duplicate header {name!r}")
        headers[name] = (htype, value)
    return headers


def decode_message(data: bytes) -> tuple[dict[str, tuple[int, Any]], bytes]:
    """Decode one complete message -> (headers {name: (type, value)}, payload). Validates both CRCs."""
    if len(data) < MIN_MESSAGE_LEN:
        raise ProtocolError("message shorter than 16 bytes")
    total, headers_len = _decode_prelude(data[:PRELUDE_LEN])
    if total != len(data):
        raise ProtocolError(f"message length {len(data)} != prelude total length {total}")
    (crc,) = struct.unpack(">I", data[-4:])
    if zlib.crc32(data[:-4]) != crc:
        raise ProtocolError("message CRC mismatch")
    headers = _decode_headers(data[PRELUDE_LEN:PRELUDE_LEN + headers_len])
    return headers, data[PRELUDE_LEN + headers_len:-4]


def _recv_exact(sock: socket.socket, n: int, *, at_boundary: bool) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 16))
        if not chunk:
            if at_boundary and got == 0:
                return None           # clean EOF between messages
            raise ConnectionResetError("peer closed the connection mid-message")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_message(sock: socket.socket) -> tuple[dict[str, tuple[int, Any]], bytes] | None:
    """Read and decode one message from a stream socket; None on a clean EOF."""
    prelude = _recv_exact(sock, PRELUDE_LEN, at_boundary=True)
    if prelude is None:
        return None
    total, _ = _decode_prelude(prelude)
    rest = _recv_exact(sock, total - PRELUDE_LEN, at_boundary=False)
    return decode_message(prelude + rest)


# --- IPC semantics -----------------------------------------------------------------------------------

class _IpcError(Exception):
    """An operation failure sent back as an APPLICATION_ERROR with a modeled error shape."""

    def __init__(self, shape: str, message: str):
        super().__init__(message)
        self.shape, self.message = shape, message


def _bad_args(message: str = "Received invalid parameters.") -> _IpcError:
    return _IpcError("InvalidArgumentsError", message)


def _service_error(message: str = "Received invalid parameters.") -> _IpcError:
    return _IpcError("ServiceError", message)


def _mqtt_match(topic: str, topic_filter: str) -> bool:
    """MQTT topic filter matching (``+`` one level, ``#`` the rest)."""
    f_levels, t_levels = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels):
            return False
        if level != "+" and level != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)


def _glob_match(resource: str, pattern: str) -> bool:
    """Greengrass policy resources: ``*`` matches any run of characters."""
    parts = pattern.split("*")
    if len(parts) == 1:
        return resource == pattern
    if not resource.startswith(parts[0]) or not resource.endswith(parts[-1]):
        return False
    pos, end = len(parts[0]), len(resource) - len(parts[-1])
    for part in parts[1:-1]:
        found = resource.find(part, pos, end)
        if found < 0:
            return False
        pos = found + len(part)
    return pos <= end


def _leaf_paths(value, prefix: tuple[str, ...]) -> set[tuple[str, ...]]:
    if isinstance(value, dict) and value:
        out: set[tuple[str, ...]] = set()
        for k, v in value.items():
            out |= _leaf_paths(v, prefix + (k,))
        return out
    return {prefix}


def _changed_paths(old, new, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Leaf key paths whose value differs between two configuration trees (added, removed or changed)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: set[tuple[str, ...]] = set()
        for k in old.keys() | new.keys():
            if k not in old:
                out |= _leaf_paths(new[k], prefix + (k,))
            elif k not in new:
                out |= _leaf_paths(old[k], prefix + (k,))
            else:
                out |= _changed_paths(old[k], new[k], prefix + (k,))
        return out
    if type(old) is type(new) and old == new:
        return set()
    return _leaf_paths(old, prefix) | _leaf_paths(new, prefix)


def _parent(configuration: dict, key_path) -> dict:
    """The map holding ``key_path``'s last key, made (as empty maps) where missing."""
    node = configuration
    for k in key_path[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    return node


def merge_configuration(base, update):
    """Greengrass' MERGE: maps merge key by key, anything else replaces."""
    if isinstance(base, dict) and isinstance(update, dict):
        out = dict(base)
        for k, v in update.items():
            out[k] = merge_configuration(base.get(k), v)
        return out
    return copy.deepcopy(update)


_merge = merge_configuration


class _Subscription:
    __slots__ = ("conn", "stream_id", "kind", "topic", "key_path", "component", "others_only")

    def __init__(self, conn: "_Connection", stream_id: int, kind: str, *, topic: str | None = None,
                 key_path: tuple[str, ...] = (), component: str | None = None, others_only: bool = False):
        self.conn, self.stream_id, self.kind = conn, stream_id, kind
        self.topic, self.key_path, self.component, self.others_only = topic, key_path, component, others_only


class _Connection:
    def __init__(self, server: "IpcServer", sock: socket.socket):
        self.server, self.sock = server, sock
        self.wlock = threading.RLock()
        self.closed = False
        self.connected = False          # CONNECT accepted
        self.last_stream_id = 0
        self.thread: threading.Thread | None = None

    def send(self, headers: list[tuple[str, Any]], payload: bytes = b"") -> bool:
        data = encode_message(headers, payload)
        with self.wlock:
            if self.closed:
                return False
            try:
                self.sock.sendall(data)
                return True
            except OSError:
                return False

    def close(self) -> None:
        with self.wlock:
            if self.closed:
                return
            self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def _json_bytes(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class IpcServer:
    """A Greengrass nucleus IPC endpoint for one component, on a Unix socket.

    Recorded state (read it, or block on it with :meth:`wait_for`):

    - ``published_iot_core``: ``{"topic", "qos" (int), "payload" (bytes)}`` per PublishToIoTCore, in order
      (plus ``"retain"`` when the request set it).
    - ``published_local``: ``{"topic", "payload"}`` per PublishToTopic: payload is the JSON value of a
      ``jsonMessage`` or the bytes of a ``binaryMessage``.
    - ``states``: UpdateState values in order.
    - ``connections`` / ``refused``: accepted CONNECTs / CONNECTs refused for a wrong token (cumulative
      over restarts).
    - ``operations``: every operation name received (``"GetConfiguration"``...), in order.
    - ``protocol_errors``: protocol violations seen (each dropped its connection); should stay empty.
    - ``configuration``: the component's current configuration (a dict).
    """

    def __init__(self, socket_path: Path, token: str, component: str, configuration: dict,
                 allowed_topics: set[str] | None = None, thing_name: str | None = None):
        self.socket_path = Path(socket_path)
        if len(os.fsencode(self.socket_path)) > 107:
            raise ValueError(f"AF_UNIX path too long ({len(os.fsencode(self.socket_path))} bytes): {socket_path}")
        self.token = token
        self.component = component
        self.configuration: dict = copy.deepcopy(configuration)
        self.allowed_topics = None if allowed_topics is None else set(allowed_topics)
        self.thing_name = thing_name      # interpolated for {iot:thingName} in accessControl resources

        self.published_iot_core: list[dict] = []
        self.published_local: list[dict] = []
        self.states: list[str] = []
        self.connections = 0
        self.refused = 0
        self.operations: list[str] = []
        self.protocol_errors: list[str] = []

        self._cond = threading.Condition(threading.RLock())
        self._conns: set[_Connection] = set()
        self._subs: list[_Subscription] = []
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._running = False

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> "IpcServer":
        with self._cond:
            if self._running:
                raise RuntimeError("IpcServer already running")
            if self.socket_path.exists() or self.socket_path.is_symlink():
                self.socket_path.unlink()
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                listener.bind(os.fspath(self.socket_path))
                listener.listen(64)
            except OSError:
                listener.close()
                raise
            self._listener = listener
            self._running = True
            self._accept_thread = threading.Thread(target=self._accept_loop, args=(listener,),
                                                   name="ipc-accept", daemon=True)
            self._accept_thread.start()
        return self

    def stop(self) -> None:
        """The nucleus dies: stop listening and close every client connection (no goodbye message)."""
        with self._cond:
            if not self._running:
                return
            self._running = False
            listener, self._listener = self._listener, None
            conns = list(self._conns)
            accept_thread, self._accept_thread = self._accept_thread, None
        try:
            listener.shutdown(socket.SHUT_RDWR)   # wakes a blocked accept() on Linux
        except OSError:
            pass
        listener.close()
        for conn in conns:
            conn.close()
        if accept_thread is not None:
            accept_thread.join(timeout=5)
        for conn in conns:
            if conn.thread is not None and conn.thread is not threading.current_thread():
                conn.thread.join(timeout=5)
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass
        with self._cond:
            self._subs.clear()
            self._cond.notify_all()

    @property
    def running(self) -> bool:
        return self._running

    def __enter__(self) -> "IpcServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- test-side API ------------------------------------------------------------------------------

    def wait_for(self, predicate: Callable, timeout: float = 10) -> bool:
        """Wait until ``predicate()`` (or ``predicate(server)``) is true; False on timeout.

        Woken by every change of the server state; also re-checked every 50 ms, so a predicate may look at
        state the server does not own (what a client callback collected, say)."""
        try:
            wants_arg = len(inspect.signature(predicate).parameters) >= 1
        except (TypeError, ValueError):
            wants_arg = False
        test = (lambda: predicate(self)) if wants_arg else predicate
        deadline = time.monotonic() + timeout
        with self._cond:
            while not test():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
            return True

    @property
    def client_count(self) -> int:
        """Client connections currently open (CONNECTed or not)."""
        with self._cond:
            return len(self._conns)

    def subscriptions(self, kind: str | None = None) -> int:
        """Active subscription streams (kind: "topic", "config", "iot_core")."""
        with self._cond:
            return sum(1 for s in self._subs if kind is None or s.kind == kind)

    def update_configuration(self, key_path: list[str], value) -> None:
        """Set ``value`` at ``key_path`` in the component configuration (replacing what was there; an empty
        key path replaces the whole configuration) and send ConfigurationUpdateEvents to subscribers, as a
        deployment would: one event per changed leaf key, carrying componentName and keyPath only."""
        key_path = [str(k) for k in key_path]
        with self._cond:
            old = copy.deepcopy(self.configuration)
            if not key_path:
                if not isinstance(value, dict):
                    raise TypeError("the whole configuration must be a dict")
                self.configuration = copy.deepcopy(value)
            else:
                node = _parent(self.configuration, key_path)
                node[key_path[-1]] = copy.deepcopy(value)
            changed = _changed_paths(old, self.configuration)
            self._cond.notify_all()
        self._notify_config(changed)

    def publish_local(self, topic: str, message) -> int:
        """Deliver a local pub/sub message from "another component" (dict -> jsonMessage, bytes ->
        binaryMessage) to matching SubscribeToTopic streams; returns the number of deliveries."""
        return self._deliver_local(topic, message, publisher=None)

    def publish_from_cloud(self, topic: str, payload: bytes) -> int:
        """Deliver an MQTT message from AWS IoT Core to matching SubscribeToIoTCore streams."""
        event = {"message": {"topicName": topic, "payload": base64.b64encode(bytes(payload)).decode()}}
        with self._cond:
            targets = [s for s in self._subs if s.kind == "iot_core" and _mqtt_match(topic, s.topic)]
        return sum(self._send_event(s, "IoTCoreMessage", event) for s in targets)

    # --- connection handling ------------------------------------------------------------------------

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            conn = _Connection(self, sock)
            with self._cond:
                if not self._running or self._listener is not listener:
                    sock.close()
                    return
                self._conns.add(conn)
                conn.thread = threading.Thread(target=self._serve, args=(conn,), name="ipc-conn", daemon=True)
                conn.thread.start()

    def _protocol_error(self, message: str) -> None:
        self._record(self.protocol_errors, message)

    def _serve(self, conn: _Connection) -> None:
        try:
            while True:
                msg = read_message(conn.sock)
                if msg is None:
                    break
                if not self._handle(conn, *msg):
                    break
        except ProtocolError as e:
            if not conn.closed:
                self._protocol_error(str(e))
        except OSError:
            pass                                  # client vanished, or stop() closed us
        finally:
            conn.close()
            with self._cond:
                self._conns.discard(conn)
                self._subs = [s for s in self._subs if s.conn is not conn]
                self._cond.notify_all()

    @staticmethod
    def _int_header(headers, name: str) -> int:
        if name not in headers:
            raise ProtocolError(f"missing {name} header")
        htype, value = headers[name]
        if htype != H_INT32:
            raise ProtocolError(f"{name} header is type {htype}, expected int32")
        return value

    @staticmethod
    def _str_header(headers, name: str) -> str | None:
        if name not in headers:
            return None
        htype, value = headers[name]
        if htype != H_STRING:
            raise ProtocolError(f"{name} header is type {htype}, expected string")
        return value

    def _handle(self, conn: _Connection, headers, payload: bytes) -> bool:
        """Handle one message; False closes the connection."""
        mtype = self._int_header(headers, ":message-type")
        flags = self._int_header(headers, ":message-flags")
        stream_id = self._int_header(headers, ":stream-id")
        if not 0 <= mtype <= MSG_INTERNAL_ERROR:
            raise ProtocolError(f"unknown :message-type {mtype}")
        if flags & ~(FLAG_CONNECTION_ACCEPTED | FLAG_TERMINATE_STREAM):
            raise ProtocolError(f"unknown :message-flags bits {flags:#x}")

        if not conn.connected:
            return self._handle_connect(conn, headers, payload, mtype, flags, stream_id)

        if stream_id < 0:
            raise ProtocolError(f"negative :stream-id {stream_id}")
        if stream_id == 0:
            if mtype == MSG_PING:
                conn.send([(":message-type", MSG_PING_RESPONSE), (":message-flags", 0), (":stream-id", 0)])
                return True
            if mtype == MSG_PING_RESPONSE:
                return True
            if mtype == MSG_CONNECT:
                raise ProtocolError("second CONNECT on an established connection")
            raise ProtocolError(f"message type {mtype} on stream 0")
        if mtype not in (MSG_APPLICATION, MSG_APPLICATION_ERROR):
            raise ProtocolError(f"message type {mtype} on stream {stream_id}")

        if stream_id <= conn.last_stream_id:
            if flags & FLAG_TERMINATE_STREAM:     # the client closes a stream (e.g. a subscription)
                with self._cond:
                    self._subs = [s for s in self._subs if not (s.conn is conn and s.stream_id == stream_id)]
                    self._cond.notify_all()
                return True
            raise ProtocolError(f"message on already-used stream {stream_id} without TERMINATE_STREAM")
        if stream_id != conn.last_stream_id + 1:
            raise ProtocolError(f"new stream id {stream_id} is not {conn.last_stream_id + 1}")
        conn.last_stream_id = stream_id

        if mtype != MSG_APPLICATION or flags != 0:
            raise ProtocolError(f"new stream {stream_id} opened with type {mtype} flags {flags}")
        operation = self._str_header(headers, "operation")
        if not operation:
            raise ProtocolError(f"new stream {stream_id} has no operation header")
        content_type = self._str_header(headers, ":content-type")
        if content_type != JSON:
            raise ProtocolError(f"request :content-type is {content_type!r}, expected {JSON!r}")
        model_type = self._str_header(headers, "service-model-type")
        if model_type != operation + "Request":
            raise ProtocolError(f"service-model-type {model_type!r} does not match operation {operation!r}")
        try:
            request = json.loads(payload.decode())
        except (UnicodeDecodeError, ValueError) as e:
            raise ProtocolError(f"{operation} payload is not JSON: {e}") from None
        if not isinstance(request, dict):
            raise ProtocolError(f"{operation} payload is not a JSON object")

        name = operation[len(NS):] if operation.startswith(NS) else operation
        self._record(self.operations, name)
        handler = getattr(self, "_op_" + name, None) if operation.startswith(NS) else None
        try:
            if handler is None:
                raise _service_error(f"Operation {operation} is not supported.")
            handler(conn, stream_id, request)
        except _IpcError as e:
            conn.send([(":message-type", MSG_APPLICATION_ERROR), (":message-flags", FLAG_TERMINATE_STREAM),
                       (":stream-id", stream_id), (":content-type", JSON),
                       ("service-model-type", NS + e.shape)],
                      _json_bytes({"_message": e.message, "_errorCode": e.shape}))
        return True

    def _handle_connect(self, conn: _Connection, headers, payload, mtype, flags, stream_id) -> bool:
        if mtype != MSG_CONNECT:
            raise ProtocolError(f"first message has type {mtype}, expected CONNECT")
        if stream_id != 0 or flags != 0:
            raise ProtocolError(f"CONNECT with :stream-id {stream_id} :message-flags {flags}")
        version = self._str_header(headers, ":version")
        if version != RPC_VERSION:
            raise ProtocolError(f"CONNECT :version is {version!r}, expected {RPC_VERSION!r}")
        try:
            body = json.loads(payload.decode())
        except (UnicodeDecodeError, ValueError) as e:
            raise ProtocolError(f"CONNECT payload is not JSON: {e}") from None
        if not isinstance(body, dict) or not isinstance(body.get("authToken"), str):
            raise ProtocolError("CONNECT payload has no string authToken")
        if body["authToken"] != self.token:
            with self._cond:
                self.refused += 1
                self._cond.notify_all()
            return False                          # the nucleus just closes the socket
        conn.connected = True
        with self._cond:  # counted before the ack: a client that has its ack sees itself counted
            self.connections += 1
            self._cond.notify_all()
        conn.send([(":message-type", MSG_CONNECT_ACK), (":message-flags", FLAG_CONNECTION_ACCEPTED),
                   (":stream-id", 0)])
        return True

    def _respond(self, conn: _Connection, stream_id: int, operation: str, body: dict) -> None:
        conn.send([(":message-type", MSG_APPLICATION), (":message-flags", 0), (":stream-id", stream_id),
                   (":content-type", JSON), ("service-model-type", f"{NS}{operation}Response")],
                  _json_bytes(body))

    def _send_event(self, sub: _Subscription, shape: str, body: dict) -> bool:
        return sub.conn.send([(":message-type", MSG_APPLICATION), (":message-flags", 0),
                              (":stream-id", sub.stream_id), (":content-type", JSON),
                              ("service-model-type", NS + shape)], _json_bytes(body))

    def _subscribe(self, conn: _Connection, stream_id: int, operation: str, sub: _Subscription) -> None:
        # Hold the connection's write lock across registering and answering, so no event can overtake
        # the response (the SDK takes the first message on a stream as the response).
        with conn.wlock:
            self._record(self._subs, sub)
            self._respond(conn, stream_id, operation, {})

    def _authorize(self, service: str, operation: str, topic: str) -> None:
        if self.allowed_topics is not None:
            allowed = self.allowed_topics
        else:
            with self._cond:
                policies = copy.deepcopy(self.configuration.get("accessControl"))
            if policies is None:
                return
            allowed = set()
            for policy in ((policies.get(service) or {}) if isinstance(policies, dict) else {}).values():
                if not isinstance(policy, dict):
                    continue
                operations = policy.get("operations") or []
                if "*" in operations or NS + operation in operations:
                    allowed |= {r.replace("{iot:thingName}", self.thing_name) if self.thing_name else r
                                for r in policy.get("resources") or [] if isinstance(r, str)}
        for pattern in allowed:
            if pattern == "*" or _glob_match(topic, pattern) or _mqtt_match(topic, pattern):
                return
        raise _IpcError("UnauthorizedError", "IPC Operation not authorized.")

    # --- configuration --------------------------------------------------------------------------------

    @staticmethod
    def _key_path(request: dict, *, error=_service_error) -> list[str]:
        key_path = request.get("keyPath", [])
        if not isinstance(key_path, list) or not all(isinstance(k, str) for k in key_path):
            raise error("Received invalid parameters.")
        return key_path

    def _op_GetConfiguration(self, conn, stream_id, request):
        key_path = self._key_path(request)
        component = request.get("componentName", self.component)
        if not isinstance(component, str):
            raise _service_error()
        if component != self.component:
            raise _IpcError("ResourceNotFoundError", "Key not found.")
        with self._cond:
            value = copy.deepcopy(self.configuration)
        for key in key_path:
            if not isinstance(value, dict) or key not in value:
                raise _IpcError("ResourceNotFoundError", "Key not found.")
            value = value[key]
        if not isinstance(value, dict):
            if not key_path:
                raise _bad_args("Key is not valid.")
            value = {key_path[-1]: value}         # a leaf comes back wrapped in its own key
        self._respond(conn, stream_id, "GetConfiguration", {"componentName": component, "value": value})

    def _op_SubscribeToConfigurationUpdate(self, conn, stream_id, request):
        key_path = self._key_path(request)
        component = request.get("componentName", self.component)
        if not isinstance(component, str):
            raise _service_error("Failed to validate the map.")
        with self._cond:
            node = self.configuration if component == self.component else None
            for key in key_path:
                node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                raise _IpcError("ResourceNotFoundError", "Key not found")
        self._subscribe(conn, stream_id, "SubscribeToConfigurationUpdate",
                        _Subscription(conn, stream_id, "config", key_path=tuple(key_path), component=component))

    def _op_UpdateConfiguration(self, conn, stream_id, request):
        key_path = self._key_path(request, error=_bad_args)
        if "valueToMerge" not in request:
            raise _bad_args()
        timestamp = request.get("timestamp")
        if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)):
            raise _bad_args()
        value = request["valueToMerge"]
        if (key_path and key_path[0] == "accessControl") or \
                (not key_path and isinstance(value, dict) and "accessControl" in value):
            raise _bad_args("Config update is not allowed for following field [accessControl]")
        if not key_path and not isinstance(value, dict):
            raise _bad_args()
        with self._cond:
            old = copy.deepcopy(self.configuration)
            if not key_path:
                self.configuration = _merge(self.configuration, value)
            else:
                node = _parent(self.configuration, key_path)
                node[key_path[-1]] = _merge(node.get(key_path[-1]), value)
            changed = _changed_paths(old, self.configuration)
            self._cond.notify_all()
        self._notify_config(changed)
        self._respond(conn, stream_id, "UpdateConfiguration", {})

    def _notify_config(self, changed: set[tuple[str, ...]]) -> None:
        if not changed:
            return
        with self._cond:
            targets = [s for s in self._subs if s.kind == "config" and s.component == self.component]
        for path in sorted(changed):
            for sub in targets:
                if path[:len(sub.key_path)] == sub.key_path:
                    self._send_event(sub, "ConfigurationUpdateEvents", {
                        "configurationUpdateEvent": {"componentName": self.component, "keyPath": list(path)}})

    def _record(self, log: list, entry) -> None:
        """Append to one of the logs tests read, and wake ``wait_for``."""
        with self._cond:
            log.append(entry)
            self._cond.notify_all()

    # --- lifecycle state ------------------------------------------------------------------------------

    def _op_UpdateState(self, conn, stream_id, request):
        state = request.get("state")
        if state not in ("RUNNING", "ERRORED"):
            raise _bad_args(f"Invalid state {state!r}.")
        self._record(self.states, state)
        self._respond(conn, stream_id, "UpdateState", {})

    # --- local pub/sub ----------------------------------------------------------------------------------

    def _op_PublishToTopic(self, conn, stream_id, request):
        topic = request.get("topic")
        message = request.get("publishMessage")
        if not isinstance(topic, str) or not topic or not isinstance(message, dict):
            raise _service_error()
        kinds = [k for k in ("jsonMessage", "binaryMessage") if k in message]
        if len(kinds) != 1 or not isinstance(message[kinds[0]], dict) or "message" not in message[kinds[0]]:
            raise _service_error("publishMessage needs exactly one of jsonMessage or binaryMessage.")
        self._authorize("aws.greengrass.ipc.pubsub", "PublishToTopic", topic)
        if kinds[0] == "jsonMessage":
            value = message["jsonMessage"]["message"]
        else:
            raw = message["binaryMessage"]["message"]
            try:
                value = base64.b64decode(raw, validate=True) if isinstance(raw, str) else None
            except binascii.Error:
                value = None
            if value is None:
                raise _service_error("binaryMessage.message is not base64.")
        self._record(self.published_local, {"topic": topic, "payload": copy.deepcopy(value)})
        self._deliver_local(topic, value, publisher=self.component)
        self._respond(conn, stream_id, "PublishToTopic", {})

    def _deliver_local(self, topic: str, value, publisher: str | None) -> int:
        if isinstance(value, (bytes, bytearray)):
            body = {"binaryMessage": {"message": base64.b64encode(bytes(value)).decode(), "context": {"topic": topic}}}
        else:
            body = {"jsonMessage": {"message": value, "context": {"topic": topic}}}
        with self._cond:
            targets = [s for s in self._subs if s.kind == "topic" and _mqtt_match(topic, s.topic)
                       and not (s.others_only and publisher == s.component)]
        return sum(self._send_event(s, "SubscriptionResponseMessage", body) for s in targets)

    def _op_SubscribeToTopic(self, conn, stream_id, request):
        topic = request.get("topic")
        if not isinstance(topic, str) or not topic:
            raise _service_error()
        mode = request.get("receiveMode", "RECEIVE_ALL_MESSAGES")
        if mode not in ("RECEIVE_ALL_MESSAGES", "RECEIVE_MESSAGES_FROM_OTHERS"):
            raise _service_error()
        self._authorize("aws.greengrass.ipc.pubsub", "SubscribeToTopic", topic)
        self._subscribe(conn, stream_id, "SubscribeToTopic",
                        _Subscription(conn, stream_id, "topic", topic=topic, component=self.component,
                                      others_only=mode == "RECEIVE_MESSAGES_FROM_OTHERS"))

    # --- AWS IoT Core (MQTT proxy) ----------------------------------------------------------------------

    def _op_PublishToIoTCore(self, conn, stream_id, request):
        topic = request.get("topicName")
        qos = request.get("qos")
        if not isinstance(topic, str) or not topic:
            raise _bad_args()
        if qos not in ("0", "1"):                 # the QOS enum travels as a string
            raise _bad_args(f"Invalid qos {qos!r}.")
        raw = request.get("payload", "")
        try:
            payload = base64.b64decode(raw, validate=True) if isinstance(raw, str) else None
        except binascii.Error:
            payload = None
        if payload is None:
            raise _bad_args("payload is not base64.")
        retain = request.get("retain")
        if retain is not None and not isinstance(retain, bool):
            raise _bad_args("retain is not a boolean.")
        self._authorize("aws.greengrass.ipc.mqttproxy", "PublishToIoTCore", topic)
        entry = {"topic": topic, "qos": int(qos), "payload": payload}
        if retain is not None:
            entry["retain"] = retain
        self._record(self.published_iot_core, entry)
        self._respond(conn, stream_id, "PublishToIoTCore", {})

    def _op_SubscribeToIoTCore(self, conn, stream_id, request):
        topic = request.get("topicName")
        qos = request.get("qos", "0")
        if not isinstance(topic, str) or not topic or qos not in ("0", "1"):
            raise _bad_args()
        self._authorize("aws.greengrass.ipc.mqttproxy", "SubscribeToIoTCore", topic)
        self._subscribe(conn, stream_id, "SubscribeToIoTCore",
                        _Subscription(conn, stream_id, "iot_core", topic=topic, component=self.component))
