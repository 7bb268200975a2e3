/**
 * The two wire encodings (docs/PROTOCOL.md, "Transport and encoding"):
 * binary WebSocket messages carry msgpack, text messages carry JSON. The
 * hello decides the server's reply encoding, so one codec per connection.
 */
import { Encoder, decode } from '@msgpack/msgpack';

const encoder = new Encoder({ ignoreUndefined: true });

export const codecs = {
  msgpack: {
    name: 'msgpack',
    encode: (frame) => encoder.encode(frame),
  },
  json: {
    name: 'json',
    encode: (frame) => JSON.stringify(frame),
  },
};

/** Decode one message by its own kind: a string is JSON, bytes are msgpack. */
export function decodeMessage(data) {
  if (typeof data === 'string') return JSON.parse(data);
  if (data instanceof ArrayBuffer) return decode(new Uint8Array(data));
  if (ArrayBuffer.isView(data)) return decode(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  throw new TypeError('liveroom-client: unexpected message data');
}

export function codecFor(name) {
  const codec = codecs[name ?? 'msgpack'];
  if (!codec) throw new TypeError(`liveroom-client: codec must be 'msgpack' or 'json', not ${name}`);
  return codec;
}
