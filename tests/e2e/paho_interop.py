"""Device interop: Eclipse Paho's Python client (paho-mqtt 2.1) against Kite's embedded broker.

Usage: paho_interop.py HOST PORT {3.1.1,5} {tcp,websockets}

Checks, with real paho clients: QoS 0/1/2 publish and subscribe (delivered at the publication's
QoS under a QoS 2 subscription), a retained message to a later subscriber (RETAIN set), a
Will published when a client's connection drops, overlapping subscriptions (one copy, at the
highest QoS), and a refused subscription (the broker runs with a role that denies
`test/nosubscribe` to everyone). MQTT 5 also: every matching subscription identifier on the
one copy, the broker's own topic aliases towards a client that allows them (and none towards
one that does not), Server Keep Alive, and the Will Delay against the session expiry. The
behaviours the Paho interoperability suite probes where Debian's mosquitto 2.0.11 fails. Prints
one line per check; exits 1 on the first failure, with what was expected and what came.
"""

import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

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


def connect(c, keepalive=30, properties=None):
    """Connects and returns the CONNACK's properties (None in 3.1.1)."""
    connected = threading.Event()
    acked = {}

    def on_connect(_c, _u, _flags, _reason, props=None):
        acked["properties"] = props
        connected.set()

    c.on_connect = on_connect
    if PROTOCOL == mqtt.MQTTv5:
        c.connect(HOST, PORT, keepalive=keepalive, clean_start=True, properties=properties)
    else:
        c.connect(HOST, PORT, keepalive=keepalive)
    c.loop_start()
    if not connected.wait(TIMEOUT):
        fail(f"{c._client_id!r} got no CONNACK")
    return acked.get("properties")


def props(packet_type, **values):
    p = Properties(packet_type)
    for k, v in values.items():
        setattr(p, k, v)
    return p


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


def subscribe(c, topic, qos, properties=None):
    """Subscribes (`topic` a filter or a list of (filter, qos)); returns the SUBACK's codes."""
    done = threading.Event()
    codes = []

    def on_subscribe(_c, _u, _mid, reasons, _props=None):
        codes.extend(r.value if hasattr(r, "value") else r for r in reasons)
        done.set()

    c.on_subscribe = on_subscribe
    c.subscribe(topic, qos, properties=properties) if properties else c.subscribe(topic, qos)
    if not done.wait(TIMEOUT):
        fail(f"no SUBACK for {topic}")
    return codes


def quiet(inbox, seconds, what):
    """Fails if anything more arrives within `seconds`."""
    before = len(inbox.messages)
    time.sleep(seconds)
    extra = [(m.topic, m.payload, m.qos) for m in inbox.messages[before:]]
    if extra:
        fail(f"{what}: expected nothing more, got {extra}")


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

# Overlapping subscriptions: one copy, at the highest QoS of the matching ones [MQTT-3.3.4-2].
ov_inbox = Inbox()
ov = client("paho-overlap")
ov.on_message = ov_inbox.on_message
connect(ov)
subscribe(ov, [("paho/ov/#", 2), ("paho/ov/+", 1)], 0)
pub.publish("paho/ov/x", b"once", qos=2).wait_for_publish(TIMEOUT)
m = ov_inbox.wait(1, "overlapping subscriptions")[0]
quiet(ov_inbox, 0.5, "overlapping subscriptions")
if m.qos != 2:
    fail(f"overlapping subscriptions: expected one copy at QoS 2, got QoS {m.qos}")
print("ok overlapping subscriptions", flush=True)

# A refused subscription (a deny rule): 0x80 in both versions — Failure in 3.1.1, Unspecified
# error in 5.0 (§3.9.3).
refused = subscribe(ov, "test/nosubscribe", 2)
want = [0x80]
if refused != want:
    fail(f"refused subscription: expected SUBACK {want}, got {refused}")
print("ok refused subscription", flush=True)
others = [sub, pub, late, watcher, ov]

if PROTOCOL == mqtt.MQTTv5:
    # Every matching subscription identifier, on the one copy [MQTT-3.3.4-4].
    ids_inbox = Inbox()
    ids = client("paho-ids")
    ids.on_message = ids_inbox.on_message
    connect(ids)
    for sid, flt in ((2, "paho/ids"), (3, "paho/ids/#")):
        subscribe(ids, flt, 2, props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=sid))
    pub.publish("paho/ids", b"x", qos=1).wait_for_publish(TIMEOUT)
    m = ids_inbox.wait(1, "subscription identifiers")[0]
    quiet(ids_inbox, 0.5, "subscription identifiers")
    got = sorted(m.properties.SubscriptionIdentifier)
    if got != [2, 3]:
        fail(f"subscription identifiers: expected [2, 3] on one copy, got {got}")
    print("ok subscription identifiers", flush=True)

    # The broker's topic aliases towards a client allowing one: the topic once, then the
    # alias alone (§3.3.2.3.4); none towards a client allowing none.
    for maximum in (1, 0):
        alias_inbox = Inbox()
        al = client(f"paho-alias-{maximum}")
        al.on_message = alias_inbox.on_message
        connect(al, properties=props(PacketTypes.CONNECT, TopicAliasMaximum=maximum))
        subscribe(al, "paho/alias", 2)
        for qos in (0, 1, 2):
            pub.publish("paho/alias", b"a", qos=qos).wait_for_publish(TIMEOUT)
        got = [
            (m.topic, getattr(m.properties, "TopicAlias", None))
            for m in alias_inbox.wait(3, "server topic alias")
        ]
        want = (
            [("paho/alias", 1), ("", 1), ("", 1)] if maximum else [("paho/alias", None)] * 3
        )
        if got != want:
            fail(f"topic alias maximum {maximum}: expected {want}, got {got}")
        al.disconnect()
        al.loop_stop()
    print("ok server topic alias", flush=True)

    # Server Keep Alive: a client asking for 120 s is told 60 (§3.2.2.3.14).
    ka = client("paho-keepalive")
    acked = connect(ka, keepalive=120)
    if getattr(acked, "ServerKeepAlive", None) != 60:
        fail(f"server keep alive: expected 60 for 120, got {acked}")
    others.append(ka)
    print("ok server keep alive", flush=True)

    # Will Delay: published when the delay ends or the session does, whichever is first
    # [MQTT-3.1.3-9]. (delay, session expiry, earliest, latest) in seconds.
    for delay, expiry, earliest, latest in ((1, 5, 0.8, 4), (5, 0, 0, 2.5), (5, 1, 0.8, 3.5)):
        wd_inbox = Inbox()
        w = client(f"paho-wd-watch-{delay}-{expiry}")
        w.on_message = wd_inbox.on_message
        connect(w)
        subscribe(w, "paho/willdelay", 1)
        d = client("paho-wd")
        d.will_set(
            "paho/willdelay",
            f"{delay}/{expiry}".encode(),
            qos=1,
            properties=props(PacketTypes.WILLMESSAGE, WillDelayInterval=delay),
        )
        connect(d, properties=props(PacketTypes.CONNECT, SessionExpiryInterval=expiry))
        d.loop_stop()
        d.socket().close()
        gone = time.monotonic()
        m = wd_inbox.wait(1, f"will delay {delay} s, session expiry {expiry} s")[0]
        after = time.monotonic() - gone
        if not earliest <= after <= latest:
            fail(
                f"will delay {delay} s, session expiry {expiry} s: published after {after:.1f} s, "
                f"expected {earliest}..{latest} s"
            )
        w.disconnect()
        w.loop_stop()
    print("ok will delay", flush=True)
    others.append(ids)

for c in others:
    c.disconnect()
    c.loop_stop()
print("all ok", flush=True)
