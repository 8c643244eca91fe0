#!/usr/bin/env node
// Space-filling designs against interior islands: how often do the first n points of a design hit a
// random disc (radius r, centre anywhere inside the bounds) in a random pair of the five knobs?
// This is the one thing a design can do for an island before any run has failed, so it bounds what
// a better sequence could add to the explorer's `fill` tactic (docs/explorer.md, "Limits").
// Every design keeps the knobs in the middle 80% of their range, as the explorer's initial design
// (the pair-covering blocks after their first 8 points keep to the middle on their own).
//
// Usage (after `npx tsc -b shared agent`):
//   node test/bench/explorer/designs.mjs [--points 20] [--radius 0.1] [--seeds 60] [--discs 200]
import { designShift, PairCoverDesign, rdPoint } from "../../../agent/dist/explorer/design.js";
import { Rng } from "../../../agent/dist/explorer/rng.js";

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return Number(i >= 0 && args[i + 1] !== undefined ? args[i + 1] : dflt);
};
const points = opt("points", 20);
const radius = opt("radius", 0.1);
const seeds = opt("seeds", 60);
const discs = opt("discs", 200);

const D = 12; // 5 knobs + 7 fault kinds, as the explorer's default space
const KNOBS = 5;
const PRIMES = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];
const middle = (u) => u.map((v, j) => (j < KNOBS ? 0.5 + 0.8 * (v - 0.5) : v));

function halton(i, base) {
  let f = 1;
  let r = 0;
  for (let k = i; k > 0; k = Math.floor(k / base)) {
    f /= base;
    r += f * (k % base);
  }
  return r;
}

/** Greedy design: each point the best of `pool` uniform candidates by `score(x, chosen)` (lower wins). */
function greedy(rng, pool, score) {
  const chosen = [];
  for (let i = 0; i < points; i++) {
    let best;
    let bestScore = Infinity;
    for (let c = 0; c < pool; c++) {
      const x = middle(Array.from({ length: D }, () => rng.random()));
      const s = score(x, chosen);
      if (s < bestScore) {
        bestScore = s;
        best = x;
      }
    }
    chosen.push(best);
  }
  return chosen;
}

/** Maximum projection criterion (Joseph, Gul and Ba 2015): no two points close in any projection. */
const maxPro = (x, chosen) => {
  let s = 0;
  for (const p of chosen) {
    let prod = 1;
    for (let j = 0; j < D; j++) prod *= (x[j] - p[j]) ** 2 + 1e-4;
    s += 1 / prod;
  }
  return s;
};

/** Maximin over the knob pairs: maximize the least 2-D distance to a chosen point in any pair. */
const pairMaximin = (x, chosen) => {
  let least = Infinity;
  for (const p of chosen) {
    for (let a = 0; a < KNOBS; a++) {
      for (let b = a + 1; b < KNOBS; b++) least = Math.min(least, Math.hypot(x[a] - p[a], x[b] - p[b]));
    }
  }
  return -least;
};

/** Greedy cover: the candidate covering the most grid cells (within `radius`) no chosen point covers. */
function coverGreedy(rng, pool) {
  const G = 16;
  const pairs = [];
  for (let a = 0; a < KNOBS; a++) for (let b = a + 1; b < KNOBS; b++) pairs.push([a, b]);
  const covered = pairs.map(() => new Uint8Array(G * G));
  const cells = (x, fn) =>
    pairs.forEach(([a, b], k) => {
      for (let i = 0; i < G * G; i++) {
        if (Math.hypot((Math.floor(i / G) + 0.5) / G - x[a], ((i % G) + 0.5) / G - x[b]) < radius) fn(k, i);
      }
    });
  let marked = 0; // chosen points already in `covered`
  return greedy(rng, pool, (x, chosen) => {
    for (const p of chosen.slice(marked)) cells(p, (k, i) => (covered[k][i] = 1));
    marked = chosen.length;
    let gain = 0;
    cells(x, (k, i) => (gain += covered[k][i] ? 0 : 1));
    return -gain;
  });
}

function designs(seed) {
  const shift = designShift(seed, D);
  const rng = new Rng(`designs:${seed}`);
  const seq = (f) => Array.from({ length: points }, (_, i) => middle(f(i)));
  const pairCover = new PairCoverDesign({
    seed,
    dim: D,
    knobDims: [0, 1, 2, 3, 4],
    initial: 8,
    initialSpread: 0.8,
    block: 8,
  });
  return {
    // The explorer's fill sequence: R_d for the first 8 (middle 80%), then pair-covering blocks of 8
    // over the whole range (the blocks keep to the middle on their own: see PairCoverDesign).
    "pair-cover blocks (the explorer's)": Array.from({ length: points }, (_, i) => pairCover.point(i)),
    "R_d (the explorer's before)": seq((i) => rdPoint(i, D, shift)),
    "R_d, knobs and faults apart": seq((i) => [
      ...rdPoint(i, KNOBS, shift),
      ...rdPoint(i, D - KNOBS, shift.slice(KNOBS)),
    ]),
    "Halton, shifted": seq((i) => PRIMES.map((p, j) => (halton(i + 1, p) + shift[j]) % 1)),
    "Kronecker, sqrt(primes)": seq((i) => PRIMES.map((p, j) => (shift[j] + (i + 1) * Math.sqrt(p)) % 1)),
    "greedy MaxPro (200 candidates)": greedy(rng, 200, maxPro),
    "greedy knob-pair maximin (300)": greedy(rng, 300, pairMaximin),
    "greedy knob-pair cover (100)": coverGreedy(rng, 100),
    uniform: seq(() => Array.from({ length: D }, () => rng.random())),
  };
}

const hits = new Map();
const discRng = new Rng("designs:discs");
for (let seed = 1; seed <= seeds; seed++) {
  const ds = designs(seed);
  for (let t = 0; t < discs; t++) {
    const a = discRng.int(KNOBS);
    const b = (a + 1 + discRng.int(KNOBS - 1)) % KNOBS;
    const ca = radius + (1 - 2 * radius) * discRng.random();
    const cb = radius + (1 - 2 * radius) * discRng.random();
    for (const [name, pts] of Object.entries(ds)) {
      const hit = pts.some((p) => Math.hypot(p[a] - ca, p[b] - cb) < radius);
      hits.set(name, (hits.get(name) ?? 0) + (hit ? 1 : 0));
    }
  }
}
console.log(
  `| design (${points} points, disc radius ${radius}, ${seeds} seeds x ${discs} discs) | share of discs hit |`,
);
console.log("|---|---|");
for (const [name, n] of hits) console.log(`| ${name} | ${(n / (seeds * discs)).toFixed(3)} |`);
