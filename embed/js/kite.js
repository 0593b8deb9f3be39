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
    // Never accepted within the timeout: the connection is given up (nobody holds it yet).
    setTimeout(() => {
      if (this.#readyReject) this.#stop(`not connected to ${url} within ${timeout} ms`);
    }, timeout);
    this.#dial();
  }

  /// "connecting", "connected", "reconnecting" or "closed".
  get state() { return this.#state; }

  /// Listens: `status` ({state, reason, delay}), `message` (every message).
  on(type, fn) {
    this.#listeners[type]?.add(fn);
    return () => this.#listeners[type]?.delete(fn);
  }

  /// Publishes; resolves when the broker has it (QoS 1: PUBACK, QoS 2: PUBCOMP; QoS 0 at
  /// once, queued: nothing acknowledges it), rejects with the broker's reason. While
  /// disconnected it waits in a bounded outbox and goes when the connection is back.
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
  /// (also when another part of the page subscribed to the filter before) — and
  /// `onError(reason)` if the broker refuses the filter. One SUBSCRIBE per filter for the
  /// page; the last `unsubscribe()` sends the UNSUBSCRIBE.
  subscribe(filter, handler, { qos = 1, onError } = {}) {
    filter = String(filter);
    let sub = this.#subs.get(filter);
    if (!sub) {
      sub = { qos, handlers: new Set(), errors: new Set(), last: new Map(), error: null, held: false };
      this.#subs.set(filter, sub);
      if (this.#session.connected()) {
        this.#sendSubscribe(filter, sub);
        this.#pump();
      }
    } else {
      for (const m of sub.last.values()) queueMicrotask(() => handler(m));
      if (sub.error && onError) queueMicrotask(() => onError(sub.error));
    }
    sub.handlers.add(handler);
    if (onError) sub.errors.add(onError);
    return {
      unsubscribe: () => {
        sub.handlers.delete(handler);
        if (onError) sub.errors.delete(onError);
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

  /// GETs `path` of the gateway's HTTP API (the gateway of the WebSocket's URL), with this
  /// connection's login as HTTP Basic: the JSON answer; rejects with the API's `error`.
  async api(path) {
    const base = this.#url.replace(/^ws/, "http").replace(/\/mqtt(\/[^/]*)?$/, "");
    const headers = {};
    if (this.#options.username) headers.Authorization = "Basic " + btoa(`${this.#options.username}:${this.#options.password ?? ""}`);
    const response = await fetch(base + path, { headers });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw Object.assign(new Error(body.error ?? `HTTP ${response.status}`), { status: response.status });
    return body;
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
          // A new session (or one the broker forgot) has none of the page's subscriptions; a
          // resumed one has those it acknowledged, not those made while away.
          for (const [filter, sub] of this.#subs) {
            if (!e.sessionPresent) sub.held = false;
            if (!sub.held) this.#sendSubscribe(filter, sub);
          }
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
          if (sub) {
            sub.error = e.ok ? null : `the broker refused ${filter}: ${e.reason}`;
            sub.held = e.ok;
          }
          if (sub && !e.ok) {
            for (const fn of sub.errors) fn(sub.error);
            for (const fn of this.#listeners.status) fn({ state: this.#state, reason: sub.error, delay: 0, filter });
          }
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
      this.#stop(reason);
      return;
    }
    const ceiling = Math.min(30000, 500 * 2 ** Math.min(this.#attempt, 16));
    const delay = Math.round(ceiling / 2 + Math.random() * ceiling / 2);
    this.#attempt += 1;
    this.#status("reconnecting", reason, delay);
    clearTimeout(this.#redial);
    this.#redial = setTimeout(() => { this.#status("connecting"); this.#dial(); }, delay);
  }

  /// Ends the connection for good: its promises reject with `reason`, and the next
  /// `Kite.connect` with the same URL and options starts a new one.
  #stop(reason) {
    this.#closed = true;
    if (shared.get(this.#key) === this) shared.delete(this.#key);
    clearTimeout(this.#timer);
    clearTimeout(this.#redial);
    if (this.#ws) { this.#ws.onclose = null; this.#ws.close(); this.#ws = null; }
    this.#readyReject?.(new Error(reason));
    this.#readyResolve = this.#readyReject = null;
    for (const p of this.#pending.values()) p.reject(new Error(reason));
    this.#pending.clear();
    this.#status("closed", reason);
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

// ---------------------------------------------------------------------------------------
// Web components, on top of the above (no framework). Each finds its connection: the
// nearest <kite-connection url=...>, else <html data-kite-url=...>, else the gateway that
// served this file (ws(s)://its-host/mqtt). Each shows the retained value first, follows the
// broker's state (not its own), says why when it cannot ("not authorized", "disconnected"),
// sends DOM events (kite-message, kite-publish, kite-error), and exposes CSS ::part()s.

/// The connection for `el` (shared by every element with the same URL and options).
function connectionFor(el) {
  const host = el.closest("kite-connection");
  if (host) return host.connection();
  const url = document.documentElement.dataset.kiteUrl
    ?? CORE.href.replace(/^http/, "ws").replace(/\/[^/]*$/, "/mqtt");
  return Kite.connect(url);
}

/// The value at a JSON Pointer (`/a/0/b`) of a message's payload; the text itself without one.
function read(m, field) {
  if (!field) return m.text();
  let v;
  try { v = m.json(); } catch { return undefined; }
  for (const key of field.split("/").slice(1)) {
    if (v === null || typeof v !== "object") return undefined;
    v = v[key.replaceAll("~1", "/").replaceAll("~0", "~")];
  }
  return typeof v === "object" ? JSON.stringify(v) : v;
}

const define = (name, cls) => {
  if (globalThis.customElements && !customElements.get(name)) customElements.define(name, cls);
};

if (globalThis.HTMLElement) {
  /// <kite-connection url client-id username password version>: the connection its
  /// descendants use.
  define("kite-connection", class extends HTMLElement {
    #kite = null;
    connection() {
      if (!this.#kite) {
        const a = (n) => this.getAttribute(n) ?? undefined;
        const options = { clientId: a("client-id"), username: a("username"), password: a("password") };
        if (a("version")) options.version = Number(a("version"));
        this.#kite = Kite.connect(a("url"), options);
        this.#kite.then((k) => k.on("status", (s) => this.setAttribute("state", s.state)), () => {});
      }
      return this.#kite;
    }
    disconnectedCallback() {
      this.#kite?.then((k) => k.close(), () => {});
      this.#kite = null;
    }
  });

  /// The parts every element shares: a shadow root, its connection, its subscription, and
  /// the state shown (attribute `state`: connecting, connected, reconnecting, closed, denied).
  class Base extends HTMLElement {
    #stop = [];
    kite = null;
    constructor() {
      super();
      this.attachShadow({ mode: "open" }).innerHTML = `<style>:host{display:inline-flex;align-items:baseline;gap:.3em}
[part=status]:empty{display:none}[part=status]{font-size:.8em;opacity:.7}</style>${this.template()}<span part="status"></span>`;
    }
    part(name) { return this.shadowRoot.querySelector(`[part~=${name}]`); }
    say(text, state) {
      this.part("status").textContent = text;
      if (state) this.setAttribute("state", state);
    }
    emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true })); }
    async connectedCallback() {
      this.say("connecting…", "connecting");
      let kite;
      try {
        kite = await connectionFor(this);
      } catch (e) {
        this.say(e.message, "closed");
        this.emit("kite-error", { reason: e.message });
        return;
      }
      if (!this.isConnected) return;
      this.kite = kite;
      this.say("", kite.state);
      this.#stop.push(kite.on("status", (s) => {
        if (s.filter) return;
        this.say(s.state === "connected" ? "" : (s.state === "reconnecting" ? "disconnected" : s.reason), s.state);
      }));
      const topic = this.getAttribute("state-topic") ?? this.getAttribute("topic");
      if (topic && this.follows()) {
        const sub = kite.subscribe(topic, (m) => {
          this.show(m);
          this.emit("kite-message", m);
        }, {
          onError: (reason) => {
            this.say(/authori/i.test(reason) ? "not authorized" : reason, "denied");
            this.emit("kite-error", { reason });
          },
        });
        this.#stop.push(() => sub.unsubscribe());
      }
    }
    disconnectedCallback() {
      for (const stop of this.#stop.splice(0)) stop();
      this.kite = null;
    }
    follows() { return true; }
    show() {}
    /// Publishes `payload` on the element's topic with its `qos` and `retain`: pending until
    /// the broker acknowledges it.
    async send(payload) {
      if (!this.kite) return;
      const topic = this.getAttribute("topic");
      this.setAttribute("pending", "");
      try {
        await this.kite.publish(topic, payload, {
          qos: Number(this.getAttribute("qos") ?? 1),
          retain: this.hasAttribute("retain"),
        });
        this.emit("kite-publish", { topic, payload });
        this.say("", this.kite.state);
      } catch (e) {
        this.say(/authori/i.test(e.message) ? "not authorized" : e.message, "denied");
        this.emit("kite-error", { topic, reason: e.message });
      } finally {
        this.removeAttribute("pending");
      }
    }
  }

  /// <kite-value topic field unit decimals>: the last value.
  define("kite-value", class extends Base {
    template() { return `<span part="value">–</span><span part="unit"></span>`; }
    show(m) {
      let v = read(m, this.getAttribute("field"));
      const d = this.getAttribute("decimals");
      if (d !== null && typeof v !== "undefined" && v !== "" && !Number.isNaN(Number(v))) v = Number(v).toFixed(Number(d));
      this.part("value").textContent = v ?? "–";
      this.part("unit").textContent = this.getAttribute("unit") ?? "";
    }
  });

  /// <kite-switch topic on="1" off="0" state-topic field qos retain>: shows the topic's state
  /// (or the state topic's) and publishes `on`/`off` when pressed.
  define("kite-switch", class extends Base {
    template() { return `<button part="switch" role="switch" aria-checked="false">off</button>`; }
    connectedCallback() {
      this.part("switch").onclick = () => {
        const on = this.getAttribute("on") ?? "1";
        const off = this.getAttribute("off") ?? "0";
        this.send(this.hasAttribute("checked") ? off : on);
      };
      return super.connectedCallback();
    }
    /// A state that is neither `on` nor `off` is shown as it is (with an `unknown`
    /// attribute), not as "off"; a press then sends `on`.
    show(m) {
      const v = String(read(m, this.getAttribute("field")));
      const [onWord, offWord] = [this.getAttribute("on") ?? "1", this.getAttribute("off") ?? "0"];
      const on = v === onWord;
      const known = on || v === offWord;
      this.toggleAttribute("checked", on);
      this.toggleAttribute("unknown", !known);
      const b = this.part("switch");
      b.setAttribute("aria-checked", String(on));
      b.textContent = on ? "on" : known ? "off" : v;
      b.title = known ? "" : `"${v}" is neither on ("${onWord}") nor off ("${offWord}"): set the on and off attributes`;
    }
  });

  /// <kite-button topic payload qos retain>: publishes `payload` when pressed.
  define("kite-button", class extends Base {
    template() { return `<button part="button"><slot>Send</slot></button>`; }
    follows() { return false; }
    connectedCallback() {
      this.part("button").onclick = () => this.send(this.getAttribute("payload") ?? "");
      return super.connectedCallback();
    }
  });

  /// <kite-slider topic min max step state-topic field>: follows the state, publishes the
  /// value when it is let go.
  define("kite-slider", class extends Base {
    template() { return `<input part="slider" type="range"><output part="value"></output>`; }
    connectedCallback() {
      const input = this.part("slider");
      for (const a of ["min", "max", "step"]) if (this.hasAttribute(a)) input.setAttribute(a, this.getAttribute(a));
      input.oninput = () => { this.part("value").textContent = input.value; };
      input.onchange = () => this.send(input.value);
      return super.connectedCallback();
    }
    show(m) {
      const v = read(m, this.getAttribute("field"));
      if (v === undefined || Number.isNaN(Number(v))) return;
      this.part("slider").value = v;
      this.part("value").textContent = v;
    }
  });

  /// <kite-status device>: a device's state from the gateway's device monitor (asked every
  /// 5 s): `device-state` attribute and the `state` part (online, offline, stale, unknown),
  /// `since` part ("since 3 min").
  define("kite-status", class extends Base {
    #timer = 0;
    template() { return `<span part="dot">●</span><span part="state">…</span><span part="since"></span>`; }
    follows() { return false; }
    async connectedCallback() {
      await super.connectedCallback();
      const poll = async () => {
        if (!this.kite || !this.isConnected) return;
        try {
          const d = await this.kite.api(`/api/v1/devices/${encodeURIComponent(this.getAttribute("device") ?? "")}`);
          this.setAttribute("device-state", d.state);
          this.part("state").textContent = d.state;
          const mins = Math.round((Date.now() - d.since) / 60000);
          this.part("since").textContent = mins < 1 ? " just now" : ` for ${mins} min`;
          this.say("", this.kite.state);
        } catch (e) {
          this.say(e.status === 403 ? "not authorized" : e.message, e.status === 403 ? "denied" : undefined);
        }
        this.#timer = setTimeout(poll, 5000);
      };
      poll();
    }
    disconnectedCallback() {
      clearTimeout(this.#timer);
      super.disconnectedCallback();
    }
  });

  /// <kite-chart topic field window="1h">: the recorded history (the gateway's series API, one
  /// bucket per pixel column, min–max band), then live points; `points` attribute: how many
  /// points it draws; `runs`: how many separate lines (a hole in the data breaks the line).
  define("kite-chart", class extends Base {
    #points = [];   // [t, min, max, last]
    #frame = 0;
    template() { return `<canvas part="chart" width="300" height="120"></canvas>`; }
    span() {
      const w = this.getAttribute("window") ?? "1h";
      const n = parseFloat(w);
      return n * ({ s: 1e3, m: 6e4, h: 3.6e6, d: 8.64e7 }[w.slice(-1)] ?? 1e3);
    }
    async connectedCallback() {
      await super.connectedCallback();
      if (!this.kite) return;
      const canvas = this.part("chart");
      const from = Date.now() - this.span();
      const q = new URLSearchParams({ topic: this.getAttribute("topic"), from, points: canvas.width });
      if (this.getAttribute("field")) q.set("field", this.getAttribute("field"));
      try {
        const { series } = await this.kite.api(`/api/v1/history/series?${q}`);
        const recorded = (series?.[0]?.buckets ?? []).map((b) => [b.t, b.min, b.max, b.last]);
        this.#points = recorded.concat(this.#points.filter((p) => !recorded.length || p[0] > recorded.at(-1)[0]));
      } catch {
        // Not recorded (or not allowed): live points only.
      }
      this.draw();
    }
    show(m) {
      const v = Number(read(m, this.getAttribute("field")));
      if (Number.isNaN(v) || m.retain) return;
      this.#points.push([Date.now(), v, v, v]);
      cancelAnimationFrame(this.#frame);
      this.#frame = requestAnimationFrame(() => this.draw());
    }
    draw() {
      const canvas = this.part("chart");
      const cut = Date.now() - this.span();
      this.#points = this.#points.filter((p) => p[0] >= cut);
      this.setAttribute("points", String(this.#points.length));
      const g = canvas.getContext("2d");
      const { width: w, height: h } = canvas;
      g.clearRect(0, 0, w, h);
      if (!this.#points.length) return;
      let lo = Infinity, hi = -Infinity;
      for (const p of this.#points) { lo = Math.min(lo, p[1]); hi = Math.max(hi, p[2]); }
      if (hi === lo) { hi += 1; lo -= 1; }
      const x = (t) => ((t - cut) / this.span()) * w;
      const y = (v) => h - 4 - ((v - lo) / (hi - lo)) * (h - 8);
      g.fillStyle = "rgba(10,124,255,.15)";
      for (const p of this.#points) g.fillRect(x(p[0]), y(p[2]), 1, Math.max(1, y(p[1]) - y(p[2])));
      g.strokeStyle = getComputedStyle(this).color || "#0a7cff";
      // No line across a hole in the data, as in the app's charts: neighbours more than five
      // times the median spacing (and four pixels) apart are not joined.
      const pts = this.#points;
      const steps = pts.slice(1).map((p, i) => p[0] - pts[i][0]).sort((a, b) => a - b);
      const gap = Math.max(5 * (steps[steps.length >> 1] || 0), (4 * this.span()) / w);
      let runs = 0;
      g.beginPath();
      pts.forEach((p, i) => (i && p[0] - pts[i - 1][0] <= gap ? g.lineTo(x(p[0]), y(p[3])) : (runs++, g.moveTo(x(p[0]), y(p[3])))));
      g.stroke();
      this.setAttribute("runs", String(runs));
    }
  });

  /// <kite-gauge topic field min max unit>: the value on an arc.
  define("kite-gauge", class extends Base {
    template() {
      return `<svg part="gauge" viewBox="0 0 100 60" width="120" height="72"><path d="M10 55 A40 40 0 0 1 90 55" fill="none" stroke="#ddd" stroke-width="8"/><path part="arc" fill="none" stroke="currentColor" stroke-width="8"/><text part="value" x="50" y="52" text-anchor="middle" font-size="14">–</text></svg>`;
    }
    show(m) {
      const v = Number(read(m, this.getAttribute("field")));
      if (Number.isNaN(v)) return;
      const min = Number(this.getAttribute("min") ?? 0);
      const max = Number(this.getAttribute("max") ?? 100);
      const f = Math.min(1, Math.max(0, (v - min) / (max - min || 1)));
      const a = Math.PI * (1 - f);
      this.part("arc").setAttribute("d", `M10 55 A40 40 0 0 1 ${(50 + 40 * Math.cos(a)).toFixed(2)} ${(55 - 40 * Math.sin(a)).toFixed(2)}`);
      this.part("value").textContent = `${v}${this.getAttribute("unit") ?? ""}`;
    }
  });
}
