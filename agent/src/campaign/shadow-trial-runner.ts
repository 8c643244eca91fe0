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
//
// An unhealthy control says the capture itself may be bad: a live capture of a vCPU caught at the
// wrong instant (seen under TCG) restores into a guest that crashes unstressed, and every retry on
// it would crash the same way. So, when the campaign can take one, the retry runs on a fresh
// capture (a few times per campaign at most), and its control validates that capture in turn. A
// control that fails the same way on the fresh capture says the VM itself fails unstressed: then
// the batch ends with an error that says so, without pausing production for yet another capture.
import { describeError, type StressProfile } from "@shadowvm/shared";
import type { DetectedFailure } from "../detection/index.js";
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
  /**
   * Takes and restores a fresh capture of the production VM, for when a control shadow found the
   * current one unusable; the runs after it use the new one. Without it the capture is kept.
   */
  recapture?: (reason: string) => Promise<RestoredCapture>;
  /** Fresh captures at most per campaign (default 2). */
  maxRecaptures?: number;
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
  /** Fresh captures taken because a control found the capture unusable. */
  recaptures = 0;
  private readonly options: ShadowTrialRunnerOptions;
  private capture: RestoredCapture;
  private controlDone = false;
  /** The failure of the control that made the campaign take its last fresh capture. */
  private rejectedFor: DetectedFailure | undefined;

  constructor(options: ShadowTrialRunnerOptions) {
    this.options = options;
    this.capture = options.capture;
  }

  async run(profiles: StressProfile[]): Promise<Outcome[]> {
    const final: ShadowRunResult[] = [];
    let pending = profiles.map((_, i) => i);
    let retried = false;
    let why: string | undefined;
    for (;;) {
      const runs = await this.batch(pending.map((i) => profiles[i]!));
      pending.forEach((i, j) => {
        final[i] = runs[j]!;
      });
      pending = pending.filter((i) => final[i]!.outcome === "inconclusive");
      if (pending.length === 0) break;
      const control = this.lastUnhealthyControl();
      const again = control?.failure;
      if (again && this.rejectedFor?.fingerprint === again.fingerprint) {
        // The same failure unstressed on a fresh capture: it is the VM, not its capture, and
        // another capture would only pause production again for the same answer.
        why = `the control shadow failed the same way on a fresh capture (${again.title}): the VM fails without stress, so no stressed outcome can be told apart from that`;
        break;
      }
      // A fresh capture is a new chance of its own; the one retry is kept for the new capture.
      if (control && (await this.recaptureOnce(control.reason))) {
        this.rejectedFor = control.failure;
        continue;
      }
      if (retried) break;
      retried = true;
    }
    const outcomes: Outcome[] = [];
    for (const run of final) {
      if (run.outcome === "inconclusive") {
        throw new OracleError(
          why ??
            `shadow ${run.shadow} was inconclusive twice (${run.stopReason ?? run.notes.join("; ")}); its outcome says nothing about the profile`,
          outcomes,
        );
      }
      outcomes.push({ failed: run.outcome === "failed", signatures: primarySignature(run) });
    }
    return outcomes;
  }

  /** Why the last batch's control was unhealthy, and its first failure; undefined when healthy or absent. */
  private lastUnhealthyControl(): { reason: string; failure: DetectedFailure | undefined } | undefined {
    const last = this.batches.at(-1);
    if (!last?.control || last.control.healthy) return undefined;
    return {
      reason: last.control.reason ?? "the control shadow was unhealthy",
      failure: last.runs.find((r) => r.control)?.failures[0],
    };
  }

  /** A fresh capture when the campaign can take one and has some left; false otherwise. */
  private async recaptureOnce(reason: string): Promise<boolean> {
    const { recapture, maxRecaptures = 2 } = this.options;
    if (!recapture || this.recaptures >= maxRecaptures) return false;
    if (this.options.signal?.aborted) throw new OracleError("the campaign was stopped", []);
    this.recaptures++;
    try {
      this.capture = await recapture(reason);
    } catch (err) {
      throw new OracleError(`a fresh capture, taken because ${reason}, failed: ${describeError(err)}`, []);
    }
    return true;
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
      result = await lab.runCampaign(this.capture, {
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
