/**
 * The two wire encodings (docs/PROTOCOL.md, "Transport and encoding"):
 * binary WebSocket messages carry msgpack, text messages carry JSON; on
 * WebTransport a payload that begins with `{` (or JSON white space) is JSON,
 * any other is msgpack. The hello decides the server's reply encoding, so one
 * codec per connection.
 *
 * @msgpack/msgpack is imported only when the msgpack codec is first loaded, so
 * a page that speaks JSON needs nothing but these files (no import map, no
 * bundler).
 */

let msgpack = null; // {encode, decode} once loaded

const textDecoder = new TextDecoder();

async function loadMsgpack() {
  if (!msgpack) {
    const { Encoder, decode } = await import('@msgpack/msgpack');
    const encoder = new Encoder({ ignoreUndefined: true });
    msgpack = { encode: (v) => encoder.encode(v), decode };
  }
  return msgpack;
}

const json = {
  name: 'json',
  encode: (frame) => JSON.stringify(frame),
};

export const CODECS = ['msgpack', 'json'];

/** Check a codec name (synchronously, for the constructor). */
export function checkCodec(name) {
  const codec = name ?? 'msgpack';
  if (!CODECS.includes(codec)) throw new TypeError(`liveroom-client: codec must be 'msgpack' or 'json', not ${name}`);
  return codec;
}

/** The codec `name`: {name, encode(frame)}; loads @msgpack/msgpack for 'msgpack'. */
export async function loadCodec(name) {
  if (checkCodec(name) === 'json') return json;
  const { encode } = await loadMsgpack();
  return { name: 'msgpack', encode };
}

function bytesOf(data) {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return null;
}

/** True when a payload's first byte that is not JSON white space is `{`. */
function looksLikeJson(bytes) {
  for (const b of bytes) {
    if (b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d) continue;
    return b === 0x7b;
  }
  return false;
}

/**
 * Decode one message by its own kind: a string is JSON; bytes are msgpack,
 * except a WebTransport payload (`sniff`) that begins with `{`, which is JSON.
 */
export function decodeMessage(data, sniff = false) {
  if (typeof data === 'string') return JSON.parse(data);
  const bytes = bytesOf(data);
  if (!bytes) throw new TypeError('liveroom-client: unexpected message data');
  if (sniff && looksLikeJson(bytes)) return JSON.parse(textDecoder.decode(bytes));
  if (!msgpack) throw new TypeError('liveroom-client: a msgpack message on a JSON connection');
  return msgpack.decode(bytes);
}
