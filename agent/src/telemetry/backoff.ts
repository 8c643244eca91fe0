// Reconnect delays: exponential with "equal jitter" (half fixed, half random), so a fleet of
// agents that lost the collector at the same moment does not come back at the same moment.

export interface BackoffOptions {
  minMs: number;
  maxMs: number;
  random?: () => number;
}

export class Backoff {
  private attempt = 0;
  constructor(private readonly options: BackoffOptions) {}

  /** The next delay; grows until reset(). `atLeastMs` honours a peer's retry_after_ms. */
  next(atLeastMs = 0): number {
    const { minMs, maxMs } = this.options;
    const ceiling = Math.min(maxMs, minMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    const delay = ceiling / 2 + (this.options.random ?? Math.random)() * (ceiling / 2);
    return Math.max(Math.round(delay), Math.min(atLeastMs, maxMs));
  }

  reset(): void {
    this.attempt = 0;
  }

  get attempts(): number {
    return this.attempt;
  }
}
