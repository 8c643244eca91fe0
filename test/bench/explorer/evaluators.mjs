// Synthetic evaluators for the explorer benchmark. Each family builds, from an instance seed, a
// set of failure signatures over the normalized stress knobs and fault rates, so every seed is a
// different instance of the same kind of failure geometry. The explorer never sees any of this:
// it only gets outcomes through a TrialRunner (in process) or the oracle line protocol (oracle.mjs).
//
// An evaluator exposes:
//   signatures            every signature it can produce
//   probs(profile)        Map signature -> noise-free probability (for scoring only)
//   outcome(profile, rng) one sampled outcome {failed, signatures}
// and trueLeastStress(evaluator) gives the ground truth the boundary estimates are scored against.
import { DEFAULT_PROFILE_BOUNDS, FAULT_KINDS } from "@shadowvm/shared";
import { minStressPoint } from "../../../agent/dist/explorer/boundary.js";
import { Rng } from "../../../agent/dist/explorer/rng.js";
import { ProfileSpace, stressOf } from "../../../agent/dist/explorer/space.js";

const B = DEFAULT_PROFILE_BOUNDS;
const KNOBS = ["cpu_load", "memory_load", "io_load", "net_latency_ms", "net_loss_pct"];

/** Normalized view of a profile: knobs in [0,1] by the default bounds, fault rates (0 = absent). */
export function normalize(p) {
  const v = {};
  for (const k of KNOBS) v[k] = Math.min(1, Math.max(0, (p[k] - B[k][0]) / (B[k][1] - B[k][0])));
  for (const f of FAULT_KINDS) v[f] = 0;
  for (const f of p.faults ?? []) v[f.kind] = Math.max(v[f.kind], f.rate);
  return v;
}

const sigmoid = (x) => 1 / (1 + Math.exp(-x));
/** Hard (sharpness 0) or soft region edge: probability that g >= 0 fires. */
const edge = (g, softness) => (softness > 0 ? sigmoid(g / softness) : g >= 0 ? 1 : 0);

function pickDistinct(rng, items, n) {
  const pool = [...items];
  const out = [];
  while (out.length < n && pool.length > 0) out.push(pool.splice(rng.int(pool.length), 1)[0]);
  return out;
}

// Region shapes: each returns g(v), positive inside the region.
const shapes = {
  axis(rng, size) {
    const k = KNOBS[rng.int(KNOBS.length)];
    const t = 1 - size * (0.6 + 0.8 * rng.random());
    return { desc: `${k} > ${t.toFixed(2)}`, g: (v) => v[k] - t };
  },
  diagonal(rng, size) {
    const [a, b] = pickDistinct(rng, KNOBS, 2);
    const wa = 0.5 + rng.random();
    const wb = 0.5 + rng.random();
    // Triangle corner of area ~size: wa*x + wb*y > c
    const c = (wa + wb) * (1 - Math.sqrt(2 * size * (0.6 + 0.8 * rng.random())) / 2);
    return {
      desc: `${wa.toFixed(2)}*${a} + ${wb.toFixed(2)}*${b} > ${c.toFixed(2)}`,
      g: (v) => (wa * v[a] + wb * v[b] - c) / (wa + wb),
    };
  },
  curved(rng, size) {
    const [a, b] = pickDistinct(rng, KNOBS, 2);
    const c = 1 - Math.sqrt(size) * (0.8 + 0.5 * rng.random());
    return { desc: `${a}*${b} > ${c.toFixed(2)}`, g: (v) => v[a] * v[b] - c };
  },
  island(rng, size) {
    const [a, b] = pickDistinct(rng, KNOBS, 2);
    const r = Math.sqrt(size / Math.PI) * (0.8 + 0.4 * rng.random());
    const ca = r + (1 - 2 * r) * rng.random();
    const cb = r + (1 - 2 * r) * rng.random();
    return {
      desc: `island (${a},${b}) at (${ca.toFixed(2)},${cb.toFixed(2)}) r=${r.toFixed(2)}`,
      g: (v) => r - Math.hypot(v[a] - ca, v[b] - cb),
    };
  },
  fault(rng, size) {
    const f = FAULT_KINDS[rng.int(FAULT_KINDS.length)];
    const k = KNOBS[rng.int(KNOBS.length)];
    // Needs the fault at a high enough rate, and a knob high enough: volume ~ 0.5 * (1-tf) * (1-tk).
    const tf = 1 - Math.min(0.9, Math.sqrt(size * 2) * (0.8 + 0.4 * rng.random()));
    const tk = 1 - Math.min(0.95, Math.sqrt(size * 2) * (0.8 + 0.4 * rng.random()));
    return {
      desc: `${f} rate > ${tf.toFixed(2)} and ${k} > ${tk.toFixed(2)}`,
      g: (v) => Math.min(v[f] - tf, v[k] - tk),
    };
  },
  conjunction(rng, size) {
    const [a, b] = pickDistinct(rng, KNOBS, 2);
    const t = 1 - Math.sqrt(size) * (0.8 + 0.4 * rng.random());
    return {
      desc: `${a} > ${t.toFixed(2)} and ${b} > ${t.toFixed(2)}`,
      g: (v) => Math.min(v[a] - t, v[b] - t),
    };
  },
};

/**
 * family: name -> (rng) => { regions: [{shape, size}], softness, missRate, flakeRate, mask }
 * size is the region's approximate share of the space (before the fault on/off halving).
 */
const families = {
  "axis-thresholds": () => ({
    regions: Array.from({ length: 5 }, () => ({ shape: "axis", size: 0.12 })),
  }),
  "diagonal-curved": () => ({
    regions: [
      { shape: "diagonal", size: 0.08 },
      { shape: "diagonal", size: 0.04 },
      { shape: "curved", size: 0.08 },
      { shape: "curved", size: 0.04 },
      { shape: "conjunction", size: 0.05 },
    ],
  }),
  "small-islands": () => ({
    regions: Array.from({ length: 6 }, (_, i) => ({ shape: "island", size: i < 3 ? 0.05 : 0.025 })),
  }),
  "fault-triggered": () => ({
    regions: [
      ...Array.from({ length: 5 }, () => ({ shape: "fault", size: 0.06 })),
      { shape: "axis", size: 0.1 },
      { shape: "conjunction", size: 0.05 },
    ],
  }),
  "overlapping-8": () => ({
    regions: [
      { shape: "diagonal", size: 0.25 },
      { shape: "axis", size: 0.15 },
      { shape: "axis", size: 0.08 },
      { shape: "conjunction", size: 0.06 },
      { shape: "curved", size: 0.05 },
      { shape: "fault", size: 0.05 },
      { shape: "fault", size: 0.04 },
      { shape: "island", size: 0.04 },
    ],
  }),
  "noisy-flaky": () => ({
    regions: [
      { shape: "axis", size: 0.1 },
      { shape: "diagonal", size: 0.08 },
      { shape: "curved", size: 0.05 },
      { shape: "fault", size: 0.06 },
      { shape: "island", size: 0.05 },
      { shape: "conjunction", size: 0.05 },
    ],
    softness: 0.04,
    missRate: 0.15,
    flakeRate: 0.04,
  }),
  "many-12": () => ({
    regions: [
      ...["axis", "axis", "diagonal", "diagonal", "curved", "curved", "island", "island"].map((shape) => ({
        shape,
        size: 0.03,
      })),
      ...Array.from({ length: 3 }, () => ({ shape: "fault", size: 0.04 })),
      { shape: "conjunction", size: 0.03 },
    ],
  }),
  "masking-10": () => ({
    regions: [
      { shape: "diagonal", size: 0.2 },
      { shape: "axis", size: 0.08 },
      { shape: "axis", size: 0.05 },
      { shape: "curved", size: 0.05 },
      { shape: "island", size: 0.04 },
      { shape: "island", size: 0.03 },
      { shape: "fault", size: 0.05 },
      { shape: "fault", size: 0.04 },
      { shape: "conjunction", size: 0.04 },
      { shape: "diagonal", size: 0.03 },
    ],
    // A crash hides the milder signatures: only the most severe (last listed) one is reported.
    mask: true,
  }),
  "sparse-3": () => ({
    regions: [
      { shape: "conjunction", size: 0.02 },
      { shape: "curved", size: 0.02 },
      { shape: "fault", size: 0.02 },
    ],
  }),
};

export const FAMILIES = Object.keys(families);

export function makeEvaluator(family, instanceSeed) {
  const spec = families[family];
  if (!spec) throw new Error(`unknown evaluator family ${family}; known: ${FAMILIES.join(", ")}`);
  const rng = new Rng(`evaluator:${family}:${instanceSeed}`);
  const cfg = spec(rng);
  const regions = cfg.regions.map((r, i) => {
    const s = shapes[r.shape](rng, r.size);
    return { name: `${r.shape}-${i + 1}`, ...s };
  });
  const softness = cfg.softness ?? 0;
  const missRate = cfg.missRate ?? 0;
  const flakeRate = cfg.flakeRate ?? 0;
  const signatures = [...regions.map((r) => r.name), ...(flakeRate > 0 ? ["infra-flake"] : [])];
  const probs = (profile) => {
    const v = normalize(profile);
    const m = new Map();
    for (const r of regions) m.set(r.name, edge(r.g(v), softness) * (1 - missRate));
    if (flakeRate > 0) m.set("infra-flake", flakeRate);
    return m;
  };
  return {
    family,
    instanceSeed,
    signatures,
    regions: regions.map((r) => ({ name: r.name, desc: r.desc })),
    probs,
    outcome(profile, noise) {
      let sigs = [];
      for (const [name, p] of probs(profile)) if (p >= 1 || (p > 0 && noise.random() < p)) sigs.push(name);
      if (cfg.mask && sigs.length > 1) sigs = [sigs.filter((s) => s !== "infra-flake").at(-1)];
      return { failed: sigs.length > 0, signatures: sigs };
    },
  };
}

const space = new ProfileSpace({ bounds: B, faultKinds: FAULT_KINDS, durationS: 120 });

/**
 * True least stress with p >= 0.5 per signature (null if none is found), from the evaluator's
 * noise-free probabilities, by the same ray search the explorer's model crossing uses, with many
 * more rays: the ground truth of the boundary scores.
 */
export function trueLeastStress(ev) {
  const rng = new Rng(`truth:${ev.family}:${ev.instanceSeed}`);
  const samples = Array.from({ length: 4000 }, () =>
    space.features(space.fromUnit(space.dims.map(() => rng.random()))),
  );
  const out = {};
  for (const sig of ev.signatures) {
    const prob = (z) => ev.probs(space.profileFromFeatures(z)).get(sig) ?? 0;
    const inside = samples.filter((z) => prob(z) >= 0.5).sort((a, b) => stressOf(a) - stressOf(b));
    const r = minStressPoint(prob, space.size, inside.slice(0, 40), rng, { randomRays: 600, steps: 60 });
    out[sig] = r ? r.stress : null;
  }
  return out;
}
