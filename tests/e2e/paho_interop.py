"""Device interop: Eclipse Paho's Python client (paho-mqtt 2.1) against Kite's embedded broker.

Usage: paho_interop.py HOST PORT {3.1.1,5} {tcp,websockets}

Checks, with real paho clients: QoS 0/1/2 publish and subscribe (delivered at the publication's
QoS under a QoS 2 subscription), a retained message to a later subscriber (RETAIN set), and a
Will published when a client's connection drops. Prints one line per check; exits 1 on the
first failure, with what was expected and what came.
"""

import sys
import threading
import time

import paho.mqtt.client as mqtt

HOST, PORT, VERSION, TRANSPORT = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
PROTOCOL = mqtt.MQTTv5 if VERSION == "5" else mqtt.MQTTv311
TIMEOUT = 10


def fail(what):
    print(f"FAIL: {what}", flush=True)
    sys.exit(1)


def client(client_id):
    c = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=PROTOCOL,
        transport=TRANSPORT,
    )
    if TRANSPORT == "websockets":
        c.ws_set_options(path="/mqtt")
    return c


def connect(c):
    connected = threading.Event()
    c.on_connect = lambda *args: connected.set()
    if PROTOCOL == mqtt.MQTTv5:
        c.connect(HOST, PORT, keepalive=30, clean_start=True)
    else:
        c.connect(HOST, PORT, keepalive=30)
    c.loop_start()
    if not connected.wait(TIMEOUT):
        fail(f"{c._client_id!r} got no CONNACK")


class Inbox:
    def __init__(self):
        self.messages = []
        self.cond = threading.Condition()

    def on_message(self, _client, _userdata, msg):
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def wait(self, n, what):
        deadline = time.monotonic() + TIMEOUT
        with self.cond:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [(m.topic, m.payload) for m in self.messages]
                    fail(f"{what}: expected {n} messages, got {got}")
                self.cond.wait(left)
            return list(self.messages)


def subscribe(c, topic, qos):
    done = threading.Event()
    c.on_subscribe = lambda *args: done.set()
    c.subscribe(topic, qos)
    if not done.wait(TIMEOUT):
        fail(f"no SUBACK for {topic}")


# QoS 0, 1, 2 through a QoS 2 subscription.
sub_inbox = Inbox()
sub = client("paho-sub")
sub.on_message = sub_inbox.on_message
connect(sub)
subscribe(sub, "paho/qos/#", 2)
pub = client("paho-pub")
connect(pub)
for qos in (0, 1, 2):
    pub.publish(f"paho/qos/{qos}", f"at qos {qos}".encode(), qos=qos).wait_for_publish(TIMEOUT)
got = sorted((m.topic, m.payload.decode(), m.qos) for m in sub_inbox.wait(3, "QoS 0/1/2"))
want = [(f"paho/qos/{q}", f"at qos {q}", q) for q in (0, 1, 2)]
if got != want:
    fail(f"QoS 0/1/2: expected {want}, got {got}")
print("ok qos 0/1/2", flush=True)

# Retained, to a later subscriber.
pub.publish("paho/retained", b"kept", qos=1, retain=True).wait_for_publish(TIMEOUT)
late_inbox = Inbox()
late = client("paho-late")
late.on_message = late_inbox.on_message
connect(late)
subscribe(late, "paho/retained", 1)
m = late_inbox.wait(1, "retained")[0]
if (m.payload, m.retain) != (b"kept", True):
    fail(f"retained: expected b'kept' with RETAIN, got {m.payload!r} retain={m.retain}")
pub.publish("paho/retained", b"", qos=1, retain=True).wait_for_publish(TIMEOUT)
print("ok retained", flush=True)

# A Will when the connection drops without DISCONNECT.
will_inbox = Inbox()
watcher = client("paho-watcher")
watcher.on_message = will_inbox.on_message
connect(watcher)
subscribe(watcher, "paho/will", 1)
dying = client("paho-dying")
dying.will_set("paho/will", b"gone", qos=1)
connect(dying)
dying.loop_stop()
dying.socket().close()  # no DISCONNECT
m = will_inbox.wait(1, "will")[0]
if m.payload != b"gone":
    fail(f"will: expected b'gone', got {m.payload!r}")
print("ok will", flush=True)

for c in (sub, pub, late, watcher):
    c.disconnect()
    c.loop_stop()
print("all ok", flush=True)
