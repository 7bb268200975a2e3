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
  redirect: Record<string, unknown>;
  server_error: LiveroomError;
  error: unknown;
}

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
}

export declare class Client extends Emitter<ClientEvents> {
  constructor(url: string | (() => string | Promise<string>), options: ConnectOptions);
  status: 'connecting' | 'open' | 'closed';
  user: User | null;
  readonly rooms: Map<string, Room>;
  inboxCursor: number;
  start(): void;
  join(room: string): Promise<Room>;
  sendPeer(to: string, body: unknown, options?: { id?: string }): Promise<PeerAck>;
  ping(): Promise<{ type: 'pong'; t: unknown; ts: number }>;
  close(): void;
}

export declare function connect(url: string | (() => string | Promise<string>), options: ConnectOptions): Client;
export declare function tokenExpiry(token: string): number | null;
export declare function closeAdvice(code: number): 'give_up' | 'renew_token' | 'reconnect';
