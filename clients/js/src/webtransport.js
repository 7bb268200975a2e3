/**
 * A WebTransport session (HTTP/3 over QUIC) dressed as a WebSocket, so the
 * Client runs the same protocol over either (docs/PROTOCOL.md, "WebTransport
 * (QUIC)"): the client opens one bidirectional stream and every frame goes
 * both ways on it as a 4-byte big-endian length and the payload; lossy state
 * comes as datagrams, one `state` frame each without the length.
 *
 * It has what the Client uses of a WebSocket: `readyState`, `send`, `close`,
 * `onopen`, `onmessage` (`{data: Uint8Array, datagram: boolean}`) and
 * `onclose` (`{code, reason}`). `opened` says whether the session ever
 * opened: a session that never did (no UDP, a blocked port, a refused
 * certificate) is what makes the Client fall back to a WebSocket.
 */

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;
const HEADER = 4;
/** The largest frame taken from the server (a `joined` with every section at
 * its size limit is 256 x 64 KiB): past it the session is closed with 1009. */
export const MAX_INCOMING_FRAME = 32 * 1024 * 1024;
/** How long the stream is read to its end after the session closed before the
 * close is reported (the `error` before a 4001 or 4200 close is on the stream). */
const DRAIN_MS = 1000;

const textEncoder = new TextEncoder();

/** A hash as `serverCertificateHashes` takes it; a hex string is accepted too. */
function certificateHash(hash) {
  if (typeof hash === 'string') hash = { algorithm: 'sha-256', value: hash };
  let { value } = hash;
  if (typeof value === 'string') {
    if (!/^([0-9a-fA-F]{2})+$/.test(value)) throw new TypeError('liveroom-client: a certificate hash must be hex');
    value = new Uint8Array(value.match(/../g).map((h) => parseInt(h, 16)));
  }
  return { algorithm: hash.algorithm ?? 'sha-256', value };
}

/** One length-prefixed frame of `data` (a string is sent as its UTF-8). */
export function wtFrame(data) {
  const body = typeof data === 'string' ? textEncoder.encode(data) : new Uint8Array(data);
  const frame = new Uint8Array(HEADER + body.length);
  new DataView(frame.buffer).setUint32(0, body.length);
  frame.set(body, HEADER);
  return frame;
}

/**
 * Reassembles the stream's pieces into frames: `feed(bytes)` returns the
 * payloads it completed, in order. A header over `limit` throws.
 */
export class FrameReader {
  #buf = new Uint8Array(0);
  #limit;

  constructor(limit = MAX_INCOMING_FRAME) {
    this.#limit = limit;
  }

  feed(chunk) {
    let buf = chunk;
    if (this.#buf.length) {
      buf = new Uint8Array(this.#buf.length + chunk.length);
      buf.set(this.#buf);
      buf.set(chunk, this.#buf.length);
    }
    const frames = [];
    let pos = 0;
    while (buf.length - pos >= HEADER) {
      const size = new DataView(buf.buffer, buf.byteOffset + pos, HEADER).getUint32(0);
      if (size > this.#limit) throw new RangeError(`liveroom-client: a frame of ${size} bytes is over ${this.#limit}`);
      if (buf.length - pos - HEADER < size) break;
      frames.push(buf.slice(pos + HEADER, pos + HEADER + size));
      pos += HEADER + size;
    }
    this.#buf = buf.slice(pos);
    return frames;
  }

  /** Bytes of an incomplete frame held. */
  get pending() {
    return this.#buf.length;
  }
}

export class WebTransportSocket {
  kind = 'webtransport';
  binaryType = 'arraybuffer';
  readyState = CONNECTING;
  opened = false;
  onopen = null;
  onmessage = null;
  onclose = null;
  onerror = null;
  #wt;
  #writer = null;
  #reading = Promise.resolve();
  #done = false;
  #timer;

  /**
   * `url`: https://host:port/wt. Options: `serverCertificateHashes` (a
   * development certificate, accepted by its SHA-256: hex strings or
   * `{algorithm, value}`), `openTimeout` (ms for the session and its stream
   * to open), `WebTransport` (the class; default globalThis.WebTransport).
   * Throws when the class refuses the URL or options.
   */
  constructor(url, options = {}) {
    const WT = options.WebTransport ?? globalThis.WebTransport;
    if (typeof WT !== 'function') throw new TypeError('liveroom-client: no WebTransport here');
    const init = {};
    if (options.serverCertificateHashes?.length) {
      init.serverCertificateHashes = options.serverCertificateHashes.map(certificateHash);
    }
    this.url = url;
    this.#wt = new WT(url, init);
    this.#wt.closed.then(
      (info) => this.#finish(info?.closeCode || 1005, info?.reason ?? ''),
      (err) => this.#finish(1006, String(err?.message ?? err)),
    );
    this.#timer = setTimeout(() => {
      if (!this.opened) this.#abort('WebTransport session did not open in time');
    }, options.openTimeout ?? 5000);
    this.#start();
  }

  send(data) {
    if (this.readyState !== OPEN || !this.#writer) return;
    this.#writer.write(wtFrame(data)).catch(() => {});
  }

  close(code = 1000, reason = '') {
    if (this.readyState >= CLOSING) return;
    this.readyState = CLOSING;
    try {
      this.#wt.close({ closeCode: code, reason });
    } catch {
      this.#finish(code, reason);
    }
  }

  async #start() {
    let stream;
    try {
      await this.#wt.ready;
      stream = await this.#wt.createBidirectionalStream();
      this.#writer = stream.writable.getWriter();
    } catch (err) {
      return this.#abort(String(err?.message ?? err));
    }
    if (this.#done || this.readyState !== CONNECTING) return undefined;
    clearTimeout(this.#timer);
    this.opened = true;
    this.readyState = OPEN;
    this.#reading = Promise.all([this.#readFrames(stream.readable), this.#readDatagrams()]);
    this.onopen?.({});
    return undefined;
  }

  #abort(reason) {
    try {
      this.#wt.close({ closeCode: 1006, reason: reason.slice(0, 200) });
    } catch {
      // not open yet, or already closed
    }
    this.#finish(1006, reason);
  }

  async #readFrames(readable) {
    const reader = readable.getReader();
    const frames = new FrameReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        for (const data of frames.feed(value)) this.onmessage?.({ data, datagram: false });
      }
    } catch (err) {
      if (err instanceof RangeError) this.close(1009, 'frame too big');
    }
  }

  async #readDatagrams() {
    const reader = this.#wt.datagrams.readable.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.#done) return;
        this.onmessage?.({ data: value, datagram: true });
      }
    } catch {
      // the session ended
    }
  }

  /** Report the close once, after the frames stream was read to its end (bounded). */
  async #finish(code, reason) {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#timer);
    await Promise.race([this.#reading, new Promise((r) => { setTimeout(r, DRAIN_MS); })]);
    this.readyState = CLOSED;
    this.onclose?.({ code, reason });
  }
}

/**
 * Where an edge's QUIC endpoint is, from its `GET /v1/quic` (the port, the
 * path and, for a development certificate, its SHA-256): `{url,
 * serverCertificateHashes}`, or null when the edge has QUIC off or cannot be
 * asked. `base` is the edge's HTTP(S) URL; the host name is taken from it.
 */
export async function quicOffer(base) {
  try {
    const res = await fetch(new URL('/v1/quic', base), { cache: 'no-store' });
    if (!res.ok) return null;
    const info = await res.json();
    const url = `https://${new URL(base).hostname}:${info.port}${info.path ?? '/wt'}`;
    return { url, serverCertificateHashes: info.cert_sha256 ? [info.cert_sha256] : [] };
  } catch {
    return null;
  }
}
