/**
 * Which transport a connection takes (options `transport`, `webtransportUrl`,
 * `serverCertificateHashes`): WebTransport when the runtime has it, a URL is
 * given and no session failed to open before (`auto`), or always
 * (`webtransport`); the WebSocket otherwise.
 */
import { WebTransportSocket } from './webtransport.js';

export const TRANSPORTS = ['auto', 'webtransport', 'websocket'];

/** Check the transport options (synchronously, for the constructor). */
export function checkTransport(options) {
  if (!TRANSPORTS.includes(options.transport)) {
    throw new TypeError(`liveroom-client: transport must be one of ${TRANSPORTS.join(', ')}`);
  }
  if (options.transport === 'webtransport' && !options.webtransportUrl) {
    throw new TypeError("liveroom-client: transport 'webtransport' needs options.webtransportUrl");
  }
  if (options.transport !== 'webtransport' && !(options.WebSocket ?? globalThis.WebSocket)) {
    throw new TypeError('liveroom-client: no WebSocket; pass options.WebSocket');
  }
}

/** The WebTransport URL (and certificate hashes) to try now, or null for the WebSocket. */
export async function webTransportTarget(options, failedBefore) {
  const { transport, webtransportUrl, serverCertificateHashes } = options;
  if (transport === 'websocket' || !webtransportUrl) return null;
  const available = typeof (options.WebTransport ?? globalThis.WebTransport) === 'function';
  if (transport === 'auto' && (failedBefore || !available)) return null;
  let target = typeof webtransportUrl === 'function' ? await webtransportUrl() : webtransportUrl;
  if (!target) {
    if (transport === 'webtransport') throw new Error('liveroom-client: no WebTransport URL');
    return null;
  }
  if (typeof target === 'string') target = { url: target };
  return { url: target.url, serverCertificateHashes: target.serverCertificateHashes ?? serverCertificateHashes };
}

/**
 * Open the socket: a WebTransportSocket for `target`, else a WebSocket to
 * `url`. A WebTransport that refuses the URL at once falls back (`auto`,
 * reported through `fallBack`) or throws (`webtransport`).
 */
export function openSocket(options, url, target, fallBack) {
  if (target) {
    try {
      const ws = new WebTransportSocket(target.url, { serverCertificateHashes: target.serverCertificateHashes,
        openTimeout: options.webtransportTimeout, WebTransport: options.WebTransport });
      return { ws, transport: 'webtransport' };
    } catch (err) {
      if (options.transport === 'webtransport') throw err;
      fallBack(err);
    }
  }
  // Looked up now, not at construction: a page may wrap window.WebSocket.
  const WS = options.WebSocket ?? globalThis.WebSocket;
  const ws = new WS(url);
  ws.binaryType = 'arraybuffer';
  return { ws, transport: 'websocket' };
}
