// Ranking of a run's failures, the run outcome, the control shadow's verdict, and the wire form.
import { shadowvm } from "@shadowvm/shared";
import { latencyThresholdFromControl, type ThresholdOptions } from "./service-probe.js";
import type {
  ControlVerdict,
  DetectedFailure,
  FailureSource,
  ObservationResult,
  RunOutcome,
} from "./types.js";

/**
 * Most important first: by group (kernel reports, their panics, QEMU guest events, operational
 * console signals, heartbeat, probe latency), then console failures by line and the others by
 * time, then by title so the order is total.
 */
export function rankDetected(failures: readonly DetectedFailure[]): DetectedFailure[] {
  return [...failures].sort(
    (a, b) =>
      a.group - b.group ||
      (a.line !== undefined && b.line !== undefined ? a.line - b.line : 0) ||
      a.offsetMs - b.offsetMs ||
      (a.title < b.title ? -1 : a.title > b.title ? 1 : 0),
  );
}

export interface OutcomeInput {
  failures: readonly DetectedFailure[];
  /** The shadow stopped for a reason that is not the guest's failure. */
  interruption?: { reason: string; offsetMs: number };
  control?: ControlVerdict;
  /**
   * Failures up to this long after the interruption still count as before it (console lines are
   * timed when read, a poll interval after QEMU wrote them). Default 1000 ms.
   */
  slackMs?: number;
}

/**
 * The outcome of a shadow run:
 * - inconclusive when the control shadow (same capture, no stress) was unhealthy: nothing this
 *   run shows can be blamed on its profile;
 * - inconclusive when the shadow was interrupted (QEMU died, was shut down or reset from the host,
 *   the QMP connection vanished without a process to watch) before any guest failure was seen;
 * - failed when at least one failure was seen (before any interruption);
 * - ok otherwise: the run was observed to its end and nothing failed.
 */
export function decideOutcome(input: OutcomeInput): { outcome: RunOutcome; notes: string[] } {
  const notes: string[] = [];
  if (input.control && !input.control.healthy) {
    notes.push(
      `inconclusive: the control shadow was unhealthy (${input.control.reason ?? "no reason given"})`,
    );
    return { outcome: "inconclusive", notes };
  }
  const cut = input.interruption;
  const slack = input.slackMs ?? 1000;
  const before = cut ? input.failures.filter((f) => f.offsetMs <= cut.offsetMs + slack) : input.failures;
  if (cut && before.length === 0) {
    notes.push(`inconclusive: ${cut.reason} at +${Math.round(cut.offsetMs)} ms, before any guest failure`);
    return { outcome: "inconclusive", notes };
  }
  if (before.length > 0) return { outcome: "failed", notes };
  return { outcome: "ok", notes };
}

export interface ControlOptions extends ThresholdOptions {
  /** Share of the control's probes that must succeed. Default 0.9. */
  minProbeSuccess?: number;
}

/**
 * Judges a control shadow's run: healthy when its outcome is ok and (if it was probed) at least
 * `minProbeSuccess` of its probes succeeded; the latency threshold for the stressed shadows comes
 * from its successful probe latencies when there are enough of them.
 */
export function assessControl(result: ObservationResult, options: ControlOptions = {}): ControlVerdict {
  const probes = result.probes;
  let threshold: number | undefined;
  try {
    threshold = latencyThresholdFromControl(probes.latenciesMs, options);
  } catch {
    threshold = undefined;
  }
  const verdict = (healthy: boolean, reason?: string): ControlVerdict => ({
    healthy,
    ...(reason ? { reason } : {}),
    ...(threshold !== undefined ? { latencyThresholdMs: threshold } : {}),
  });
  if (result.outcome !== "ok") {
    const top = result.failures[0];
    return verdict(
      false,
      `control run ${result.outcome}${top ? `: ${top.title}` : ""}${result.notes[0] ? ` (${result.notes[0]})` : ""}`,
    );
  }
  if (probes.sent > 0) {
    const ratio = probes.ok / probes.sent;
    if (ratio < (options.minProbeSuccess ?? 0.9)) {
      return verdict(false, `only ${probes.ok} of ${probes.sent} control probes succeeded`);
    }
  }
  return verdict(true);
}

const SOURCES: Record<FailureSource, shadowvm.v1.FailureSource> = {
  console: shadowvm.v1.FailureSource.FAILURE_SOURCE_CONSOLE,
  qemu_event: shadowvm.v1.FailureSource.FAILURE_SOURCE_QEMU_EVENT,
  probe: shadowvm.v1.FailureSource.FAILURE_SOURCE_PROBE,
  heartbeat: shadowvm.v1.FailureSource.FAILURE_SOURCE_HEARTBEAT,
};

/**
 * The wire form (shadowvm.v1.Failure). `shadowRunId` only when sent on its own; `primary` for the
 * run's first-ranked failure (the one it counts for).
 */
export function failureToProto(
  f: DetectedFailure,
  shadowRunId?: string,
  primary = false,
): shadowvm.v1.Failure.$Properties {
  return {
    title: f.title,
    class: f.class,
    frame: f.frame ?? "",
    fingerprint: f.fingerprint,
    corrupted: f.corrupted,
    evidence: f.evidence,
    offset_ms: Math.max(0, Math.round(f.offsetMs)),
    source: SOURCES[f.source],
    shadow_run_id: shadowRunId ?? "",
    precursors: f.precursors ?? [],
    primary,
  };
}

export function outcomeToProto(outcome: RunOutcome): shadowvm.v1.Outcome {
  switch (outcome) {
    case "ok":
      return shadowvm.v1.Outcome.OUTCOME_OK;
    case "failed":
      return shadowvm.v1.Outcome.OUTCOME_FAILED;
    case "inconclusive":
      return shadowvm.v1.Outcome.OUTCOME_INCONCLUSIVE;
  }
}
