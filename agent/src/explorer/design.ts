// Space-filling designs. The initial design uses the R_d low-discrepancy sequence (Roberts 2018:
// x_i = frac(shift + i * alpha), alpha_j = phi_d^-j with phi_d the root of x^(d+1) = x + 1) with
// a seeded random shift. Unlike a Latin hypercube its every prefix is evenly spread, so the design
// needs no stored plan: point i is a function of (seed, i) and a resumed campaign picks up at i.
// Later points come in blocks that PairCoverDesign moves to cover every pair of knobs evenly.
import { Rng } from "./rng.js";

export function rdPoint(index: number, dim: number, shift: readonly number[]): number[] {
  let phi = 2;
  for (let i = 0; i < 40; i++) phi = (1 + phi) ** (1 / (dim + 1));
  const out: number[] = [];
  for (let j = 0; j < dim; j++) {
    const alpha = (1 / phi) ** (j + 1);
    const v = (shift[j] ?? 0) + (index + 1) * alpha;
    out.push(v - Math.floor(v));
  }
  return out;
}

export function designShift(seed: number | string, dim: number): number[] {
  const rng = new Rng(`design:${seed}`);
  return Array.from({ length: dim }, () => rng.random());
}

/** Radius (in unit coordinates) of the disc each point covers in each pair of knobs. */
const COVER_RADIUS = 0.1;
/** Grid of disc centres per pair of knobs (cells per side) the coverage is counted on. */
const COVER_GRID = 20;
/** Coordinate-exchange passes over a block, and candidate values tried per coordinate. */
const COVER_SWEEPS = 30;
const COVER_TRIES = 8;
/**
 * Points after this many are plain R_d, not fitted. Every pair of knobs is covered at COVER_RADIUS
 * within about 48 points, after which the blocks no longer move anyway; but each block still costs
 * a pass of tries, and blocks are recomputed whenever an explorer is rebuilt from its state, so
 * without a cap a long-lived VM's campaigns would pay for every block of its history.
 */
export const COVER_MAX_POINTS = 256;

export interface PairCoverOptions {
  seed: number | string;
  /** Coordinates of the whole space. */
  dim: number;
  /** Which of them are knobs (the blocks spread these over every pair). */
  knobDims: readonly number[];
  /** Points of the first block: R_d points with the knobs in the middle `initialSpread` of their range. */
  initial: number;
  initialSpread: number;
  /** Points of each later block. */
  block: number;
}

/**
 * The explorer's space-filling sequence. The first block is R_d's (see rdPoint), with the knobs
 * kept to the middle of their ranges. Each later block starts from the next R_d points over the
 * whole range and moves their knob coordinates, one at a time (coordinate exchange), to cover as
 * much as it can of every pair of knobs that the points before it leave uncovered: each point
 * covers a disc of radius COVER_RADIUS around itself in each pair's unit square, counted at the
 * centres of a grid inside the square. (So moved points keep off the top and bottom tenth of each
 * range, where a disc would stick out: thresholds there are left to the explorer's other tactics.)
 * Why pairs: a failure that needs two knobs in some band at once (an island) shows only to a run
 * inside that band of both, and R_d spreads points evenly over the whole space, not over each
 * pair of knobs. Fault coordinates stay R_d's. Point i is a function of (seed, i): a block is
 * recomputed, in order, when first asked for, so a resumed campaign gets the same points.
 */
export class PairCoverDesign {
  private readonly points: number[][] = [];
  private readonly shift: number[];
  /** Coverage of the points so far (absent with fewer than two knobs: no pairs to cover). */
  private readonly cover: PairCover | undefined;

  constructor(private readonly opts: PairCoverOptions) {
    this.shift = designShift(opts.seed, opts.dim);
    if (opts.knobDims.length >= 2) this.cover = new PairCover(opts.knobDims);
  }

  point(i: number): number[] {
    while (this.points.length <= i) this.addBlock();
    return [...this.points[i]!];
  }

  /** R_d point i over the whole range, as the blocks start from it: not moved, not kept to the middle. */
  plainPoint(i: number): number[] {
    return rdPoint(i, this.opts.dim, this.shift);
  }

  private addBlock(): void {
    const { knobDims, initial, initialSpread, block } = this.opts;
    const first = this.points.length === 0;
    const start = this.points.length;
    const end = start + (first ? initial : block);
    const lo = first ? 0.5 - initialSpread / 2 : 0;
    for (let i = start; i < end; i++) {
      const u = this.plainPoint(i);
      for (const j of knobDims) u[j] = lo + (1 - 2 * lo) * u[j]!;
      this.points.push(u);
    }
    const cover = this.cover;
    if (!cover || start >= COVER_MAX_POINTS) return;
    for (let i = start; i < end; i++) cover.add(this.points[i]!, 1);
    if (first) return;
    const rng = new Rng(`pair-cover:${this.opts.seed}:${start}`);
    for (let sweep = 0; sweep < COVER_SWEEPS; sweep++) {
      let moved = false;
      for (let i = start; i < end; i++) {
        for (const j of knobDims) if (cover.improve(this.points[i]!, j, rng)) moved = true;
      }
      if (!moved) break;
    }
  }
}

/** Per pair of knobs, how many points cover each grid centre. */
class PairCover {
  private readonly pairs: [number, number][] = [];
  private readonly counts: Int32Array[];
  /** Grid centres along one side: a disc centred there lies inside the square. */
  private readonly centres: number[] = [];

  constructor(knobDims: readonly number[]) {
    for (let a = 0; a < knobDims.length; a++) {
      for (let b = a + 1; b < knobDims.length; b++) this.pairs.push([knobDims[a]!, knobDims[b]!]);
    }
    const r = COVER_RADIUS;
    for (let i = 0; i < COVER_GRID; i++) this.centres.push(r + ((1 - 2 * r) * (i + 0.5)) / COVER_GRID);
    this.counts = this.pairs.map(() => new Int32Array(COVER_GRID * COVER_GRID));
  }

  /** Adds (delta 1) or removes (-1) point p's discs in the pairs that involve coordinate `only` (all if absent). */
  add(p: readonly number[], delta: number, only?: number): void {
    const r2 = COVER_RADIUS * COVER_RADIUS;
    this.pairs.forEach(([a, b], k) => {
      if (only !== undefined && a !== only && b !== only) return;
      const counts = this.counts[k]!;
      for (let x = 0; x < COVER_GRID; x++) {
        const dx = (p[a]! - this.centres[x]!) ** 2;
        if (dx >= r2) continue;
        for (let y = 0; y < COVER_GRID; y++) {
          if (dx + (p[b]! - this.centres[y]!) ** 2 < r2) counts[x * COVER_GRID + y]! += delta;
        }
      }
    });
  }

  /** Grid centres covered in the pairs that involve coordinate `dim`. */
  private covered(dim: number): number {
    let n = 0;
    this.pairs.forEach(([a, b], k) => {
      if (a !== dim && b !== dim) return;
      for (const c of this.counts[k]!) if (c > 0) n++;
    });
    return n;
  }

  /** Tries COVER_TRIES random values of p[dim]; keeps the one that covers the most, if it covers more. */
  improve(p: number[], dim: number, rng: Rng): boolean {
    const old = p[dim]!;
    const before = this.covered(dim);
    let best = old;
    let bestGain = 0;
    const set = (v: number) => {
      this.add(p, -1, dim);
      p[dim] = v;
      this.add(p, 1, dim);
    };
    for (let t = 0; t < COVER_TRIES; t++) {
      set(rng.random());
      const gain = this.covered(dim) - before;
      if (gain > bestGain) {
        bestGain = gain;
        best = p[dim]!;
      }
    }
    set(best);
    return best !== old;
  }
}

/**
 * How often each pair of coordinates has been high together in a set of runs: the pairwise part of
 * a covering array. Partial corners pick the pushed coordinates that have been high together least
 * often, so every pair of stressors gets tried together before any pair is tried twice (a failure
 * that needs two stressors high shows only when both are; under crash masking, repeating a pair
 * that triggered a crash mostly shows that crash again).
 */
export class CoHighPairs {
  private readonly counts: Float64Array;

  constructor(
    private readonly dim: number,
    /** A coordinate at or above this (unit scale) counts as high. */
    private readonly high: number,
  ) {
    this.counts = new Float64Array(dim * dim);
  }

  /** Coordinates of unit point u that count as high. */
  highOf(u: readonly number[]): number[] {
    return u.flatMap((v, j) => (v >= this.high ? [j] : []));
  }

  add(u: readonly number[]): void {
    const hi = this.highOf(u);
    for (const a of hi) for (const b of hi) this.counts[a * this.dim + b]! += 1;
  }

  /** Times the pairs of `coords` were high together so far, summed. */
  overlap(coords: readonly number[]): number {
    let n = 0;
    for (let i = 0; i < coords.length; i++) {
      for (let j = i + 1; j < coords.length; j++) n += this.counts[coords[i]! * this.dim + coords[j]!]!;
    }
    return n;
  }
}
