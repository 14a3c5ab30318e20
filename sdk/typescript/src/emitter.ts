/**
 * A minimal typed event emitter that runs the same in browsers and Node (no dependency on
 * Node's `events`). A listener that throws never breaks the client: the exception is
 * reported to `error` listeners (or the console when there are none).
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type EventMap = { [K: string]: (...args: any[]) => void };

export class Emitter<E extends EventMap> {
  private listeners: { [K in keyof E]?: Set<E[K]> } = {};

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof E>(event: K, fn: E[K]): () => void {
    let set = this.listeners[event];
    if (!set) {
      set = new Set();
      this.listeners[event] = set;
    }
    set.add(fn);
    return () => this.off(event, fn);
  }

  /** Adds a listener called at most once. */
  once<K extends keyof E>(event: K, fn: E[K]): () => void {
    const wrapped = ((...args: Parameters<E[K]>) => {
      off();
      fn(...args);
    }) as E[K];
    const off = this.on(event, wrapped);
    return off;
  }

  off<K extends keyof E>(event: K, fn: E[K]): void {
    this.listeners[event]?.delete(fn);
  }

  protected emit<K extends keyof E>(event: K, ...args: Parameters<E[K]>): void {
    const set = this.listeners[event];
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (e) {
        if (event !== 'error' && this.listeners['error' as K]?.size) {
          this.emit('error' as K, ...([e] as unknown as Parameters<E[K]>));
        } else {
          console.error(`tern: a '${String(event)}' listener threw`, e);
        }
      }
    }
  }
}
