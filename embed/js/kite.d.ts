// TypeScript declarations of kite.js (the module /kite.js; the classic /kite.iife.js defines
// the same `Kite` as `window.Kite`).

/** How to connect. */
export interface ConnectOptions {
  /** Client identifier; empty lets an MQTT 5 broker assign one. */
  clientId?: string;
  username?: string;
  password?: string;
  /** 5 (MQTT 5.0, the default) or 4 (MQTT 3.1.1). */
  version?: 5 | 4;
  /** Seconds; 0 turns keep-alive off. Default 60. */
  keepAlive?: number;
  /** Start a new session (default true) or resume one. */
  clean?: boolean;
  /** MQTT 5 Session Expiry Interval, in seconds. */
  sessionExpiry?: number;
  /** Milliseconds `connect` waits for the broker's acceptance. Default 10,000. */
  timeout?: number;
}

/** MQTT 5 properties of a message. */
export interface Properties {
  contentType?: string;
  responseTopic?: string;
  correlationData?: string | Uint8Array;
  /** Message Expiry Interval, in seconds. */
  messageExpiry?: number;
  /** true: the payload is UTF-8. */
  payloadFormat?: boolean;
  userProperties?: Record<string, string> | [string, string][];
}

export interface PublishOptions {
  qos?: 0 | 1 | 2;
  retain?: boolean;
  properties?: Properties;
}

/** A message as handlers get it. */
export interface Message {
  topic: string;
  payload: Uint8Array;
  qos: 0 | 1 | 2;
  /** true for a retained message sent when subscribing. */
  retain: boolean;
  properties: Properties;
  /** The payload as UTF-8 text. */
  text(): string;
  /** The payload parsed as JSON (throws when it is not JSON). */
  json(): unknown;
}

export interface Status {
  state: "connecting" | "connected" | "reconnecting" | "closed";
  /** Why: the broker's or the network's words. */
  reason: string;
  /** Milliseconds until the next attempt (reconnecting). */
  delay: number;
  /** The filter a refused subscription was for. */
  filter?: string;
}

export interface Subscription {
  unsubscribe(): void;
}

export class Kite {
  /** Connects, or joins the page's connection with the same URL and options. */
  static connect(url: string, options?: ConnectOptions): Promise<Kite>;
  readonly state: Status["state"];
  /** Listens; returns a function that stops listening. */
  on(type: "status", listener: (status: Status) => void): () => void;
  on(type: "message", listener: (message: Message) => void): () => void;
  /** Resolves when the broker has it (QoS 1: PUBACK, QoS 2: PUBCOMP); QoS 0 at once, queued. */
  publish(topic: string, payload: string | Uint8Array, options?: PublishOptions): Promise<void>;
  /** The retained messages first, then each message matching `filter`. */
  subscribe(filter: string, handler: (message: Message) => void, options?: { qos?: 0 | 1 | 2 }): Subscription;
  /** Leaves the connection; the last user's close disconnects. */
  close(): void;
}
