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
// The least stress is the norm of the kept thresholds, never above the least stress seen.
// Few runs can fit several knob sets equally well (two runs at full stress fit any knob that
// excludes the runs without the signature), so each kept knob is also checked: is there a fit
// without it? If so, it is reported as not yet established, and the alternative fit is returned
// for a run that tells them apart.

export interface Conjunction {
  /** Per coordinate: the least intensity the failure needs, 0 where it needs none. */
  thresholds: number[];
  /** Coordinates the failure needs, in coordinate order. */
  needed: number[];
  /** Runs without the signature that the orthant still contains (missed detections, or a region
   * the conjunction describes only roughly, e.g. an island). */
  negativesInside: number;
  /** Needed coordinates no fit can do without (the others could be swapped for another set). */
  established: number[];
  /** Other fits that do without some needed coordinate: their thresholds, as in `thresholds`. */
  alternatives: number[][];
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
  for (const j of fit.kept) {
    const other = generalize(all.filter((k) => k !== j));
    if (!other) established.push(j);
    else
      alternatives.set(
        other.kept.join(","),
        thresholds.map((t, k) => (other.kept.includes(k) ? t : 0)),
      );
  }
  return {
    thresholds: thresholds.map((t, j) => (fit.kept.includes(j) ? t : 0)),
    needed: fit.kept,
    negativesInside: fit.current,
    established,
    alternatives: [...alternatives.values()],
  };
}
