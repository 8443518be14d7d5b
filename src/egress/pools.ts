/**
 * Upstream keep-alive connections, pooled per caller: a connection that carried one agent's requests never
 * carries another's, so a response left on it (slow, or provoked by a malformed request) cannot reach
 * someone else. Callers are a session (its socket) or an agent (its key).
 */
import type { Caller } from './authenticate.js';

export class PerCallerPools<A extends { destroy(): void }> {
  private readonly pools = new Map<string, A>();
  /** The key used last: already the most recent, so its pool need not move (the usual case, one agent). */
  private newest: string | undefined;

  constructor(
    private readonly create: () => A,
    /** Pools kept at once; the least recently used one is dropped (its idle sockets time out on their own). */
    private readonly max = 256,
  ) {}

  for(caller: Caller): A {
    const key = caller.session !== undefined ? `session:${caller.session}` : `agent:${caller.principal.agent ?? ''}`;
    let pool = this.pools.get(key);
    if (pool) {
      if (key !== this.newest) {
        this.pools.delete(key);
        this.pools.set(key, pool);
        this.newest = key;
      }
      return pool;
    }
    pool = this.create();
    this.pools.set(key, pool);
    this.newest = key;
    if (this.pools.size > this.max) {
      const oldest = this.pools.keys().next().value as string;
      this.pools.delete(oldest);
    }
    return pool;
  }

  destroy(): void {
    for (const pool of this.pools.values()) pool.destroy();
    this.pools.clear();
    this.newest = undefined;
  }
}
