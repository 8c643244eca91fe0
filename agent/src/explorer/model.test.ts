import { test } from "uvu";
import * as assert from "uvu/assert";
import {
  fitLogistic,
  fitSelectedModel,
  KernelBetaModel,
  kernelSums,
  type LabeledPoint,
  selectLengthscale,
} from "./model.js";
import { Rng } from "./rng.js";

/** 2-D points, labelled 1 when x0 > 0.6 (x1 irrelevant). */
function threshold(n: number, seed: number): LabeledPoint[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => {
    const z = [rng.random(), rng.random()];
    return { z, y: z[0]! > 0.6 ? 1 : 0, w: 1 };
  });
}

test("kernelSums: weighted sums of events and non-events, leave-one-out, negligible kernels skipped", () => {
  const pts: LabeledPoint[] = [
    { z: [0], y: 1, w: 1 },
    { z: [1], y: 0, w: 0.5 },
    { z: [9], y: 1, w: 1 },
  ];
  const k = (z: readonly number[]) => (Math.abs(z[0]!) < 5 ? 0.5 : 0);
  assert.equal(kernelSums(pts, k), { weight: 0.75, positive: 0.5, negative: 0.25 });
  assert.equal(kernelSums(pts, k, 0), { weight: 0.25, positive: 0, negative: 0.25 });
});

test("KernelBetaModel: posterior mean from the trend prior plus kernel counts", () => {
  const pts = threshold(60, 1);
  const m = new KernelBetaModel(pts, { lengthscale: 0.15 });
  assert.ok(m.predict([0.9, 0.5]).mean > 0.8);
  assert.ok(m.predict([0.2, 0.5]).mean < 0.2);
  // alpha + beta = prior strength + local evidence.
  const p = m.predict([0.5, 0.5]);
  assert.ok(Math.abs(p.alpha + p.beta - (1 + p.evidence)) < 1e-9);
  // No data: the prior alone, with its uncertainty.
  const empty = new KernelBetaModel([], { lengthscale: 0.2 });
  assert.ok(empty.predict([0.3]).evidence === 0 && empty.predict([0.3]).sd > 0.2);
});

test("fitLogistic: slope on the relevant dimension, finite on separable data", () => {
  const w = fitLogistic(threshold(80, 2), 1);
  assert.ok(w.every(Number.isFinite));
  assert.ok(w[1]! > 2 && Math.abs(w[2]!) < w[1]! / 3, String(w));
  // All negative: a small base rate, no slope.
  const neg = fitLogistic([{ z: [0.5], y: 0, w: 1 }], 1);
  assert.ok(neg[0]! < 0 && Number.isFinite(neg[0]!));
});

test("width and relevance selection by leave-one-out likelihood", () => {
  const pts = threshold(60, 3);
  const l = selectLengthscale(pts, 2);
  const m = fitSelectedModel(pts, 2);
  assert.ok(l > 0 && m.lengthscale > 0);
  // No contrast in the labels: the middle width.
  const flat = pts.map((p) => ({ ...p, y: 0 }));
  assert.is(selectLengthscale(flat, 2), fitSelectedModel(flat, 2).lengthscale);
  // The relevance-weighted metric stretches the relevant dimension.
  assert.ok(m.scales[0]! >= m.scales[1]!, String(m.scales));
});

test.run();
