/**
 * The client's pure rules: what a close code asks of it, when a token
 * expires, the Error of an `error` frame, a message id.
 */

/** The `exp` claim of a JWT in milliseconds, or null if it cannot be read. */
export function tokenExpiry(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = typeof atob === 'function' ? atob(part) : Buffer.from(part, 'base64').toString('binary');
    const exp = JSON.parse(json).exp;
    return typeof exp === 'number' ? exp * 1000 : null;
  } catch {
    return null;
  }
}

/** What a close code asks of the client (docs/PROTOCOL.md, "Close codes"). */
export function closeAdvice(code) {
  if (code === 1000 || (code >= 4000 && code < 4100)) return 'give_up';
  if (code >= 4200 && code < 4300) return 'renew_token';
  return 'reconnect';
}

/** An Error carrying the error frame's fields (code, advice, retry_after…). */
export function errorOf(frame) {
  return Object.assign(new Error(frame.message ?? frame.code), frame);
}

export function randomId() {
  const c = globalThis.crypto;
  if (c?.randomUUID) return c.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}
