// kite.js — MQTT for any web page, from the Kite gateway.
//
//   import { Kite } from "https://host/kite.js";
//   const kite = await Kite.connect("wss://host/mqtt", { clientId, username, password, version: 5 });
//   await kite.publish("plant/valve/cmd", "open", { qos: 1 });      // resolves on PUBACK
//   const sub = kite.subscribe("plant/+/temp", (msg) => console.log(msg.topic, msg.text()));
//   sub.unsubscribe();
//   kite.on("status", (s) => console.log(s.state, s.reason, s.delay));
//
// The MQTT session is Kite's own (kite-mqtt, compiled to WebAssembly: kite-core_bg.wasm);
// this file only carries its bytes over one WebSocket, runs its timer, reconnects, and counts
// subscriptions so that any number of parts of a page share one SUBSCRIBE per filter.

// (`cargo xtask` makes the classic kite.iife.js from this file: it replaces the next two
// lines and drops `export`.)
import init, { Session, matches } from "./kite-core.js";
const CORE = new URL("./kite-core_bg.wasm", import.meta.url);

let loading = null;
function load() {
  if (!loading) loading = init({ module_or_path: CORE });
  return loading;
}

const text = new TextDecoder();
const encode = (p) => (p instanceof Uint8Array ? p : new TextEncoder().encode(String(p ?? "")));

/// A message as handlers get it.
function message(e) {
  return {
    topic: e.topic,
    payload: e.payload,
    qos: e.qos,
    retain: e.retain,
    properties: e.properties,
    text() { return text.decode(e.payload); },
    json() { return JSON.parse(text.decode(e.payload)); },
  };
}

/// Connections in use, by URL and options: a page has one WebSocket per broker and login.
const shared = new Map();

export class Kite {
  /// Connects (or joins the page's connection with the same URL and options). Resolves once
  /// the broker accepted the session; rejects with the broker's reason when it refuses, or
  /// when it is not connected within `options.timeout` ms (default 10,000).
  static async connect(url, options = {}) {
    await load();
    const key = JSON.stringify([String(url), options]);
    let kite = shared.get(key);
    if (!kite) {
      kite = new Kite(String(url), options, key);
      shared.set(key, kite);
    }
    kite.#users += 1;
    await kite.#ready;
    return kite;
  }

  #url; #options; #key; #session; #ws = null; #timer = 0; #redial = 0; #attempt = 0;
  #users = 0; #closed = false; #state = "connecting";
  #ready; #readyResolve; #readyReject;
  #listeners = { status: new Set(), message: new Set() };
  #subs = new Map();       // filter -> { qos, handlers: Set, last: Map(topic -> message) }
  #pending = new Map();    // packet id -> { resolve, reject }
  #subscribing = new Map(); // packet id -> filter

  constructor(url, options, key) {
    this.#url = url;
    this.#options = options;
    this.#key = key;
    this.#session = new Session(options);
    this.#ready = new Promise((resolve, reject) => {
      this.#readyResolve = resolve;
      this.#readyReject = reject;
    });
    const timeout = options.timeout ?? 10000;
    setTimeout(() => this.#readyReject?.(new Error(`not connected to ${url} within ${timeout} ms`)), timeout);
    this.#dial();
  }

  /// "connecting", "connected", "reconnecting" or "closed".
  get state() { return this.#state; }

  /// Listens: `status` ({state, reason, delay}), `message` (every message).
  on(type, fn) {
    this.#listeners[type]?.add(fn);
    return () => this.#listeners[type]?.delete(fn);
  }

  /// Publishes; resolves when the broker has it (QoS 1: PUBACK, QoS 2: PUBCOMP; QoS 0: once
  /// written), rejects with the broker's reason. While disconnected it waits in a bounded
  /// outbox and goes when the connection is back.
  publish(topic, payload, { qos = 0, retain = false, properties } = {}) {
    let id;
    try {
      id = this.#session.publish(String(topic), encode(payload), qos, retain, properties);
    } catch (e) {
      return Promise.reject(e);
    }
    const done = id === 0 ? Promise.resolve() : new Promise((resolve, reject) => this.#pending.set(id, { resolve, reject }));
    this.#pump();
    return done;
  }

  /// Calls `handler(message)` for each message matching `filter` — first the retained ones
  /// (also when another part of the page subscribed to the filter before). One SUBSCRIBE per
  /// filter for the page; the last `unsubscribe()` sends the UNSUBSCRIBE.
  subscribe(filter, handler, { qos = 1 } = {}) {
    filter = String(filter);
    let sub = this.#subs.get(filter);
    if (!sub) {
      sub = { qos, handlers: new Set(), last: new Map(), error: null };
      this.#subs.set(filter, sub);
      if (this.#session.connected()) {
        this.#sendSubscribe(filter, sub);
        this.#pump();
      }
    } else {
      for (const m of sub.last.values()) queueMicrotask(() => handler(m));
    }
    sub.handlers.add(handler);
    return {
      unsubscribe: () => {
        sub.handlers.delete(handler);
        if (sub.handlers.size === 0 && this.#subs.get(filter) === sub) {
          this.#subs.delete(filter);
          if (this.#session.connected()) {
            try { this.#session.unsubscribe(filter); } catch { /* closed meanwhile */ }
            this.#pump();
          }
        }
      },
    };
  }

  /// Leaves the connection; the last user's `close()` disconnects.
  close() {
    this.#users -= 1;
    if (this.#users > 0) return;
    shared.delete(this.#key);
    this.#closed = true;
    clearTimeout(this.#timer);
    clearTimeout(this.#redial);
    if (this.#ws && this.#ws.readyState === WebSocket.OPEN) {
      this.#session.disconnect();
      this.#flush();
      this.#ws.close(1000);
    }
    this.#status("closed", "closed by the page");
  }

  #status(state, reason = "", delay = 0) {
    this.#state = state;
    for (const fn of this.#listeners.status) fn({ state, reason, delay });
  }

  #dial() {
    if (this.#closed) return;
    let ws;
    try {
      ws = new WebSocket(this.#url, "mqtt");
    } catch (e) {
      this.#fail(String(e.message ?? e), true);
      return;
    }
    ws.binaryType = "arraybuffer";
    this.#ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.#session.connect();
      this.#pump();
    };
    ws.onmessage = (e) => {
      if (e.data instanceof ArrayBuffer) {
        this.#session.receive(new Uint8Array(e.data));
        this.#pump();
      }
    };
    ws.onclose = (e) => {
      if (this.#ws !== ws) return;
      this.#ws = null;
      this.#session.lost();
      const why = opened
        ? (e.reason ? `the gateway closed the connection (${e.code}): ${e.reason}` : `the connection closed (${e.code})`)
        : `cannot reach ${this.#url}`;
      this.#pump(why);
    };
  }

  /// Sends what the session has, hands out its events, sets its timer.
  #pump(lostWhy) {
    this.#flush();
    let closed = null;
    for (let e = this.#session.event(); e !== undefined; e = this.#session.event()) {
      switch (e.type) {
        case "connected":
          this.#attempt = 0;
          this.#readyResolve?.();
          this.#readyResolve = this.#readyReject = null;
          this.#status("connected");
          // A new session (or one the broker forgot) has none of the page's subscriptions.
          if (!e.sessionPresent) for (const [filter, sub] of this.#subs) this.#sendSubscribe(filter, sub);
          break;
        case "message": {
          const m = message(e);
          for (const fn of this.#listeners.message) fn(m);
          for (const [filter, sub] of this.#subs) {
            if (!matches(filter, m.topic)) continue;
            if (m.payload.length === 0) sub.last.delete(m.topic); else if (sub.last.size < 1000 || sub.last.has(m.topic)) sub.last.set(m.topic, m);
            for (const fn of sub.handlers) fn(m);
          }
          break;
        }
        case "published": {
          const p = this.#pending.get(e.id);
          this.#pending.delete(e.id);
          if (p) e.ok ? p.resolve() : p.reject(Object.assign(new Error(`the broker refused the publish: ${e.reason}`), { code: e.code }));
          break;
        }
        case "subscribed": {
          const filter = this.#subscribing.get(e.id);
          this.#subscribing.delete(e.id);
          const sub = this.#subs.get(filter);
          if (sub) sub.error = e.ok ? null : `the broker refused ${filter}: ${e.reason}`;
          if (sub && !e.ok) for (const fn of this.#listeners.status) fn({ state: this.#state, reason: sub.error, delay: 0, filter });
          break;
        }
        case "closed":
          closed = e;
          break;
        default:
          break;
      }
    }
    this.#flush();
    clearTimeout(this.#timer);
    const ms = this.#session.timeout();
    if (ms >= 0) this.#timer = setTimeout(() => { this.#session.tick(); this.#pump(); }, Math.ceil(ms));
    if (closed || lostWhy !== undefined) {
      const reason = closed ? closed.reason : lostWhy;
      if (this.#ws) { this.#ws.onclose = null; this.#ws.close(); this.#ws = null; }
      this.#fail(reason, Boolean(closed?.final));
    }
  }

  #flush() {
    for (let b = this.#session.transmit(); b !== undefined; b = this.#session.transmit()) {
      if (this.#ws && this.#ws.readyState === WebSocket.OPEN) this.#ws.send(b);
    }
  }

  /// The connection is gone: stop (a refusal, a take-over, the page's close) or try again
  /// with backoff and jitter (0.5 s doubling to 30 s, between half and all of it).
  #fail(reason, final) {
    if (this.#closed) return;
    if (final) {
      this.#closed = true;
      this.#readyReject?.(new Error(reason));
      for (const p of this.#pending.values()) p.reject(new Error(reason));
      this.#pending.clear();
      this.#status("closed", reason);
      return;
    }
    const ceiling = Math.min(30000, 500 * 2 ** Math.min(this.#attempt, 16));
    const delay = Math.round(ceiling / 2 + Math.random() * ceiling / 2);
    this.#attempt += 1;
    this.#status("reconnecting", reason, delay);
    clearTimeout(this.#redial);
    this.#redial = setTimeout(() => { this.#status("connecting"); this.#dial(); }, delay);
  }

  /// Queues the SUBSCRIBE (the caller pumps).
  #sendSubscribe(filter, sub) {
    try {
      this.#subscribing.set(this.#session.subscribe(filter, sub.qos), filter);
    } catch (e) {
      sub.error = String(e.message ?? e);
    }
  }
}
