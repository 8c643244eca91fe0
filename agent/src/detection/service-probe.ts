// HTTP probes of a shadow's service (through its isolated loopback port forward), their
// statistics, the latency threshold derived from a control shadow, and the latency-breach rule.
import { request } from "node:http";
import { percentile, ShadowvmError } from "@shadowvm/shared";
import type { ProbeSample, ProbeStats } from "./types.js";

export interface ProbeTarget {
  /** `http://127.0.0.1:<forwarded port>/<path>`. */
  url: string;
  /** Time between probe starts (a slow probe delays the next one; probes never overlap). */
  intervalMs: number;
  /** Deadline of one probe: connect, request, whole body. */
  timeoutMs: number;
}

export interface ProbeResult {
  ok: boolean;
  latencyMs: number;
  status?: number;
  timedOut: boolean;
  error?: string;
}

/**
 * One GET on a fresh connection (no keep-alive: each probe also measures the guest accepting a
 * connection). ok = status 2xx/3xx with the whole body read within the deadline.
 */
export function probeOnce(url: string, timeoutMs: number, signal?: AbortSignal): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let settled = false;
    const done = (r: Omit<ProbeResult, "latencyMs">, latencyMs = performance.now() - t0) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      req.destroy();
      resolve({ ...r, latencyMs });
    };
    const req = request(url, { method: "GET", agent: false, headers: { connection: "close" } }, (res) => {
      res.on("data", () => undefined);
      res.on("error", (err) => done({ ok: false, timedOut: false, error: err.message }));
      res.on("end", () => {
        const status = res.statusCode ?? 0;
        done({ ok: status >= 200 && status < 400, status, timedOut: false });
      });
    });
    const timer = setTimeout(
      () => done({ ok: false, timedOut: true, error: `no answer within ${timeoutMs} ms` }, timeoutMs),
      timeoutMs,
    );
    const onAbort = () => done({ ok: false, timedOut: false, error: "aborted" });
    signal?.addEventListener("abort", onAbort);
    req.on("error", (err) => done({ ok: false, timedOut: false, error: err.message }));
    req.end();
  });
}

export interface ThresholdOptions {
  /** Percentile of the control's latencies the threshold starts from. Default 0.99. */
  percentile?: number;
  /** Multiplier on that percentile. Default 3. */
  factor?: number;
  /** Lower bound, so a very fast control does not turn jitter into breaches. Default 50 ms. */
  minMs?: number;
  /** Fewer successful control probes than this is no baseline: throws. Default 5. */
  minSamples?: number;
}

/**
 * The latency threshold of a stressed shadow from its control shadow's successful probe latencies:
 * max(minMs, percentile(latencies, p) x factor). Throws (code "no_baseline") with too few samples.
 */
export function latencyThresholdFromControl(
  latenciesMs: readonly number[],
  options: ThresholdOptions = {},
): number {
  const minSamples = options.minSamples ?? 5;
  const valid = latenciesMs.filter((v) => Number.isFinite(v) && v >= 0);
  if (valid.length < minSamples) {
    throw new ShadowvmError(
      "detection",
      "no_baseline",
      `the control shadow has ${valid.length} successful probe latencies; at least ${minSamples} are needed for a latency threshold`,
    );
  }
  const p = percentile(valid, options.percentile ?? 0.99)!;
  return Math.max(options.minMs ?? 50, p * (options.factor ?? 3));
}

/** Successful probe latencies kept for statistics (the newest). */
export const MAX_KEPT_SAMPLES = 10_000;

export function probeStats(samples: readonly ProbeSample[], sent = samples.length): ProbeStats {
  const ok = samples.filter((s) => s.ok);
  const latenciesMs = ok.map((s) => Math.round(s.latencyMs * 10) / 10).slice(-MAX_KEPT_SAMPLES);
  return {
    sent,
    ok: ok.length,
    failed: samples.length - ok.length,
    timedOut: samples.filter((s) => s.timedOut).length,
    latenciesMs,
    p50Ms: percentile(latenciesMs, 0.5),
    p95Ms: percentile(latenciesMs, 0.95),
    p99Ms: percentile(latenciesMs, 0.99),
    maxMs: latenciesMs.length ? Math.max(...latenciesMs) : null,
  };
}

/**
 * The latency-breach rule: over the last `window` successful probes taken while the guest ran, the
 * median latency is above the threshold. Failed probes (timeouts, refused connections, HTTP errors)
 * are not latencies: a service that stops answering is the heartbeat's `service unresponsive`, not
 * a bottleneck. A breach is one episode until the median falls back to the threshold or below.
 */
export class LatencyMonitor {
  private readonly window: number;
  private readonly recent: ProbeSample[] = [];
  private active = false;
  thresholdMs: number | undefined;

  constructor(thresholdMs: number | undefined, window = 5) {
    this.thresholdMs = thresholdMs;
    this.window = Math.max(1, Math.floor(window));
  }

  /** Adds a sample; returns the window's samples when this sample starts a breach episode. */
  add(sample: ProbeSample): ProbeSample[] | null {
    if (!sample.guestRunning || !sample.ok) return null;
    this.recent.push(sample);
    if (this.recent.length > this.window) this.recent.shift();
    if (this.thresholdMs === undefined || this.recent.length < this.window) return null;
    const median = percentile(
      this.recent.map((s) => s.latencyMs),
      0.5,
    )!;
    if (median > this.thresholdMs) {
      if (this.active) return null;
      this.active = true;
      return [...this.recent];
    }
    this.active = false;
    return null;
  }
}

export function describeSample(s: ProbeSample): string {
  const what = s.ok
    ? `HTTP ${s.status}`
    : s.timedOut
      ? "timeout"
      : s.status !== undefined
        ? `HTTP ${s.status}`
        : `error: ${s.error ?? "?"}`;
  return `probe at +${Math.round(s.offsetMs)} ms: ${what} in ${Math.round(s.latencyMs)} ms${s.guestRunning ? "" : " (guest not running)"}`;
}
