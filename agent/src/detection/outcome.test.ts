import { test } from "uvu";
import * as assert from "uvu/assert";
import { assessControl, decideOutcome, outcomeToProto, rankDetected } from "./outcome.js";
import type { DetectedFailure, ObservationResult } from "./types.js";

const failure = (title: string, group: number, offsetMs: number, line?: number): DetectedFailure => ({
  title,
  class: "panic",
  frame: null,
  fingerprint: title,
  corrupted: false,
  evidence: [],
  offsetMs,
  lastOffsetMs: offsetMs,
  count: 1,
  source: line === undefined ? "qemu_event" : "console",
  kind: "x",
  group,
  ...(line !== undefined ? { line } : {}),
});

test("ranking: group, then console line / time, then title", () => {
  const ranked = rankDetected([
    failure("probe", 5, 1),
    failure("signal", 3, 0, 1),
    failure("qemu late", 2, 900),
    failure("qemu early", 2, 100),
    failure("panic", 1, 50, 40),
    failure("oops b", 0, 60, 30),
    failure("oops a", 0, 70, 10),
  ]);
  assert.equal(
    ranked.map((f) => f.title),
    ["oops a", "oops b", "panic", "qemu early", "qemu late", "signal", "probe"],
  );
});

test("outcome rules", () => {
  const f = failure("x", 0, 1000);
  assert.is(decideOutcome({ failures: [] }).outcome, "ok");
  assert.is(decideOutcome({ failures: [f] }).outcome, "failed");
  assert.is(
    decideOutcome({ failures: [], interruption: { reason: "QEMU died", offsetMs: 5 } }).outcome,
    "inconclusive",
  );
  assert.is(
    decideOutcome({ failures: [f], interruption: { reason: "QEMU died", offsetMs: 500 } }).outcome,
    "failed",
  );
  assert.is(
    decideOutcome({ failures: [f], interruption: { reason: "QEMU died", offsetMs: 500 }, slackMs: 0 })
      .outcome,
    "inconclusive",
    "a failure after the interruption does not count",
  );
  const r = decideOutcome({ failures: [f], control: { healthy: false, reason: "control panicked" } });
  assert.is(r.outcome, "inconclusive");
  assert.match(r.notes[0]!, /control shadow was unhealthy \(control panicked\)/);
  assert.is(outcomeToProto("failed"), 2);
});

test("control verdict", () => {
  const base: ObservationResult = {
    outcome: "ok",
    failures: [],
    notes: [],
    startedAtMs: 0,
    finishedAtMs: 1,
    probes: {
      sent: 10,
      ok: 10,
      failed: 0,
      timedOut: 0,
      latenciesMs: [10, 11, 12, 13, 14, 15, 16, 17, 18, 40],
      p50Ms: 14,
      p95Ms: 40,
      p99Ms: 40,
      maxMs: 40,
    },
    console: { bytes: 0, lines: 0, droppedFailures: 0 },
  };
  assert.equal(assessControl(base), { healthy: true, latencyThresholdMs: 120 });
  const flaky = assessControl({ ...base, probes: { ...base.probes, ok: 8, failed: 2 } });
  assert.not.ok(flaky.healthy);
  assert.match(flaky.reason!, /only 8 of 10/);
  const failed = assessControl({ ...base, outcome: "failed", failures: [failure("kernel panic: x", 0, 1)] });
  assert.equal(failed.healthy, false);
  assert.match(failed.reason!, /control run failed: kernel panic: x/);
  const noProbes = assessControl({ ...base, probes: { ...base.probes, sent: 0, ok: 0, latenciesMs: [] } });
  assert.equal(noProbes, { healthy: true });
});

test.run();
