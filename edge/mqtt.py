"""Publishers over the durable outbox: the pump shared by every transport, and MQTT (paho-mqtt 2.x).

``OutboxPublisher`` holds what all publishers do: messages go to the on-disk outbox first; a pump thread
sends what it holds, oldest first, while the transport is connected (a bounded window in flight), and deletes
a row when the transport acknowledges it. On a reconnect it starts again from the oldest unacknowledged row:
a message may arrive twice (QoS 1 is at-least-once, ``seq`` tells), never not at all. A transport provides
``_send`` and reports acknowledgements (``_acked``) and (re)connections (``_connected_now``); the Greengrass
IPC publisher (``edgecv.greengrass.ipc``) is the other transport.

``MqttPublisher``: QoS 1 to a broker; status is a retained ``online`` on connect, ``offline`` as the last
will and on a clean stop.
"""
from __future__ import annotations

import logging
import ssl
import threading
import time

from edgecv.edge.config import MqttConfig
from edgecv.edge.outbox import Outbox

log = logging.getLogger("edgecv.mqtt")


class OutboxPublisher:
    """The publisher interface the edge loop uses (``publish``, ``publish_raw``, ``topic``, ``outbox``,
    ``connected``, ``flush``, ``start``, ``stop``) over an ``Outbox``; the transport is the subclass's."""

    def __init__(self, outbox: Outbox, topic_prefix: str, device: str, qos: int = 1, window: int = 20,
                 name: str = "edgecv-publish"):
        self.outbox = outbox
        self.topic_prefix, self.device, self.qos = topic_prefix, device, qos
        self.window = window
        self.last_error: str | None = None
        self._connected = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._inflight: dict = {}       # transport token -> seq
        self._early_acks: set = set()   # acks that arrived before _send returned their token
        self._sent_upto = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._pump, name=name, daemon=True)

    # --- the transport's part ---
    def _send(self, topic: str, payload: bytes, qos: int, retain: bool):
        """Hand one message to the transport; returns a token that ``_acked`` will be called with, or None
        when it could not be sent (the pump waits for the next ``_connected_now`` and resends from there)."""
        raise NotImplementedError

    def _acked(self, token) -> None:
        """The transport acknowledged the message sent with ``token`` (any thread)."""
        with self._lock:
            seq = self._inflight.pop(token, None)
            if seq is None:
                self._early_acks.add(token)
        if seq is not None:
            self.outbox.remove(seq)
        self._wake.set()

    def _connected_now(self) -> None:
        """The transport is (again) connected: resend everything not yet acknowledged, oldest first."""
        with self._lock:
            self._inflight.clear()
            self._early_acks.clear()
            self._sent_upto = 0
        self._connected.set()
        self._wake.set()

    def _disconnected_now(self) -> None:
        self._connected.clear()

    # --- API (any thread) ---
    def topic(self, kind: str) -> str:
        return f"{self.topic_prefix}/{self.device}/{kind}"

    def publish(self, kind: str, make_payload, qos: int | None = None, retain: bool = False) -> int:
        seq = self.outbox.put(self.topic(kind), make_payload, self.qos if qos is None else qos, retain)
        self._wake.set()
        return seq

    def publish_raw(self, topic: str, payload: bytes, qos: int | None = None) -> int:
        seq = self.outbox.put(topic, lambda _: payload, self.qos if qos is None else qos)
        self._wake.set()
        return seq

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty (True) or ``timeout`` passes (False; rows stay on disk)."""
        deadline = time.monotonic() + timeout
        while len(self.outbox) and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.05)
        return not len(self.outbox)

    def _start_pump(self) -> None:
        self._thread.start()

    def _stop_pump(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    # --- pump thread ---
    def _pump(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=0.5)
            self._wake.clear()
            if not self.connected:
                continue
            with self._lock:
                room = self.window - len(self._inflight)
                after = self._sent_upto
            if room <= 0:
                continue
            for seq, topic, payload, qos, retain in self.outbox.pending(after=after, limit=room):
                if not self.connected or self._stop.is_set():
                    break
                try:
                    token = self._send(topic, payload, qos, retain)
                except Exception as exc:  # a transport bug must not kill the pump: keep the row, retry later
                    log.error("sending seq %d failed: %s", seq, exc)
                    token = None
                if token is None:
                    break  # not sent: resent after the next (re)connect
                with self._lock:
                    self._sent_upto = seq
                    acked = qos == 0 or token in self._early_acks
                    self._early_acks.discard(token)
                    if not acked:
                        self._inflight[token] = seq
                if acked:
                    self.outbox.remove(seq)


class MqttPublisher(OutboxPublisher):
    def __init__(self, config: MqttConfig, device: str, outbox: Outbox, client=None, window: int = 20):
        import paho.mqtt.client as mqtt

        super().__init__(outbox, config.topic_prefix, device, config.qos, window, name="edgecv-mqtt")
        self.config = config
        self.status_topic = self.topic("status")
        self._mqtt = mqtt
        self.client = client or mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                            client_id=config.client_id or f"edgecv-{device}",
                                            protocol=mqtt.MQTTv311)
        self._configure()

    def _configure(self) -> None:
        c, cfg = self.client, self.config
        if cfg.username is not None:
            c.username_pw_set(cfg.username, cfg.password)
        if cfg.uses_tls:
            tls = cfg.tls
            c.tls_set(ca_certs=str(tls.ca_file) if tls and tls.ca_file else None,
                      certfile=str(tls.cert_file) if tls and tls.cert_file else None,
                      keyfile=str(tls.key_file) if tls and tls.key_file else None,
                      cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
            if tls and tls.insecure:
                c.tls_insecure_set(True)
        c.will_set(self.status_topic, "offline", qos=1, retain=True)
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        c.max_inflight_messages_set(self.window)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish

    # --- paho callbacks (network thread) ---
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.last_error = f"broker refused the connection: {reason_code}"
            log.error("%s (check mqtt.username/password and TLS settings)", self.last_error)
            return
        self.last_error = None
        client.publish(self.status_topic, "online", qos=1, retain=True)
        self._connected_now()
        log.info("connected to %s:%s", self.config.host, self.config.port)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._disconnected_now()
        if not self._stop.is_set() and not (self.last_error or "").startswith("broker refused"):
            self.last_error = f"disconnected from the broker ({reason_code}); reconnecting"
            log.warning("%s, %d messages kept on disk", self.last_error, len(self.outbox))

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        self._acked(mid)

    def _send(self, topic: str, payload: bytes, qos: int, retain: bool):
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        return info.mid if info.rc == self._mqtt.MQTT_ERR_SUCCESS else None  # else: on_connect resends

    # --- API (any thread) ---
    def start(self) -> "MqttPublisher":
        self.client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive)
        self.client.loop_start()
        self._start_pump()
        return self

    def stop(self, flush_timeout: float = 5.0) -> None:
        self.flush(flush_timeout)
        if self.connected:
            info = self.client.publish(self.status_topic, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=2)
            except (RuntimeError, ValueError):
                pass
        self._stop.set()
        self._wake.set()
        self.client.disconnect()
        self.client.loop_stop()
        self._stop_pump()
