/** liveroom-client: the JavaScript SDK of liveroom (docs/PROTOCOL.md). */
export { connect, Client, tokenExpiry, closeAdvice, MAX_REDIRECTS } from './client.js';
export { Room } from './room.js';
export { RoomState } from './state.js';
export { Emitter } from './emitter.js';
export { WebTransportSocket, FrameReader, quicOffer } from './webtransport.js';
