// The campaign's parts that need no QEMU: what is reported for each run, how the trial runner
// turns lab batches into explorer outcomes (retries, control), and what the host's capabilities
// leave of the search space. The real path runs in test/src/explore-real-shadows.test.ts.
import { EventEmitter } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_PROFILE_BOUNDS, failureFingerprint, type StressProfile, shadowvm } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import type { DetectedFailure } from "../detection/index.js";
import type { SignatureBoundary } from "../explorer/boundary.js";
import { OracleError } from "../explorer/runner.js";
import type { RestoredCapture } from "../shadow/restored-capture.js";
import type { CampaignOptions, CampaignResult, ShadowLab, ShadowRunResult } from "../shadow/shadow-lab.js";
import { SignatureDb } from "../signatures/index.js";
import { describeNeeds } from "./campaign-scheduler.js";
import { type RecordSink, RunReporter, shadowRunMessage } from "./run-reporter.js";
import { boundsFor, usableFaults } from "./shadow-campaign.js";
import { primarySignature, ShadowTrialRunner } from "./shadow-trial-runner.js";

const profile = (memory: number): StressProfile => ({
  cpu_load: 0.5,
  memory_load: memory,
  io_load: 0,
  net_latency_ms: 0,
  net_loss_pct: 0,
  faults: [],
  duration_s: 60,
});

function failure(title: string, cls: DetectedFailure["class"]): DetectedFailure {
  return {
    title,
    class: cls,
    frame: null,
    fingerprint: failureFingerprint(title, cls as Parameters<typeof failureFingerprint>[1]),
    corrupted: false,
    evidence: [title],
    offsetMs: 1234,
    lastOffsetMs: 1234,
    count: 1,
    source: "console",
    group: 0,
  } as DetectedFailure;
}

const OOM = failure("Out of memory: Killed process svm-leak", "oom");
const PANIC = failure("QEMU: guest panicked", "panic");

function run(
  shadow: string,
  outcome: ShadowRunResult["outcome"],
  failures: DetectedFailure[] = [],
): ShadowRunResult {
  return { shadow, control: false, profile: profile(0.5), outcome, failures, notes: [] };
}

class MemorySink implements RecordSink {
  readonly records: Record<string, unknown>[] = [];
  async append(body: Parameters<RecordSink["append"]>[0]) {
    this.records.push(body as Record<string, unknown>);
    return { seq: this.records.length } as unknown as Awaited<ReturnType<RecordSink["append"]>>;
  }
}

/** A lab that answers each runCampaign with the next scripted batch (and emits "started"). */
class ScriptedLab extends EventEmitter {
  readonly calls: CampaignOptions[] = [];
  /** The capture each batch ran on. */
  readonly captures: RestoredCapture[] = [];
  constructor(
    private readonly script: ((
      o: CampaignOptions,
    ) => Partial<CampaignResult> & { runs: ShadowRunResult[] })[],
  ) {
    super();
  }
  async runCampaign(capture: RestoredCapture, o: CampaignOptions): Promise<CampaignResult> {
    this.calls.push(o);
    this.captures.push(capture);
    const next = this.script.shift();
    if (!next) throw new Error("no more scripted batches");
    const r = next(o);
    for (const x of r.runs)
      this.emit("event", { type: "started", shadow: x.shadow, control: x.control, profile: x.profile });
    return {
      campaign: `b${this.calls.length}`,
      capture: "cap1",
      vm: "prod",
      network: "user",
      startedAt: new Date(1000).toISOString(),
      finishedAt: new Date(2000).toISOString(),
      ...r,
    };
  }
}

const dirs: string[] = [];
test.after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const ctx = { campaignId: "c-1", captureId: "cap1", vmName: "prod", vmUuid: "u-1", strategy: "adaptive" };
const capture = { captureId: "cap1", vm: "prod", inventory: { uuid: "u-1" } } as unknown as RestoredCapture;

test("a finished run is reported with its outcome, failures and the signature updates it caused", async () => {
  const dir = mkdtempSync(join(tmpdir(), "svm-campaign-"));
  dirs.push(dir);
  const db = await SignatureDb.open(join(dir, "sig"));
  const sink = new MemorySink();
  const reporter = new RunReporter(ctx, sink, db);
  await reporter.started({ shadow: "b1-1", control: false, profile: profile(0.9) }, 1000);
  await reporter.finished(run("b1-1", "failed", [OOM, PANIC]), 5000);
  const runs = sink.records
    .filter((r) => "shadow_run" in r)
    .map((r) => r["shadow_run"] as shadowvm.v1.IShadowRun);
  assert.is(runs.length, 2);
  assert.is(runs[0]!.id, "c-1/b1-1");
  assert.is(runs[0]!.outcome, undefined, "the start message has no outcome yet");
  assert.is(runs[1]!.outcome, shadowvm.v1.Outcome.OUTCOME_FAILED);
  assert.is(runs[1]!.started_at_ms, 1000);
  assert.is(runs[1]!.finished_at_ms, 5000);
  assert.equal(
    runs[1]!.failures!.map((f) => f.fingerprint),
    [OOM.fingerprint, PANIC.fingerprint],
  );
  assert.equal(
    runs[1]!.failures!.map((f) => f.primary),
    [true, false],
    "the first-ranked failure is the run's primary one",
  );
  const updates = sink.records.filter((r) => "signature_update" in r);
  assert.is(updates.length, 2, "one update per new signature");
  assert.equal(await db.pendingUpdates(), [], "forwarded updates are acknowledged in the database");
  await db.close();
});

test("a stressed run that passed counts the precursors its console showed as runs without their failure", async () => {
  const dir = mkdtempSync(join(tmpdir(), "svm-campaign-"));
  dirs.push(dir);
  const db = await SignatureDb.open(join(dir, "sig"));
  const reporter = new RunReporter(ctx, new MemorySink(), db);
  const warning = "svm-leak[NUM]: allocation of NUM failed, retrying";
  await reporter.finished(run("b1-1", "failed", [{ ...OOM, precursors: [warning] }]), 5000);
  const shown = [warning, "some other line"];
  await reporter.finished({ ...run("b1-2", "ok"), consolePatterns: shown }, 6000);
  await reporter.finished({ ...run("b1-3", "inconclusive"), consolePatterns: shown }, 7000);
  await reporter.finished({ ...run("b1-c", "ok"), control: true, consolePatterns: shown }, 8000);
  assert.equal(
    (await db.precursorsFor(["u-1"])).map((m) => [m.pattern, m.count, m.without]),
    [[warning, 1, 1]],
    "only the passed stressed run counts (not the inconclusive one, not the control)",
  );
  await db.close();
});

test("after a fresh capture is shipped, the runs name it", async () => {
  const sink = new MemorySink();
  const reporter = new RunReporter(ctx, sink, undefined);
  const record = {
    id: "cap2",
    vm: "prod",
    vm_uuid: "u-1",
    started_at: new Date(3000).toISOString(),
    finished_at: new Date(4000).toISOString(),
    pause_ms: 9.6,
    memory_bytes: 256 * 2 ** 20,
    disk_bytes: 0,
    stored_bytes: 0,
    new_bytes: 0,
    disks: [],
    parts: [],
  };
  await reporter.finished(run("b1-1", "inconclusive"), 2000);
  await reporter.captured(record);
  await reporter.finished(run("b2-1", "ok"), 5000);
  const captureIds = sink.records
    .filter((r) => "shadow_run" in r)
    .map((r) => (r["shadow_run"] as shadowvm.v1.IShadowRun).capture_id);
  assert.equal(captureIds, ["cap1", "cap2"]);
  assert.is(
    (sink.records[1]!["capture_record"] as shadowvm.v1.ICaptureRecord).id,
    "cap2",
    "the capture is shipped",
  );
  assert.is(ctx.captureId, "cap1", "the caller's context is not changed");
});

test("a control run is labelled as such and adds nothing to the signature database", async () => {
  const msg = shadowRunMessage(ctx, { shadow: "b1-c", control: true, profile: profile(0), notes: [] }, {});
  assert.is(msg.strategy, "control");
  assert.is(msg.control, true);
});

test("without a sink nothing is shipped, and the reporter says so", async () => {
  const reporter = new RunReporter(ctx, undefined, undefined);
  assert.is(reporter.shipping, false);
  await reporter.finished(run("b1-1", "ok"), 10);
});

test("the explorer sees the primary failure of a failed run, nothing of a passed one", () => {
  assert.equal(primarySignature(run("x", "failed", [OOM, PANIC])), [OOM.fingerprint]);
  assert.equal(primarySignature(run("x", "ok")), []);
});

test("an inconclusive shadow is run again; the retried outcome counts", async () => {
  const lab = new ScriptedLab([
    (o) => ({
      runs: [
        { ...run("b1-c", "ok"), control: true },
        run("b1-1", "inconclusive"),
        run("b1-2", "failed", [OOM]),
      ],
      control: { healthy: true },
      ...(o.control ? {} : {}),
    }),
    () => ({ runs: [run("b2-1", "ok")] }),
  ]);
  const sink = new MemorySink();
  const runner = new ShadowTrialRunner({
    lab: lab as unknown as ShadowLab,
    capture,
    reporter: new RunReporter(ctx, sink, undefined),
  });
  const outcomes = await runner.run([profile(0.2), profile(0.9)]);
  assert.equal(outcomes, [
    { failed: false, signatures: [] },
    { failed: true, signatures: [OOM.fingerprint] },
  ]);
  assert.is(lab.calls.length, 2);
  assert.is(lab.calls[0]!.control, true, "the first batch has the control");
  assert.is(lab.calls[1]!.control, false, "the retry does not repeat a healthy control");
  assert.equal(
    lab.calls[1]!.runs.map((r) => r.profile.memory_load),
    [0.2],
    "only the inconclusive profile is retried",
  );
  // Every run of both batches reported: started and finished.
  assert.is(sink.records.filter((r) => "shadow_run" in r).length, 2 * 4);
});

test("twice inconclusive ends the batch with an error that keeps the outcomes before it", async () => {
  const lab = new ScriptedLab([
    () => ({ runs: [run("b1-1", "failed", [OOM]), run("b1-2", "inconclusive")] }),
    () => ({ runs: [run("b2-1", "inconclusive")] }),
  ]);
  const runner = new ShadowTrialRunner({
    lab: lab as unknown as ShadowLab,
    capture,
    reporter: new RunReporter(ctx, undefined, undefined),
    control: false,
  });
  try {
    await runner.run([profile(0.9), profile(0.5)]);
    assert.unreachable("should have thrown");
  } catch (err) {
    assert.instance(err, OracleError);
    assert.equal((err as OracleError).completed, [{ failed: true, signatures: [OOM.fingerprint] }]);
    assert.match((err as Error).message, /inconclusive twice/);
  }
});

test("an unhealthy control is run again with the next batch", async () => {
  const lab = new ScriptedLab([
    () => ({
      runs: [{ ...run("b1-c", "failed", [PANIC]), control: true }, run("b1-1", "inconclusive")],
      control: { healthy: false, reason: "the control failed" },
    }),
    () => ({
      runs: [{ ...run("b2-c", "ok"), control: true }, run("b2-1", "ok")],
      control: { healthy: true },
    }),
  ]);
  const runner = new ShadowTrialRunner({
    lab: lab as unknown as ShadowLab,
    capture,
    reporter: new RunReporter(ctx, undefined, undefined),
  });
  assert.equal(await runner.run([profile(0.3)]), [{ failed: false, signatures: [] }]);
  assert.is(lab.calls[1]!.control, true);
});

/** A batch whose control crashed (by default as the restored capture does when it is unusable). */
const crashedControl =
  (id: string, crash = PANIC) =>
  () => ({
    runs: [{ ...run(`${id}-c`, "failed", [crash]), control: true }, run(`${id}-1`, "inconclusive")],
    control: { healthy: false, reason: `the control failed: ${crash.title}` },
  });

/**
 * Runs one profile on a runner that can recapture (by default successfully) until it throws;
 * returns the fresh captures asked for.
 */
async function runUntilError(
  lab: ScriptedLab,
  message: RegExp,
  o: { maxRecaptures?: number; recapture?: () => Promise<RestoredCapture> } = {},
) {
  let taken = 0;
  const { recapture = async () => capture, ...rest } = o;
  const runner = new ShadowTrialRunner({
    lab: lab as unknown as ShadowLab,
    capture,
    reporter: new RunReporter(ctx, undefined, undefined),
    ...rest,
    recapture: () => {
      taken++;
      return recapture();
    },
  });
  try {
    await runner.run([profile(0.9)]);
    assert.unreachable("should have thrown");
  } catch (err) {
    assert.instance(err, OracleError);
    assert.match((err as Error).message, message);
  }
  return taken;
}

test("a control that finds the capture unusable gets a fresh capture, and the retry runs on it", async () => {
  const lab = new ScriptedLab([
    crashedControl("b1"),
    () => ({
      runs: [{ ...run("b2-c", "ok"), control: true }, run("b2-1", "inconclusive")],
      control: { healthy: true },
    }),
    () => ({ runs: [run("b3-1", "failed", [OOM])] }),
  ]);
  const fresh = { captureId: "cap2", vm: "prod", inventory: { uuid: "u-1" } } as unknown as RestoredCapture;
  const reasons: string[] = [];
  const runner = new ShadowTrialRunner({
    lab: lab as unknown as ShadowLab,
    capture,
    reporter: new RunReporter(ctx, undefined, undefined),
    recapture: async (reason) => {
      reasons.push(reason);
      return fresh;
    },
  });
  assert.equal(await runner.run([profile(0.9)]), [{ failed: true, signatures: [OOM.fingerprint] }]);
  assert.equal(
    reasons,
    [`the control failed: ${PANIC.title}`],
    "one fresh capture, with the control's reason",
  );
  assert.is(runner.recaptures, 1);
  assert.equal(
    lab.captures.map((c) => c.captureId),
    ["cap1", "cap2", "cap2"],
    "the runs after the fresh capture use it",
  );
  assert.equal(
    lab.calls.map((c) => c.control),
    [true, true, false],
    "the fresh capture is validated by a control of its own",
  );
  // The fresh capture did not use up the profile's one ordinary retry (batch 3).
});

test("fresh captures stop at the limit; then the batch ends with an error that says why", async () => {
  const lab = new ScriptedLab([
    crashedControl("b1"),
    crashedControl("b2", failure("BUG: unable to handle page fault in native_apic_mem_write", "oops")),
    crashedControl("b3", failure("WARNING in ct_nmi_exit", "warning")),
  ]);
  const taken = await runUntilError(lab, /inconclusive twice/, { maxRecaptures: 1 });
  assert.is(taken, 1, "no more fresh captures than allowed");
  assert.is(lab.calls.length, 3, "first batch, on the fresh capture, then the ordinary retry");
});

test("a control that fails the same way on a fresh capture: the VM fails unstressed, and no third capture is taken", async () => {
  const lab = new ScriptedLab([crashedControl("b1", OOM), crashedControl("b2", OOM)]);
  const taken = await runUntilError(
    lab,
    /failed the same way on a fresh capture \(Out of memory.*the VM fails without stress/,
  );
  assert.is(taken, 1, "one fresh capture, not the two allowed");
  assert.is(lab.calls.length, 2);
});

test("a fresh capture that fails ends the batch with an error naming why it was taken", async () => {
  const taken = await runUntilError(
    new ScriptedLab([crashedControl("b1")]),
    /^a fresh capture, taken because the control failed: QEMU: guest panicked, failed: VM prod is not running$/,
    {
      recapture: async () => {
        throw new Error("VM prod is not running");
      },
    },
  );
  assert.is(taken, 1);
});

test("an inconclusive run under a healthy control is retried on the same capture", async () => {
  const lab = new ScriptedLab([
    () => ({
      runs: [{ ...run("b1-c", "ok"), control: true }, run("b1-1", "inconclusive")],
      control: { healthy: true },
    }),
    () => ({ runs: [run("b2-1", "ok")] }),
  ]);
  const runner = new ShadowTrialRunner({
    lab: lab as unknown as ShadowLab,
    capture,
    reporter: new RunReporter(ctx, undefined, undefined),
    recapture: async () => {
      throw new Error("a healthy control needs no fresh capture");
    },
  });
  assert.equal(await runner.run([profile(0.3)]), [{ failed: false, signatures: [] }]);
  assert.is(runner.recaptures, 0);
});

test("the search space shrinks to what the host can apply; faults to what it can inject", () => {
  const none = { available: false, reason: "no cgroup CPU controller" };
  const yes = { available: true };
  const b = boundsFor({
    cpu_contention: none,
    memory_pressure: yes,
    io_throttling: yes,
    net_impairment: none,
  });
  assert.equal(b.cpu_load, [DEFAULT_PROFILE_BOUNDS.cpu_load[0], 1]);
  assert.equal(b.memory_load, DEFAULT_PROFILE_BOUNDS.memory_load);
  assert.equal(b.net_latency_ms, [0, 0]);
  assert.equal(b.net_loss_pct, [0, 0]);
  const f = usableFaults({ nmi: yes, memory_error: none, disk_io_error: yes }, ["nmi", "memory_error"]);
  assert.equal(f.usable, ["nmi"]);
  assert.equal(f.unavailable, [{ kind: "memory_error", reason: "no cgroup CPU controller" }]);
  assert.equal(usableFaults({ nmi: yes }, undefined).usable, ["nmi"]);
});

test("the finished campaign's log line gives each signature's least stress and what it needs", () => {
  const b: SignatureBoundary = {
    trials_with_signature: 2,
    observed_min_stress: 1.8,
    observed_min_profile: profile(1),
    min_stress: 0.9611,
    min_stress_profile: profile(0.9611),
    needs: [
      { knob: "memory_load", at_least: 0.961146, between: [0.93, 0.99], established: true },
      { knob: "fault:nmi", at_least: 0.55, between: [0.3, 0.8], established: false },
      {
        knob: "fault:clock_jump",
        at_least: 0.9,
        between: [0.8, 1],
        established: false,
        stand_ins: ["cpu_load", "io_load"],
      },
    ],
    runs_meeting_needs_without_it: 0,
    min_stress_interval: null,
    bootstrap_support: null,
    model_min_stress: null,
  };
  assert.equal(describeNeeds(b), {
    least_stress: 0.9611,
    needs: ["memory_load>=0.961", "fault:nmi>=0.55?", "fault:clock_jump>=0.9?(or cpu_load/io_load)"],
  });
  assert.equal(describeNeeds(undefined), {});
});

test.run();
