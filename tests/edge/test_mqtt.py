"""MQTT delivery against a real Mosquitto: order, QoS 1, a broker that dies and comes back, TLS with
client certificates, username/password, and messages that survive a restart of the publisher."""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from broker import Mosquitto, Subscriber, make_certificates
from edgecv.edge.config import MqttConfig
from edgecv.edge.mqtt import MqttPublisher
from edgecv.edge.outbox import Outbox

pytestmark = pytest.mark.broker


def _payload(i):
    return lambda seq: json.dumps({"i": i, "seq": seq}).encode()


def _publisher(tmp_path, url, **mqtt):
    config = MqttConfig(url=url, **mqtt)
    return MqttPublisher(config, "dev1", Outbox(tmp_path / "outbox.sqlite"))


def _seqs(sub):
    return [m["seq"] for m in sub.json("/counts")]


def test_in_order_and_status(broker, tmp_path):
    sub = Subscriber(broker.port)
    pub = _publisher(tmp_path, broker.url).start()
    for i in range(50):
        pub.publish("counts", _payload(i))
    assert sub.wait_for(lambda m: len([t for t, *_ in m if t.endswith("/counts")]) >= 50)
    assert [m["i"] for m in sub.json("/counts")] == list(range(50))
    assert ("edgecv/dev1/status", b"online", False) in sub.messages or any(
        t.endswith("/status") and p == b"online" for t, p, _ in sub.messages)
    pub.stop()
    assert sub.wait_for(lambda m: m[-1][1] == b"offline")
    assert len(pub.outbox) == 0
    sub.close()


def test_broker_stopped_and_restarted_mid_run_loses_nothing(broker, tmp_path):
    pub = _publisher(tmp_path, broker.url).start()
    sub = Subscriber(broker.port)
    for i in range(20):
        pub.publish("counts", _payload(i))
    assert sub.wait_for(lambda m: len(_seqs(sub)) >= 20)
    sub.close()
    broker.stop()
    for i in range(20, 60):          # produced while the broker is down: kept on disk
        pub.publish("counts", _payload(i))
    time.sleep(1)
    assert len(pub.outbox) >= 40
    broker.start()
    sub = Subscriber(broker.port)
    assert sub.wait_for(lambda m: {x["i"] for x in sub.json("/counts")} >= set(range(20, 60)), timeout=60)
    received = [x["i"] for x in sub.json("/counts")]
    firsts = [i for n, i in enumerate(received) if i not in received[:n]]
    assert firsts == sorted(firsts), "first deliveries must keep the order produced"
    pub.stop()
    sub.close()


def test_messages_survive_a_restart_of_the_publisher(tmp_path):
    broker = Mosquitto(tmp_path / "b")        # not started: the broker is down
    pub = _publisher(tmp_path, broker.url).start()
    seqs = [pub.publish("counts", _payload(i)) for i in range(5)]
    pub.stop(flush_timeout=0.5)               # the process ends with 5 messages undelivered
    assert len(Outbox(tmp_path / "outbox.sqlite")) == 5
    broker.start()
    try:
        sub = Subscriber(broker.port)
        again = _publisher(tmp_path, broker.url).start()
        again.publish("counts", _payload(5))
        assert sub.wait_for(lambda m: len(_seqs(sub)) >= 6)
        assert _seqs(sub)[:6] == seqs + [seqs[-1] + 1]
        again.stop()
        sub.close()
    finally:
        broker.stop()


@pytest.mark.slow
def test_tls_with_client_certificates(tmp_path):
    certs = make_certificates(tmp_path / "certs")
    broker = Mosquitto(tmp_path / "b", tls=certs).start()
    try:
        sub = Subscriber(broker.port, tls=certs)
        pub = _publisher(tmp_path, f"mqtts://127.0.0.1:{broker.port}",
                         tls={"ca_file": certs["ca"], "cert_file": certs["client_cert"],
                              "key_file": certs["client_key"]}).start()
        pub.publish("counts", _payload(1))
        assert sub.wait_for(lambda m: len(_seqs(sub)) == 1)
        pub.stop()
        sub.close()
        # without a client certificate the broker refuses the TLS handshake: nothing is delivered
        nocert = MqttPublisher(MqttConfig(url=f"mqtts://127.0.0.1:{broker.port}", tls={"ca_file": certs["ca"]}),
                               "dev2", Outbox(tmp_path / "o2.sqlite")).start()
        nocert.publish("counts", _payload(2))
        assert not nocert.flush(timeout=3) and len(nocert.outbox) == 1
        nocert.stop(flush_timeout=0)
    finally:
        broker.stop()


def test_username_password(tmp_path):
    pwfile = tmp_path / "passwd"
    pwfile.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(pwfile), "edge", "s3cret"], check=True)
    broker = Mosquitto(tmp_path / "b", password_file=pwfile).start()
    try:
        sub = Subscriber(broker.port, auth=("edge", "s3cret"))
        pub = _publisher(tmp_path, broker.url, username="edge", password="s3cret").start()
        pub.publish("counts", _payload(1))
        assert sub.wait_for(lambda m: len(_seqs(sub)) == 1)
        pub.stop()
        sub.close()
        wrong = MqttPublisher(MqttConfig(url=broker.url, username="edge", password="nope"), "dev3",
                              Outbox(tmp_path / "o3.sqlite")).start()
        wrong.publish("counts", _payload(2))
        assert not wrong.flush(timeout=3)
        assert "refused" in (wrong.last_error or "")
        wrong.stop(flush_timeout=0)
    finally:
        broker.stop()
