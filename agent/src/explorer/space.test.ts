import { DEFAULT_PROFILE_BOUNDS, FAULT_KINDS } from "@shadowvm/shared";
import { test } from "uvu";
import * as assert from "uvu/assert";
import { minStressPoint } from "./boundary.js";
import { Rng } from "./rng.js";
import { ProfileSpace, stressOf } from "./space.js";

const space = new ProfileSpace({ bounds: DEFAULT_PROFILE_BOUNDS, faultKinds: FAULT_KINDS, durationS: 100 });

test("one dimension per knob and per fault kind; pinned knobs are dropped", () => {
  assert.is(space.size, 5 + FAULT_KINDS.length);
  const pinned = new ProfileSpace({
    bounds: { ...DEFAULT_PROFILE_BOUNDS, net_latency_ms: [0, 0], net_loss_pct: [5, 5] },
    faultKinds: ["nmi"],
    durationS: 60,
  });
  assert.is(pinned.size, 4);
  const p = pinned.fromUnit([1, 1, 1, 0.9]);
  assert.is(p.net_loss_pct, 5);
  assert.is(p.net_latency_ms, 0);
});

test("unit coordinates map to bounds; a fault is off below 0.5 and its rate spans the bounds above", () => {
  const u = [0.5, 0.25, 1, 0, 0.1, ...FAULT_KINDS.map((_, i) => (i === 0 ? 0.75 : i === 1 ? 1 : 0.3))];
  const p = space.fromUnit(u);
  assert.is(p.cpu_load, 1);
  assert.is(p.memory_load, 0.25);
  assert.is(p.io_load, 3);
  assert.is(p.net_latency_ms, 0);
  assert.is(p.net_loss_pct, 5);
  assert.equal(p.faults, [
    { kind: FAULT_KINDS[0], rate: 0.5, at_s: 10 },
    { kind: FAULT_KINDS[1], rate: 1, at_s: 10 },
  ]);
  const z = space.features(p);
  assert.equal(z.slice(0, 5), [0.5, 0.25, 1, 0, 0.1]);
  assert.equal(z.slice(5, 8), [0.5, 1, 0]);
  // Features -> profile -> features is stable.
  assert.equal(space.features(space.profileFromFeatures(z)), z);
  assert.ok(Math.abs(stressOf(z) - Math.hypot(0.5, 0.25, 1, 0.1, 0.5, 1)) < 1e-12);
});

test("features clamp profiles from outside the bounds (priors from other VMs)", () => {
  const z = space.features({
    cpu_load: 5,
    memory_load: -1,
    io_load: 1.5,
    net_latency_ms: 0,
    net_loss_pct: 0,
    faults: [{ kind: "nmi", rate: 3, at_s: 0 }],
    duration_s: 1,
  });
  assert.is(z[0], 1);
  assert.is(z[1], 0);
  assert.is(z[5 + FAULT_KINDS.indexOf("nmi")], 1);
});

test("least-stress search finds known boundaries: threshold, conjunction, diagonal", () => {
  const rng = new Rng(1);
  const D = 6;
  const axis = minStressPoint((z) => (z[2]! > 0.7 ? 1 : 0), D, [[0.9, 0.9, 0.9, 0.9, 0.9, 0.9]], rng);
  assert.ok(axis && Math.abs(axis.stress - 0.7) < 0.01, `axis ${axis?.stress}`);
  const conj = minStressPoint((z) => (z[0]! > 0.6 && z[4]! > 0.8 ? 1 : 0), D, [[1, 1, 1, 1, 1, 1]], rng);
  assert.ok(conj && Math.abs(conj.stress - 1) < 0.02, `conjunction ${conj?.stress}`);
  // x + y > 1: least-norm point (0.5, 0.5), stress 0.707; coordinate polishing may stop a bit above.
  const diag = minStressPoint((z) => (z[1]! + z[3]! > 1 ? 1 : 0), D, [[0.2, 0.8, 0.3, 0.8, 0.1, 0.5]], rng);
  assert.ok(diag && diag.stress > 0.7 && diag.stress < 0.8, `diagonal ${diag?.stress}`);
  assert.is(
    minStressPoint(() => 0, D, [], rng),
    undefined,
  );
});

test.run();
