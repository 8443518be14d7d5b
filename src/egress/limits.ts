/**
 * Per-agent rate limits: a token bucket per agent and kind (connections, requests). A bucket holds up to
 * `rate` tokens (one second's worth of burst) and refills continuously. Buckets idle for a minute are dropped,
 * so memory stays bounded by the number of agents active in the last minute.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private lastSweep = 0;

  constructor(private readonly ratePerSecond: number) {}

  /** Takes one token for `key`; false when the key is over its rate. */
  take(key: string, now: number = performance.now()): boolean {
    this.sweep(now);
    const bucket = this.buckets.get(key);
    if (!bucket) {
      this.buckets.set(key, { tokens: this.ratePerSecond - 1, at: now });
      return true;
    }
    bucket.tokens = Math.min(this.ratePerSecond, bucket.tokens + ((now - bucket.at) / 1000) * this.ratePerSecond);
    bucket.at = now;
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  private sweep(now: number): void {
    if (now - this.lastSweep < 60_000) return;
    this.lastSweep = now;
    for (const [key, bucket] of this.buckets) if (now - bucket.at > 60_000) this.buckets.delete(key);
  }
}
