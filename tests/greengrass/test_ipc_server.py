"""The test Greengrass IPC server against the REAL awsiotsdk client (GreengrassCoreIPCClientV2).

Every test's server must end with no protocol violations recorded: the server parses strictly, so this
also checks that the SDK and the server agree on the wire protocol.
"""
from __future__ import annotations

import datetime
import json
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pytest

import awsiot.greengrasscoreipc as ggipc
from awscrt.exceptions import AwsCrtError
from awsiot.eventstreamrpc import ConnectionClosedError, LifecycleHandler, StreamClosedError
from awsiot.greengrasscoreipc import model
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

from edgecv.greengrass.devserver import IpcServer, ProtocolError, decode_message, encode_message, read_message

TOKEN = "5b7a0e3c9d1f4a2b8c6e0f1a2b3c4d5e"
COMPONENT = "com.edgecv.Counter"
CONFIG = {
    "mqtt": {"topic": "edgecv/counts", "qos": "1"},
    "threshold": 0.5,
    "labels": ["person", "car"],
}
ALLOWED = {"edgecv/counts", "edgecv/local/#", "edgecv/cmd/+"}


@pytest.fixture
def sock_dir():
    d = Path(tempfile.mkdtemp(dir="/tmp", prefix="ggipc"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def server(sock_dir):
    s = IpcServer(sock_dir / "ipc.sock", TOKEN, COMPONENT, CONFIG, allowed_topics=ALLOWED).start()
    yield s
    s.stop()
    assert s.protocol_errors == []


class Lifecycle(LifecycleHandler):
    def __init__(self):
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.reason = None
        self.errors = []

    def on_connect(self):
        self.connected.set()

    def on_disconnect(self, reason):
        self.reason = reason
        self.disconnected.set()

    def on_error(self, error):
        self.errors.append(error)
        return True


@pytest.fixture
def connect(server):
    """``connect(token=TOKEN, handler=None)`` -> a V2 client on the server's socket (closed at teardown)."""
    clients = []

    def _connect(token: str = TOKEN, handler: LifecycleHandler | None = None) -> GreengrassCoreIPCClientV2:
        # GreengrassCoreIPCClientV2 takes no socket/token arguments: it either calls connect() itself
        # (reading the environment) or wraps a client made by awsiot.greengrasscoreipc.connect().
        conn = ggipc.connect(ipc_socket=str(server.socket_path), authtoken=token, lifecycle_handler=handler,
                             timeout=5)
        client = GreengrassCoreIPCClientV2(client=conn)
        clients.append(client)
        return client

    yield _connect
    for client in clients:
        client.close()


def assert_dropped(s: socket.socket) -> None:
    """The server closed the socket without replying (a reset if it left our bytes unread)."""
    try:
        assert s.recv(100) == b""
    except ConnectionResetError:
        pass
    s.close()


def raw_connect(path: Path, token: str = TOKEN) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(str(path))
    s.sendall(encode_message([(":message-type", 4), (":message-flags", 0), (":stream-id", 0),
                              (":version", "0.1.0")], json.dumps({"authToken": token}).encode()))
    return s


# --- connection ----------------------------------------------------------------------------------------

def test_connect_with_environment(server, monkeypatch):
    # What a Greengrass component sees: the nucleus sets these two variables.
    monkeypatch.setenv("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", str(server.socket_path))
    monkeypatch.setenv("SVCUID", TOKEN)
    client = GreengrassCoreIPCClientV2()
    try:
        assert server.connections == 1
        assert client.get_configuration().value == CONFIG
    finally:
        client.close()
    assert server.wait_for(lambda: server.client_count == 0)


def test_connect_ack_on_the_wire(server):
    s = raw_connect(server.socket_path)
    headers, payload = read_message(s)
    assert {k: v for k, (_, v) in headers.items()} == {":message-type": 5, ":message-flags": 1, ":stream-id": 0}
    assert all(t == 4 for t, _ in headers.values())          # int32 headers
    assert payload == b""
    s.close()
    assert server.wait_for(lambda: server.client_count == 0)
    assert server.connections == 1


def test_wrong_token_is_refused(server, connect):
    # the SDK's connect fails as the socket closes before any CONNECT_ACK
    with pytest.raises(AwsCrtError) as info:
        connect(token="not-the-token")
    assert info.value.name == "AWS_IO_SOCKET_CLOSED"
    assert server.wait_for(lambda: server.refused == 1)
    assert server.connections == 0
    # the nucleus closes the socket without a word
    s = raw_connect(server.socket_path, token="nope")
    assert_dropped(s)
    assert server.wait_for(lambda: server.refused == 2)
    # and a right token still works afterwards
    assert connect().get_configuration(key_path=["threshold"]).value == {"threshold": 0.5}


# --- configuration ---------------------------------------------------------------------------------------

def test_get_configuration(server, connect):
    client = connect()
    whole = client.get_configuration()
    assert whole.component_name == COMPONENT
    assert whole.value == CONFIG
    assert client.get_configuration(component_name=COMPONENT, key_path=["mqtt"]).value == CONFIG["mqtt"]
    # a leaf comes back wrapped in its own key
    assert client.get_configuration(key_path=["mqtt", "topic"]).value == {"topic": "edgecv/counts"}
    assert client.get_configuration(key_path=["labels"]).value == {"labels": ["person", "car"]}
    with pytest.raises(model.ResourceNotFoundError):
        client.get_configuration(key_path=["mqtt", "missing"])
    with pytest.raises(model.ResourceNotFoundError):
        client.get_configuration(key_path=["threshold", "deeper"])
    # the connection survives an error on one stream
    assert client.get_configuration(key_path=["threshold"]).value == {"threshold": 0.5}
    assert server.operations.count("GetConfiguration") == 7


def test_subscribe_to_configuration_update(server, connect):
    client = connect()
    events, got = [], threading.Event()

    def on_event(event: model.ConfigurationUpdateEvents):
        events.append(event.configuration_update_event)
        got.set()

    _, op = client.subscribe_to_configuration_update(key_path=["mqtt"], on_stream_event=on_event)
    assert server.wait_for(lambda: server.subscriptions("config") == 1)

    server.update_configuration(["mqtt", "topic"], "edgecv/other")
    assert got.wait(5)
    assert events[0].component_name == COMPONENT
    assert events[0].key_path == ["mqtt", "topic"]
    # the event carries no value: read it again
    assert client.get_configuration(key_path=["mqtt", "topic"]).value == {"topic": "edgecv/other"}

    # changes outside the subscribed subtree do not notify this subscription
    got.clear()
    server.update_configuration(["threshold"], 0.7)
    assert not got.wait(0.5)

    # unchanged values do not notify either; a changed one does
    server.update_configuration(["mqtt", "topic"], "edgecv/other")
    assert not got.wait(0.3)
    server.update_configuration(["mqtt"], {"topic": "edgecv/other", "qos": "0"})
    assert got.wait(5)
    assert events[-1].key_path == ["mqtt", "qos"]

    # closing the operation sends TERMINATE_STREAM; the server drops the subscription
    op.close().result(5)
    assert server.wait_for(lambda: server.subscriptions("config") == 0)


def test_subscribe_to_missing_key_fails(server, connect):
    with pytest.raises(model.ResourceNotFoundError):
        connect().subscribe_to_configuration_update(key_path=["nope"], on_stream_event=lambda e: None)


def test_update_configuration_from_the_component(server, connect):
    client = connect()
    events = []
    client.subscribe_to_configuration_update(on_stream_event=lambda e: events.append(e.configuration_update_event))
    client.update_configuration(key_path=["mqtt"], timestamp=datetime.datetime.now(),
                                value_to_merge={"qos": "0", "retain": True})
    assert server.configuration["mqtt"] == {"topic": "edgecv/counts", "qos": "0", "retain": True}
    assert server.wait_for(lambda: len(events) == 2)
    assert sorted(e.key_path for e in events) == [["mqtt", "qos"], ["mqtt", "retain"]]
    # timestamp is required by the nucleus
    with pytest.raises(model.InvalidArgumentsError):
        client.update_configuration(key_path=["mqtt"], value_to_merge={"qos": "1"})


# --- lifecycle state -------------------------------------------------------------------------------------

def test_update_state(server, connect):
    client = connect()
    client.update_state(state=model.ReportedLifecycleState.RUNNING)
    client.update_state(state="ERRORED")
    assert server.states == ["RUNNING", "ERRORED"]


# --- IoT Core and local pub/sub --------------------------------------------------------------------------

def test_publish_to_iot_core_qos1(server, connect):
    client = connect()
    payload = json.dumps({"count": 3}).encode() + b"\x00\xff"
    client.publish_to_iot_core(topic_name="edgecv/counts", qos=model.QOS.AT_LEAST_ONCE, payload=payload)
    client.publish_to_iot_core(topic_name="edgecv/counts", qos="0", payload=b"")
    assert server.published_iot_core == [
        {"topic": "edgecv/counts", "qos": 1, "payload": payload},
        {"topic": "edgecv/counts", "qos": 0, "payload": b""},
    ]


def test_unauthorized_topics(server, connect):
    client = connect()
    with pytest.raises(model.UnauthorizedError):
        client.publish_to_iot_core(topic_name="secret/topic", qos="1", payload=b"x")
    with pytest.raises(model.UnauthorizedError):
        client.publish_to_topic(topic="secret/topic",
                                publish_message=model.PublishMessage(json_message=model.JsonMessage(message={})))
    with pytest.raises(model.UnauthorizedError):
        client.subscribe_to_topic(topic="secret/#", on_stream_event=lambda e: None)
    assert server.published_iot_core == [] and server.published_local == []
    # a topic allowed by an MQTT-filter entry
    client.publish_to_iot_core(topic_name="edgecv/cmd/reset", qos="1", payload=b"x")
    assert server.published_iot_core[-1]["topic"] == "edgecv/cmd/reset"


def test_publish_to_topic_json_and_binary(server, connect):
    publisher, subscriber = connect(), connect()
    received, got = [], threading.Event()

    def on_event(event: model.SubscriptionResponseMessage):
        received.append(event)
        got.set()

    subscriber.subscribe_to_topic(topic="edgecv/local/+", on_stream_event=on_event)
    publisher.publish_to_topic(topic="edgecv/local/counts", publish_message=model.PublishMessage(
        json_message=model.JsonMessage(message={"people": 2, "ts": 1.5})))
    publisher.publish_to_topic(topic="edgecv/local/raw", publish_message=model.PublishMessage(
        binary_message=model.BinaryMessage(message=b"\x01\x02")))
    assert server.published_local == [
        {"topic": "edgecv/local/counts", "payload": {"people": 2, "ts": 1.5}},
        {"topic": "edgecv/local/raw", "payload": b"\x01\x02"},
    ]
    assert server.wait_for(lambda: len(received) == 2)
    by_topic = {}
    for e in received:
        msg = e.json_message or e.binary_message
        by_topic[msg.context.topic] = msg.message
    assert by_topic == {"edgecv/local/counts": {"people": 2, "ts": 1.5}, "edgecv/local/raw": b"\x01\x02"}

    # a message injected by "another component"
    assert server.publish_local("edgecv/local/cmd", {"reset": True}) == 1
    assert server.wait_for(lambda: len(received) == 3)
    assert received[-1].json_message.message == {"reset": True}


def test_subscribe_to_iot_core(server, connect):
    client = connect()
    received = []
    client.subscribe_to_iot_core(topic_name="edgecv/cmd/+", qos="1",
                                 on_stream_event=lambda e: received.append(e.message))
    assert server.publish_from_cloud("edgecv/cmd/reset", b'{"now":1}') == 1
    assert server.wait_for(lambda: len(received) == 1)
    assert received[0].topic_name == "edgecv/cmd/reset" and received[0].payload == b'{"now":1}'


# --- concurrency, abrupt clients, strictness ---------------------------------------------------------------

def test_concurrent_clients(server, connect):
    clients = [connect() for _ in range(4)]
    errors = []

    def work(i, client):
        try:
            for n in range(20):
                client.publish_to_iot_core(topic_name="edgecv/counts", qos="1", payload=f"{i}:{n}".encode())
        except Exception as e:                       # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(server.published_iot_core) == 80
    for i in range(4):   # per-connection order is kept
        mine = [p["payload"] for p in server.published_iot_core if p["payload"].startswith(f"{i}:".encode())]
        assert mine == [f"{i}:{n}".encode() for n in range(20)]
    assert server.connections == 4


def test_abrupt_disconnects(server, connect):
    subscriber = connect()
    subscriber.subscribe_to_topic(topic="edgecv/local/x", on_stream_event=lambda e: None)
    # a raw client that connects, subscribes and vanishes without closing its stream
    s = raw_connect(server.socket_path)
    read_message(s)
    s.sendall(encode_message([(":message-type", 0), (":message-flags", 0), (":stream-id", 1),
                              ("operation", "aws.greengrass#SubscribeToTopic"), (":content-type", "application/json"),
                              ("service-model-type", "aws.greengrass#SubscribeToTopicRequest")],
                             b'{"topic":"edgecv/local/x"}'))
    headers, payload = read_message(s)
    assert headers["service-model-type"][1] == "aws.greengrass#SubscribeToTopicResponse"
    assert server.subscriptions("topic") == 2
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
    s.close()
    assert server.wait_for(lambda: server.subscriptions("topic") == 1)
    # half a message, then gone
    s = raw_connect(server.socket_path)
    read_message(s)
    s.sendall(encode_message([(":message-type", 0), (":message-flags", 0), (":stream-id", 1)], b"{}")[:10])
    s.close()
    assert server.wait_for(lambda: server.client_count == 1)
    # the real client is unaffected, and delivery to the dead subscriber is skipped
    assert server.publish_local("edgecv/local/x", {"a": 1}) == 1
    assert subscriber.get_configuration(key_path=["threshold"]).value == {"threshold": 0.5}


def test_strict_parsing(server):
    good = encode_message([(":message-type", 4), (":message-flags", 0), (":stream-id", 0), (":version", "0.1.0")],
                          json.dumps({"authToken": TOKEN}).encode())
    headers, _ = decode_message(good)
    assert headers[":version"] == (7, "0.1.0")
    bad_crc = good[:-1] + bytes([good[-1] ^ 1])
    bad_prelude = good[:11] + bytes([good[11] ^ 1]) + good[12:]
    with pytest.raises(ProtocolError, match="message CRC"):
        decode_message(bad_crc)
    with pytest.raises(ProtocolError, match="prelude CRC"):
        decode_message(bad_prelude)
    for data, why in [(bad_crc, "message CRC"), (bad_prelude, "prelude CRC")]:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(str(server.socket_path))
        s.sendall(data)
        assert_dropped(s)
        assert server.wait_for(lambda: any(why in e for e in server.protocol_errors))
    # a new stream must be the next id and carry a matching service-model-type
    s = raw_connect(server.socket_path)
    read_message(s)
    s.sendall(encode_message([(":message-type", 0), (":message-flags", 0), (":stream-id", 2),
                              ("operation", "aws.greengrass#UpdateState"), (":content-type", "application/json"),
                              ("service-model-type", "aws.greengrass#UpdateStateRequest")], b'{"state":"RUNNING"}'))
    assert_dropped(s)
    assert server.wait_for(lambda: any("new stream id 2" in e for e in server.protocol_errors))
    assert server.states == []
    assert len(server.protocol_errors) == 3
    server.protocol_errors.clear()                  # expected ones: keep the fixture's check meaningful


# --- the nucleus dies and comes back ---------------------------------------------------------------------

def test_server_restart(server, connect):
    lifecycle = Lifecycle()
    old = connect(handler=lifecycle)
    assert lifecycle.connected.wait(5)
    stream_closed, stream_errors = threading.Event(), []
    old.subscribe_to_configuration_update(on_stream_event=lambda e: None,
                                          on_stream_error=lambda e: stream_errors.append(e) or True,
                                          on_stream_closed=stream_closed.set)
    assert server.wait_for(lambda: server.subscriptions("config") == 1)

    server.stop()                                   # the nucleus dies
    assert not server.socket_path.exists()
    # The SDK notices at once: LifecycleHandler.on_disconnect(reason) with an AwsCrtError
    # (AWS_IO_SOCKET_CLOSED), and every open stream gets on_stream_closed (no on_stream_error).
    assert lifecycle.disconnected.wait(5)
    assert isinstance(lifecycle.reason, AwsCrtError), repr(lifecycle.reason)
    assert lifecycle.reason.name == "AWS_IO_SOCKET_CLOSED"
    assert stream_closed.wait(5)
    assert stream_errors == []
    # It does not reconnect: every later call on the old client raises ConnectionClosedError synchronously.
    with pytest.raises(ConnectionClosedError):
        old.get_configuration()

    # While the nucleus is down its socket file is gone: connect() fails at once.
    with pytest.raises(RuntimeError, match="AWS_ERROR_FILE_INVALID_PATH"):
        ggipc.connect(ipc_socket=str(server.socket_path), authtoken=TOKEN, timeout=5)

    server.start()                                  # the nucleus is back, same socket path
    new = connect()
    assert new.get_configuration(key_path=["threshold"]).value == {"threshold": 0.5}
    new.update_state(state="RUNNING")
    assert server.states == ["RUNNING"]
    assert server.connections == 2
    with pytest.raises(ConnectionClosedError):     # the old client stays dead: make a new one
        old.update_state(state="RUNNING")


def test_server_dies_with_a_call_in_flight(server, connect, monkeypatch):
    client = connect()
    entered, release = threading.Event(), threading.Event()
    real = IpcServer._op_UpdateState

    def slow(self, conn, stream_id, request):
        entered.set()
        release.wait(5)
        return real(self, conn, stream_id, request)

    monkeypatch.setattr(IpcServer, "_op_UpdateState", slow)
    future = client.update_state_async(state="RUNNING")
    assert entered.wait(5)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    # the pending call fails with StreamClosedError once the socket closes
    with pytest.raises(StreamClosedError):
        future.result(5)
    release.set()
    stopper.join(10)
    assert not stopper.is_alive()


def test_access_control_from_the_configuration(sock_dir, connect):
    """Without ``allowed_topics`` the component's own accessControl decides, per service and operation, with
    {iot:thingName} interpolated as the nucleus does."""
    policies = {
        "aws.greengrass.ipc.mqttproxy": {"c:mqttproxy:1": {
            "operations": ["aws.greengrass#PublishToIoTCore"], "resources": ["edgecv/{iot:thingName}/counts"]}},
        "aws.greengrass.ipc.pubsub": {"c:pubsub:1": {"operations": ["*"], "resources": ["local/+"]}},
    }
    s = IpcServer(sock_dir / "acl.sock", TOKEN, COMPONENT, {"accessControl": policies}, thing_name="dev-7").start()
    try:
        conn = ggipc.connect(ipc_socket=str(s.socket_path), authtoken=TOKEN, timeout=5)
        client = GreengrassCoreIPCClientV2(client=conn)
        client.publish_to_iot_core(topic_name="edgecv/dev-7/counts", qos="1", payload=b"1")
        for topic in ("edgecv/dev-8/counts", "local/x"):          # another device; another service's topic
            with pytest.raises(model.UnauthorizedError):
                client.publish_to_iot_core(topic_name=topic, qos="1", payload=b"1")
        with pytest.raises(model.UnauthorizedError):              # the policy allows publishing only
            client.subscribe_to_iot_core(topic_name="edgecv/dev-7/counts", qos="1", on_stream_event=lambda e: None)
        client.publish_to_topic(topic="local/x", publish_message=model.PublishMessage(
            json_message=model.JsonMessage(message={"a": 1})))
        assert [m["topic"] for m in s.published_iot_core] == ["edgecv/dev-7/counts"]
        assert s.published_local == [{"topic": "local/x", "payload": {"a": 1}}]
        client.close()
    finally:
        s.stop()
    assert s.protocol_errors == []
