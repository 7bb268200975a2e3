// Type declarations of liveroom-client (hand-written; the package has no build step).

export type Listener<T> = (value: T) => void | Promise<void>;

export declare class Emitter<Events extends Record<string, unknown>> {
  on<K extends keyof Events & string>(event: K, fn: Listener<Events[K]>): () => void;
  off<K extends keyof Events & string>(event: K, fn: Listener<Events[K]>): void;
  once<K extends keyof Events & string>(event: K): Promise<Events[K]>;
  emit<K extends keyof Events & string>(event: K, value: Events[K]): number;
  listenerCount(event: keyof Events & string): number;
}

export interface User { id: string; name: string; role: string; }

export interface ActionFrame {
  type: 'action';
  room: string;
  kind: string;
  body: unknown;
  from: User & { info?: unknown };
  seq: number;
  ts: number;
  id: string;
  client_id?: string;
}

export interface PeerMessage {
  type: 'peer';
  seq: number;
  prev: number;
  to: string;
  from: { id: string; name: string };
  id: string;
  body: unknown;
  ts: number;
}

export interface PeerAck { type: 'peer_ack'; id: string; seq: number; duplicate: boolean; ref?: number; }

/** An error frame's fields on an Error (docs/PROTOCOL.md, "Error codes"). */
export interface LiveroomError extends Error {
  code: string;
  advice: 'fix' | 'retry' | 'resync' | 'renew_token' | 'give_up';
  field?: string;
  room?: string;
  retry_after?: number;
  reason?: string;
  [key: string]: unknown;
}

export interface Close { code: number; reason: string; }

export declare class RoomState {
  epoch: string | null;
  total: number;
  versions: Record<string, number>;
  values: Record<string, unknown>;
  get<T = unknown>(section: string): T | undefined;
  consistent(): boolean;
}

export interface RoomEvents {
  [event: string]: unknown;
  joined: Record<string, unknown>;
  state: { sections: string[]; snapshot: boolean };
  action: ActionFrame;
  online: number;
  presence: { joins?: User[]; leaves?: string[]; count: number; capped?: true };
  retract: string;
  left: { reason: 'left' | 'kicked' | 'banned' | 'closed'; message?: string; until?: number };
  recovered: { recovered: boolean; reason?: 'epoch_changed' | 'versions_ahead' | 'epoch_unknown' };
  state_mode: 'push' | 'poll';
  join_error: LiveroomError;
  poll_error: Error;
  error: LiveroomError;
}

export declare class Room extends Emitter<RoomEvents> {
  readonly name: string;
  readonly state: RoomState;
  /** Members of the room as the server last counted them. */
  online: number;
  /** The members (rooms that keep presence, under their cap), else null. */
  presence: Map<string, User> | null;
  presenceCapped: boolean;
  /** The kept actions `joined` brought (rooms that keep history), else null. */
  history: ActionFrame[] | null;
  stateMode: 'push' | 'poll';
  joined: boolean;
  /** Send an action (`id`: your own id, echoed as `client_id`); false when not connected. */
  send(kind: string, body?: unknown, options?: { id?: string }): boolean;
  /** Write a section (host or moderator); false when not connected. */
  write(section: string, value: unknown, options?: { expect?: number }): boolean;
  moderate(op: 'ban' | 'unban' | 'mute' | 'unmute' | 'kick', user: string,
    options?: { seconds?: number; reason?: string }): Promise<Record<string, unknown>>;
  retract(id: string): Promise<Record<string, unknown>>;
  sync(): void;
  leave(): Promise<void>;
}

export interface ClientEvents {
  [event: string]: unknown;
  status: 'connecting' | 'open' | 'closed';
  connected: { resumed: boolean; user: User };
  disconnected: Close;
  closed: Close | Error;
  connect_error: Error & { code?: number };
  token_refreshed: { user: User };
  peer: PeerMessage;
  cursor: number;
  inbox: { recovered: boolean; cursor: number; upto: number; reason?: string };
  redirect: Redirect;
  /** A WebTransport session could not be opened: the WebSocket from now on. */
  transport_fallback: Error;
  server_error: LiveroomError;
  error: unknown;
}

/** A `redirect` frame (distributed deployment): the client reconnects to `url` and rejoins. */
export interface Redirect {
  type: 'redirect';
  room: string;
  url: string;
  urls?: string[];
  reason: 'not_owner' | 'moved';
  ref?: number;
}

/** Where to open a WebTransport session; hashes pin a development certificate. */
export interface WebTransportTarget {
  url: string;
  /** SHA-256 of the certificate: hex strings or `{algorithm: 'sha-256', value}`. */
  serverCertificateHashes?: CertificateHash[];
}

export type CertificateHash = string | { algorithm?: 'sha-256'; value: string | Uint8Array | ArrayBuffer };

export type Transport = 'websocket' | 'webtransport';

export interface ConnectOptions {
  /** A fresh token (JWT) for each connection; called again before the last one expires. */
  getToken: () => string | Promise<string>;
  /** 'msgpack' (binary frames, the default) or 'json' (text frames). */
  codec?: 'msgpack' | 'json';
  /** The WebSocket class (Node 18/20: `import WebSocket from 'ws'`). Default: globalThis.WebSocket. */
  WebSocket?: unknown;
  /** The highest peer seq already processed (persist `client.inboxCursor` to keep it across restarts). */
  inboxCursor?: number;
  /** Reconnect backoff, ms: min(maxDelay, minDelay * 2^attempt), jittered to half..all of it. */
  minDelay?: number;
  maxDelay?: number;
  /** How long before the token's exp to refresh it, ms (default: a quarter of its life, 1..60 s). */
  refreshLead?: number;
  /** Application ping period, ms (0: off); a connection silent for 1.5 periods is replaced. */
  pingInterval?: number;
  /** Timeout for open + welcome, ms. */
  openTimeout?: number;
  /** The HTTP origin of the polling state mode (default: the WebSocket URL's). */
  httpUrl?: string;
  /**
   * 'auto' (default): WebTransport when the runtime has it and `webtransportUrl` gives a URL,
   * the WebSocket otherwise and after a session failed to open; 'webtransport': only it;
   * 'websocket': only it.
   */
  transport?: 'auto' | Transport;
  /**
   * The WebTransport URL (https://host:port/wt), or a function asked on every connect that
   * returns one, a target with certificate hashes, or null for the WebSocket this time
   * (`() => quicOffer(location.href)` reads a dev edge's GET /v1/quic).
   */
  webtransportUrl?: string | WebTransportTarget
    | (() => string | WebTransportTarget | null | Promise<string | WebTransportTarget | null>);
  /** Certificate hashes for a `webtransportUrl` given as a string. */
  serverCertificateHashes?: CertificateHash[];
  /** How long a WebTransport session may take to open before the fallback, ms (5000). */
  webtransportTimeout?: number;
  /** The WebTransport class. Default: globalThis.WebTransport. */
  WebTransport?: unknown;
}

export declare class Client extends Emitter<ClientEvents> {
  constructor(url: string | (() => string | Promise<string>), options: ConnectOptions);
  status: 'connecting' | 'open' | 'closed';
  user: User | null;
  readonly rooms: Map<string, Room>;
  inboxCursor: number;
  /** The transport of the connection in use (null before the first one). */
  transport: Transport | null;
  /** Datagrams received (lossy state over WebTransport). */
  datagrams: number;
  start(): void;
  join(room: string): Promise<Room>;
  sendPeer(to: string, body: unknown, options?: { id?: string }): Promise<PeerAck>;
  ping(): Promise<{ type: 'pong'; t: unknown; ts: number }>;
  close(): void;
}

export declare function connect(url: string | (() => string | Promise<string>), options: ConnectOptions): Client;
export declare function tokenExpiry(token: string): number | null;
export declare function closeAdvice(code: number): 'give_up' | 'renew_token' | 'reconnect';

/** Redirects followed in a row before backing off and asking `url` again. */
export declare const MAX_REDIRECTS: number;

/** Where a liveroom edge's QUIC endpoint is, from its GET /v1/quic; null when QUIC is off. */
export declare function quicOffer(base: string | URL): Promise<WebTransportTarget | null>;

/** Reassembles a WebTransport stream's pieces into frames (4-byte big-endian length + payload). */
export declare class FrameReader {
  constructor(limit?: number);
  feed(chunk: Uint8Array): Uint8Array[];
  readonly pending: number;
}

/** A WebTransport session with the WebSocket interface the Client uses. */
export declare class WebTransportSocket {
  constructor(url: string, options?: { serverCertificateHashes?: CertificateHash[]; openTimeout?: number; WebTransport?: unknown });
  readonly kind: 'webtransport';
  readyState: number;
  /** Whether the session ever opened. */
  opened: boolean;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}
