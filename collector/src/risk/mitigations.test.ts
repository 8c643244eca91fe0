import { test } from "uvu";
import * as assert from "uvu/assert";
import { type MitigationContext, mitigationsFor } from "./mitigations.js";

/** The demo's leaking VM when its alert fires: 256 MiB, 42 % in use, +460 points/h, boundary 0.66. */
const leaking: MitigationContext = {
  vm_name: "demo-production",
  failure_class: "oom",
  title: "OOM kill of svm-leak",
  dimension: "memory_load",
  level: 0.42,
  slope_per_h: 4.6,
  boundary: 0.66,
  time_to_failure_h: 0.05,
  probability: 1,
  failing_runs: 2,
  runs: 6,
  vcpus: 1,
  memory_mb: 256,
  forecast: 5.02,
  horizon_h: 1,
};

/** A flat VM at `level` with probability `probability` of crossing within the horizon. */
const flat = (level: number, probability: number): MitigationContext => ({
  ...leaking,
  level,
  slope_per_h: 0,
  time_to_failure_h: null,
  probability,
  forecast: level,
});

test("a fast leak: the leak first, naming the process the OOM killer chose; the raise says how long it lasts", () => {
  const steps = mitigationsFor(leaking);
  assert.is(steps.length, 2);
  assert.match(
    steps[0]!.action,
    /^find and fix the leak, starting with svm-leak: restarting it frees its memory/,
  );
  assert.match(steps[0]!.because, /grows ~1178 MiB\/h, and the shadows' OOM killer ended svm-leak/);
  // forecast / boundary * 1.2 = 9.1x, rounded up to 256 MiB: 2560 MiB, which lasts
  // (0.66 * 2560 - 0.42 * 256) / 1178 = 1.3 h at this growth.
  assert.match(steps[1]!.action, /^raise demo-production's memory from 256 MiB to at least 2560 MiB$/);
  assert.match(steps[1]!.because, /at this growth 2560 MiB lasts ~1\.3 h$/);
});

test("the victim's whole name, from a memory cgroup's OOM kill of a comm with a space", () => {
  const steps = mitigationsFor({ ...leaking, title: "OOM kill of Web Content (memory cgroup)" });
  assert.match(steps[0]!.action, /^find and fix the leak, starting with Web Content: restarting it/);
});

test("a slow leak that a modest raise outruns: the raise first, then the leak", () => {
  const steps = mitigationsFor({
    ...leaking,
    memory_mb: 2048,
    level: 0.6,
    slope_per_h: 0.0125,
    time_to_failure_h: 18,
    boundary: 0.825,
    forecast: 0.9,
    horizon_h: 24,
  });
  // 0.9 / 0.825 * 1.2 = 1.31x: 2816 MiB, lasting (0.825 * 2816 - 0.6 * 2048) / 25.6 = 42.7 h.
  assert.match(steps[0]!.action, /^raise demo-production's memory from 2048 MiB to at least 2816 MiB$/);
  assert.match(steps[0]!.because, /at this growth 2816 MiB lasts ~42\.7 h$/);
  assert.match(steps[1]!.action, /^find and fix the leak, starting with svm-leak/);
});

test("memory growth in another failure class: the leak step names no process", () => {
  const steps = mitigationsFor({
    ...leaking,
    failure_class: "hang",
    title: "INFO: task hung in io_schedule",
  });
  assert.is(steps[0]!.action, "find and fix the leak (the growth does not level off)");
  assert.match(steps[1]!.action, /^raise /);
});

test("a flat VM below the boundary gets no change, and no leak", () => {
  const steps = mitigationsFor(flat(0.3, 0));
  assert.is(steps.length, 1);
  assert.match(steps[0]!.action, /^no change needed now: demo-production's memory_load is at 30\.0 %/);
  assert.not.match(steps[0]!.because, /leak/);
});

test("a slow rise further ahead than the telemetry can tell: no change, and why", () => {
  // The demo's healthy VM four minutes after boot (risk-model.test.ts has the rule itself).
  const steps = mitigationsFor({
    ...leaking,
    vm_name: "demo-healthy",
    level: 0.2,
    slope_per_h: 0.05,
    time_to_failure_h: null,
    probability: 0,
    forecast: 0.25,
    reach: {
      time_to_failure_h: null,
      basis: "beyond_telemetry",
      line_h: 9.4,
      span_h: 0.075,
      slope_error: 0.0004,
    },
  });
  assert.is(steps.length, 1);
  assert.is(
    steps[0]!.action,
    "no change needed now: demo-healthy's memory_load is at 20.0 % and rising, but on this line it reaches the boundary only in ~9.4 h, further ahead than 5 min of telemetry can tell",
  );
  assert.not.match(steps[0]!.because, /leak/);
});

test("a flat VM just under the boundary, likely to cross on its noise: the steps, not 'no change'", () => {
  const steps = mitigationsFor(flat(0.64, 0.6));
  assert.is(steps.length, 1);
  assert.match(steps[0]!.action, /^raise demo-production's memory from 256 MiB to at least 512 MiB$/);
  assert.match(steps[0]!.because, /reaches it not on the current trend/);
});

test("a VM already over the boundary with no trend: the raise alone", () => {
  const steps = mitigationsFor({
    ...leaking,
    level: 0.8,
    slope_per_h: null,
    time_to_failure_h: 0,
    forecast: null,
  });
  assert.is(steps.length, 1);
  assert.match(steps[0]!.action, /to at least 512 MiB$/);
});

test.run();
