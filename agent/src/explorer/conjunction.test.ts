import { test } from "uvu";
import * as assert from "uvu/assert";
import { fitConjunction } from "./conjunction.js";
import { Rng } from "./rng.js";

/** Uniform points in [0,1]^dim split by a labelling rule. */
function sample(n: number, dim: number, seed: number, fires: (z: number[]) => boolean) {
  const rng = new Rng(seed);
  const positives: number[][] = [];
  const negatives: number[][] = [];
  for (let i = 0; i < n; i++) {
    const z = Array.from({ length: dim }, () => rng.random());
    (fires(z) ? positives : negatives).push(z);
  }
  return { positives, negatives };
}

test("one knob above a threshold: only that knob is needed, at about its threshold", () => {
  const { positives, negatives } = sample(60, 8, 3, (z) => z[2]! > 0.8);
  const c = fitConjunction(positives, negatives)!;
  assert.equal(c.needed, [2]);
  assert.ok(c.thresholds[2]! >= 0.8 && c.thresholds[2]! < 0.9, `threshold ${c.thresholds[2]}`);
  assert.equal(c.negativesInside, 0);
  assert.equal(c.thresholds.filter((t) => t > 0).length, 1);
  assert.equal(c.established, [2]);
  assert.equal(c.alternatives, []);
  assert.equal(c.standIns, [[]]);
});

test("runs that cannot tell knob sets apart: the fit says its knob is not established", () => {
  // A full-stress positive and one negative that is low on both x0 and x1: either knob alone
  // explains the difference, so neither is established and the other fit is offered.
  const c = fitConjunction([[1, 1, 1, 1]], [[0.2, 0.3, 1, 1]])!;
  assert.equal(c.needed, [1]);
  assert.equal(c.established, []);
  assert.equal(c.alternatives, [[1, 0, 0, 0]]);
  // x2 and x3 cannot stand in: the negative is as high there as the positive.
  assert.equal(c.standIns, [[0]]);
  // A second negative, low on x0 only: x0 is the one knob that excludes both.
  const d = fitConjunction(
    [[1, 1, 1, 1]],
    [
      [0.2, 0.3, 1, 1],
      [0.1, 1, 1, 1],
    ],
  )!;
  assert.equal(d.needed, [0]);
  assert.equal(d.established, [0]);
  assert.equal(d.standIns, [[]]);
});

test("two knobs both needed: both kept and established, the irrelevant ones dropped", () => {
  const { positives, negatives } = sample(200, 6, 5, (z) => z[0]! > 0.5 && z[4]! > 0.6);
  const c = fitConjunction(positives, negatives)!;
  assert.equal(c.needed, [0, 4]);
  assert.equal(c.established, [0, 4]);
  assert.ok(
    Math.abs(c.thresholds[0]! - 0.5) < 0.08 && Math.abs(c.thresholds[4]! - 0.6) < 0.08,
    String(c.thresholds),
  );
});

test("a run without the signature inside the orthant keeps the knob that excludes it", () => {
  // The failure needs x0 >= 0.7 and x1 >= 0.7; one negative has x0 high but x1 low.
  const positives = [
    [0.9, 0.8, 0.3],
    [0.75, 0.95, 0.6],
  ];
  const negatives = [
    [0.95, 0.2, 0.9],
    [0.1, 0.9, 0.9],
  ];
  const c = fitConjunction(positives, negatives)!;
  assert.equal(c.needed, [0, 1]);
  // Each threshold sits midway between the negative that knob alone keeps out and the least positive:
  // x0 in [0.1, 0.75], x1 in [0.2, 0.8].
  assert.equal(c.thresholds, [0.425, 0.5, 0]);
});

test("thresholds are lowered together only as far as lets no run without the signature in", () => {
  // A diagonal edge (x0 + x1 >= 1.2): the least positives per knob are 0.4 and 0.5, the negatives
  // each knob alone keeps out are at 0.1, and a negative at (0.4, 0.45) sits between them.
  const positives = [
    [0.4, 0.9],
    [0.7, 0.5],
  ];
  const negatives = [
    [0.1, 0.95],
    [0.95, 0.1],
    [0.38, 0.45],
  ];
  const c = fitConjunction(positives, negatives)!;
  assert.equal(c.needed, [0, 1]);
  // Midway would be (0.25, 0.3) and admit (0.38, 0.45); the shared fraction stops at a quarter of
  // the way, where x1 reaches 0.45 (x0 is then 0.4 - 0.25 * 0.15 = 0.3625).
  assert.ok(c.thresholds[1]! > 0.45 && c.thresholds[1]! < 0.451, String(c.thresholds));
  assert.ok(Math.abs(c.thresholds[0]! - 0.3625) < 0.001, String(c.thresholds));
  assert.is(c.negativesInside, 0);
});

test("missed detections within the noise allowance do not keep an irrelevant knob", () => {
  const { positives, negatives } = sample(300, 5, 8, (z) => z[1]! > 0.7);
  // Two runs inside the region that missed the signature (about 2 % of the positives' count).
  const missed = positives.splice(0, 2);
  const c = fitConjunction(positives, [...negatives, ...missed], { noiseAllowance: 0.1 })!;
  assert.equal(c.needed, [1]);
  assert.ok(c.negativesInside <= 2);
});

test("never above the least-stress positive, and undefined without positives", () => {
  const { positives, negatives } = sample(80, 6, 11, (z) => z[0]! * z[3]! > 0.4);
  const c = fitConjunction(positives, negatives)!;
  const norm = (z: readonly number[]) => Math.hypot(...z);
  assert.ok(norm(c.thresholds) <= Math.min(...positives.map(norm)) + 1e-12);
  assert.equal(fitConjunction([], negatives), undefined);
});

test.run();
