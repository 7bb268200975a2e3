/**
 * A tiny event emitter that works the same in browsers and Node (no
 * dependency on node:events). A listener that throws does not stop the
 * others: the error is reported on the 'error' event (or the console).
 */
export class Emitter {
  #listeners = new Map();

  /** Add a listener; returns a function that removes it. */
  on(event, fn) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    this.#listeners.get(event)?.delete(fn);
  }

  /** Resolve with the next emission of `event`. */
  once(event) {
    return new Promise((resolve) => {
      const off = this.on(event, (value) => { off(); resolve(value); });
    });
  }

  emit(event, value) {
    const set = this.#listeners.get(event);
    if (!set) return 0;
    for (const fn of [...set]) {
      try {
        fn(value);
      } catch (err) {
        if (event !== 'error' && this.#listeners.get('error')?.size) this.emit('error', err);
        else console.error('liveroom-client: listener failed', err);
      }
    }
    return set.size;
  }

  /** Call the listeners one after the other, awaiting each (a listener may be async). */
  async emitAsync(event, value) {
    for (const fn of [...(this.#listeners.get(event) ?? [])]) await fn(value);
  }

  listenerCount(event) {
    return this.#listeners.get(event)?.size ?? 0;
  }
}
