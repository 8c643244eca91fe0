// The explorer's trials on real shadows: each batch of stress profiles becomes one shadow-lab
// campaign on a restored capture (the first batch with an unstressed control shadow, which
// validates the capture and calibrates the latency threshold), and each shadow's outcome goes back
// to the explorer as { failed, signatures: [the primary failure's fingerprint] }. Every run is reported (RunReporter:
// spool, signature database) as it starts and when it ends.
//
// An inconclusive shadow (it died for a reason that is not the guest's failure, or the control was
// unhealthy) says nothing about its profile, and reporting it as "no failure" would mislead the
// explorer. Such profiles are run once more; if they are inconclusive again, the batch ends with
// an error and the explorer keeps the trials that completed before it.
import type { StressProfile } from "@shadowvm/shared";
import type { TrialRunner } from "../explorer/runner.js";
import { OracleError } from "../explorer/runner.js";
import type { Outcome } from "../explorer/types.js";
import type { RestoredCapture } from "../shadow/restored-capture.js";
import type { CampaignResult, LabEvent, ShadowLab, ShadowRunResult } from "../shadow/shadow-lab.js";
import type { RunReporter } from "./run-reporter.js";

export interface ShadowTrialRunnerOptions {
  lab: ShadowLab;
  capture: RestoredCapture;
  reporter: RunReporter;
  /** Include a control shadow in the first batch (default true). */
  control?: boolean;
  signal?: AbortSignal;
  /** Called with each batch's result (progress display). */
  onBatch?: (result: CampaignResult) => void;
}

/**
 * The signature a run counts for: its most important failure (the lab ranks them). The others are
 * its consequences or echoes (a machine check's panic, QEMU's GUEST_PANICKED after a console
 * panic, the injection QEMU confirms): counting them as discoveries of their own would send the
 * explorer after failures it has already found.
 */
export function primarySignature(run: Pick<ShadowRunResult, "outcome" | "failures">): string[] {
  const first = run.outcome === "failed" ? run.failures[0] : undefined;
  return first ? [first.fingerprint] : [];
}

export class ShadowTrialRunner implements TrialRunner {
  /** Every lab batch run so far, retries included. */
  readonly batches: CampaignResult[] = [];
  private readonly options: ShadowTrialRunnerOptions;
  private controlDone = false;

  constructor(options: ShadowTrialRunnerOptions) {
    this.options = options;
  }

  async run(profiles: StressProfile[]): Promise<Outcome[]> {
    const first = await this.batch(profiles);
    const retry = profiles.filter((_, i) => first[i]!.outcome === "inconclusive");
    const second = retry.length ? await this.batch(retry) : [];
    const outcomes: Outcome[] = [];
    let r = 0;
    for (const run of first) {
      const final = run.outcome === "inconclusive" ? second[r++]! : run;
      if (final.outcome === "inconclusive") {
        throw new OracleError(
          `shadow ${final.shadow} was inconclusive twice (${final.stopReason ?? final.notes.join("; ")}); its outcome says nothing about the profile`,
          outcomes,
        );
      }
      outcomes.push({ failed: final.outcome === "failed", signatures: primarySignature(final) });
    }
    return outcomes;
  }

  /** One shadow-lab campaign; the stressed runs' results in the order of `profiles`. */
  private async batch(profiles: StressProfile[]): Promise<ShadowRunResult[]> {
    const { lab, reporter } = this.options;
    if (this.options.signal?.aborted) throw new OracleError("the campaign was stopped", []);
    const withControl = (this.options.control ?? true) && !this.controlDone;
    const reports: Promise<void>[] = [];
    const onEvent = (e: LabEvent) => {
      if (e.type === "started") reports.push(reporter.started(e, Date.now()));
    };
    lab.on("event", onEvent);
    let result: CampaignResult;
    try {
      result = await lab.runCampaign(this.options.capture, {
        runs: profiles.map((profile) => ({ profile })),
        control: withControl,
        ...(this.options.signal ? { signal: this.options.signal } : {}),
      });
    } finally {
      lab.off("event", onEvent);
      await Promise.all(reports);
    }
    this.controlDone ||= withControl;
    this.batches.push(result);
    const finishedAt = Date.parse(result.finishedAt);
    for (const run of result.runs) await reporter.finished(run, finishedAt);
    this.options.onBatch?.(result);
    if (result.control && !result.control.healthy) {
      // Without a healthy control no stressed outcome can be trusted (decideOutcome made them
      // inconclusive); the control runs again with the retry.
      this.controlDone = false;
    }
    return result.runs.filter((r) => !r.control);
  }
}
