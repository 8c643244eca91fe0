// Least-stress estimate for one signature from its runs alone, assuming the failure grows with
// stress: "it shows once every knob in a small set is at least its threshold" (a monotone
// conjunction, i.e. an upper orthant of the intensity features).
//
// Why not read the boundary off the signature's probability model: its kernel evidence sits where
// runs were made, and runs from a space-filling design have every coordinate at some mid value, so
// the model's least-stress crossing keeps irrelevant knobs at those values and overestimates the
// least stress by about half a unit (measured in docs/explorer.md). The conjunction instead asks
// the data which knobs the failure needs at all:
// 1. most specific hypothesis: threshold_j = the least value of knob j over the runs that showed it
//    (every such run lies inside the orthant);
// 2. generalize: drop knobs, lowest threshold first, while that lets no more runs *without* the
//    signature into the orthant than a detection-noise allowance (a dropped knob is one the
//    failure was seen without needing, as far as the runs can tell).
// 3. place each kept threshold inside its interval: the least value seen *with* the signature is
//    an upper bound, and the runs without it bound it from below (the most stressed run that the
//    knob alone keeps out). With nothing else known the middle of that interval is the estimate (the
//    mean of a uniform prior over it), where the upper bound alone was biased high, most for
//    campaigns whose failing runs sit at high stress (measured in docs/explorer.md). All kept knobs
//    are lowered together, and only as far as lets no more runs without the signature into the
//    orthant: where a region's edge is diagonal or curved, lowering every knob at once would cut
//    through it.
// The least stress is the norm of the kept thresholds, never above the least stress seen.
// Few runs can fit several knob sets equally well (two runs at full stress fit any knob that
// excludes the runs without the signature), so each kept knob is also checked: is there a fit
// without it? If so, it is reported as not yet established, and the alternative fit is returned
// for a run that tells them apart.

export interface Conjunction {
  /** Per coordinate: the least intensity the failure needs, 0 where it needs none (step 3 above). */
  thresholds: number[];
  /** Per coordinate, where the runs put its threshold: above `seenWithout` (the highest value of a
   * run without the signature that this knob alone keeps out, 0 if none) and at most `seenWith`
   * (the least value of a run with it); both 0 where the failure needs no such knob. */
  brackets: { seenWithout: number; seenWith: number }[];
  /** Coordinates the failure needs, in coordinate order. */
  needed: number[];
  /** Runs without the signature that the orthant still contains (missed detections, or a region
   * the conjunction describes only roughly, e.g. an island). */
  negativesInside: number;
  /** Needed coordinates no fit can do without (the others could be swapped for another set). */
  established: number[];
  /** Other fits that do without some needed coordinate: their thresholds, as in `thresholds`. */
  alternatives: number[][];
  /** Per needed coordinate (in `needed` order), the coordinates that could stand in for it: each
   * one that, swapped in for it, fits the runs as well, and those the other fit without it names
   * beside the needed ones. Empty for an established coordinate; empty for one that is not
   * established means the runs fit as well without it at all. */
  standIns: number[][];
}

export interface ConjunctionOptions {
  /** Share of the positives' count allowed as negatives inside before a knob must be kept (default 0.1). */
  noiseAllowance?: number;
}

/** Fits the conjunction; undefined without a positive run. */
export function fitConjunction(
  positives: readonly (readonly number[])[],
  negatives: readonly (readonly number[])[],
  opts: ConjunctionOptions = {},
): Conjunction | undefined {
  if (positives.length === 0) return undefined;
  const dim = positives[0]!.length;
  const thresholds = Array.from({ length: dim }, (_, j) => Math.min(...positives.map((x) => x[j]!)));
  const inside = (kept: readonly number[]) =>
    negatives.filter((y) => kept.every((j) => y[j]! >= thresholds[j]!)).length;
  const allowance = Math.floor((opts.noiseAllowance ?? 0.1) * positives.length);
  const all = [...thresholds.keys()];
  // Lowest thresholds first: they cost the least stress to keep and are the likeliest to be
  // incidental (a knob the failure ignores reaches low values among its positives).
  const order = [...all].sort((a, b) => thresholds[a]! - thresholds[b]! || a - b);
  // Negatives a fit may let in: the allowance, or those even the most specific fit cannot keep out.
  const tolerated = Math.max(allowance, inside(all));
  /** Greedy generalization from `start`; undefined when `start` already lets in too many negatives. */
  const generalize = (start: readonly number[]) => {
    let kept = [...start];
    let current = inside(kept);
    if (current > tolerated) return undefined;
    for (const j of order) {
      if (!kept.includes(j)) continue;
      const without = kept.filter((k) => k !== j);
      const n = inside(without);
      if (n <= Math.max(allowance, current)) {
        kept = without;
        current = n;
      }
    }
    return { kept, current };
  };
  const fit = generalize(all)!;
  const established: number[] = [];
  const alternatives = new Map<string, number[]>();
  const standIns: number[][] = [];
  for (const j of fit.kept) {
    const other = generalize(all.filter((k) => k !== j));
    if (!other) {
      established.push(j);
      standIns.push([]);
      continue;
    }
    alternatives.set(
      other.kept.join(","),
      thresholds.map((t, k) => (other.kept.includes(k) ? t : 0)),
    );
    // Every single swap that fits as well, not only the one the greedy alternative found: with
    // positives only at full stress, any knob the other runs never had as high could be the one.
    const rest = fit.kept.filter((k) => k !== j);
    const swaps = all.filter(
      (k) => !fit.kept.includes(k) && thresholds[k]! > 0 && inside([...rest, k]) <= fit.current,
    );
    const named = other.kept.filter((k) => !fit.kept.includes(k));
    standIns.push([...new Set([...swaps, ...named])].sort((a, b) => a - b));
  }
  const lower = lowerBounds(thresholds, fit.kept, negatives);
  const placed = placeInIntervals(thresholds, lower, fit.kept, negatives);
  return {
    thresholds: thresholds.map((_, j) => (fit.kept.includes(j) ? placed[j]! : 0)),
    brackets: thresholds.map((t, j) =>
      fit.kept.includes(j) ? { seenWithout: lower[j]!, seenWith: t } : { seenWithout: 0, seenWith: 0 },
    ),
    needed: fit.kept,
    negativesInside: fit.current,
    established,
    alternatives: [...alternatives.values()],
    standIns,
  };
}

/** Per kept knob: the highest value among the negatives that every other kept knob lets in. */
function lowerBounds(
  upper: readonly number[],
  kept: readonly number[],
  negatives: readonly (readonly number[])[],
): number[] {
  return upper.map((t, j) => {
    let bound = 0;
    for (const y of negatives) {
      if (y[j]! < t && kept.every((k) => k === j || y[k]! >= upper[k]!)) bound = Math.max(bound, y[j]!);
    }
    return bound;
  });
}

/**
 * Step 3: each kept threshold moved from its upper bound (the least value among the positives)
 * toward the middle of [lower bound, upper bound]: one shared fraction of the way, the largest that
 * admits no more negatives than the upper bounds do.
 */
function placeInIntervals(
  upper: readonly number[],
  lower: readonly number[],
  kept: readonly number[],
  negatives: readonly (readonly number[])[],
): number[] {
  const at = (share: number) =>
    upper.map((t, j) => (kept.includes(j) ? t - (share * (t - lower[j]!)) / 2 : t));
  const inside = (th: readonly number[]) =>
    negatives.filter((y) => kept.every((j) => y[j]! >= th[j]!)).length;
  const allowed = inside(upper);
  if (inside(at(1)) <= allowed) return at(1);
  // Admitted negatives only grow as the thresholds fall, so bisect on the shared fraction.
  let lo = 0;
  let hi = 1;
  for (let i = 0; i < 12; i++) {
    const mid = (lo + hi) / 2;
    if (inside(at(mid)) <= allowed) lo = mid;
    else hi = mid;
  }
  return at(lo);
}
