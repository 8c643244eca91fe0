// Types of live failure detection in a shadow run (see docs/detection.md).
import type { FailureClass } from "@shadowvm/shared";

/** Where a failure was seen (the proto's FailureSource). */
export type FailureSource = "console" | "qemu_event" | "probe" | "heartbeat";

/**
 * The console parser's classes plus `performance` (service latency above the control's threshold:
 * a bottleneck, not a breakage). Fingerprints hash the class name, so it must never be renamed.
 */
export type DetectionClass = FailureClass | "performance";

/** One failure seen in one shadow run, identified by its fingerprint (one entry per fingerprint). */
export interface DetectedFailure {
  /** One-line title: the parser's for console failures, e.g. `QEMU: guest panicked` for the others. */
  title: string;
  class: DetectionClass;
  /** The guilty stack frame, or null. */
  frame: string | null;
  /** `failureFingerprint(title, class)`: the same failure has the same fingerprint on every shadow. */
  fingerprint: string;
  /** The report was cut short or interleaved, so the title is less reliable. */
  corrupted: boolean;
  /** The lines the failure was recognised from (console lines, QEMU event JSON, probe samples). */
  evidence: string[];
  /**
   * ms after the run start when it happened: for console failures when the report's first line
   * arrived in the console file, for QEMU events QEMU's own event timestamp, for probes and the
   * heartbeat the end of the probe that crossed the limit.
   */
  offsetMs: number;
  /** Offset of the latest occurrence in this run. */
  lastOffsetMs: number;
  /** Occurrences in this run (a repeated report, a failure episode that came back). */
  count: number;
  source: FailureSource;
  /**
   * What recognised it: the parser's rule id (`oom-kill`, `panic`, ...), `qemu:<EVENT>`,
   * `probe:latency`, `heartbeat:service`, `heartbeat:console`.
   */
  kind: string;
  /** 1-based console line where the report starts (console failures only). */
  line?: number;
  /**
   * Importance group, lower first: 0 kernel reports and uncorrected machine checks, 1 panics caused
   * by one of those, 2 QEMU guest events, 3 operational console signals (OOM kills, I/O errors,
   * NMIs, ...), 4 heartbeat, 5 probe latency.
   */
  group: number;
  /**
   * Early-warning console patterns that came before it (set at finish(), see precursors.ts), most
   * specific first; absent before finish() or when extraction is off.
   */
  precursors?: string[];
}

export type RunOutcome = "ok" | "failed" | "inconclusive";

/** One HTTP probe of the shadow's service. */
export interface ProbeSample {
  /** ms after the run start when the probe ended. */
  offsetMs: number;
  ok: boolean;
  /** Request start to end of the body (timeoutMs when it timed out). */
  latencyMs: number;
  status?: number;
  timedOut: boolean;
  error?: string;
  /** The guest was running (not paused, panicked or shut down) while the probe ran. */
  guestRunning: boolean;
}

export interface ProbeStats {
  sent: number;
  ok: number;
  failed: number;
  timedOut: number;
  /** Latencies of the successful probes (the newest MAX_KEPT_SAMPLES), in ms. */
  latenciesMs: number[];
  p50Ms: number | null;
  p95Ms: number | null;
  p99Ms: number | null;
  maxMs: number | null;
}

/** What the control shadow (same capture, no stress) says about the run's baseline. */
export interface ControlVerdict {
  healthy: boolean;
  /** Why the control is unhealthy. */
  reason?: string;
  /** Latency threshold derived from the control's probes (see latencyThresholdFromControl). */
  latencyThresholdMs?: number;
}

export interface ObservationResult {
  outcome: RunOutcome;
  /** Most important first (see DetectedFailure.group), one entry per fingerprint. */
  failures: DetectedFailure[];
  /** Why inconclusive, what happened to QEMU, what was skipped. */
  notes: string[];
  startedAtMs: number;
  finishedAtMs: number;
  /** The shadow stopped for a reason that is not the guest's failure (QEMU died, was shut down from the host). */
  interruption?: { reason: string; offsetMs: number };
  probes: ProbeStats;
  console: { bytes: number; lines: number; droppedFailures: number };
  /** The latency threshold used, if any. */
  latencyThresholdMs?: number;
  /**
   * The console's patterns after the start-up window (precursors.ts runPatterns), for counting
   * the precursors a run showed without their failure; absent when precursors are off or the
   * console could not be read again.
   */
  consolePatterns?: string[];
}
