// Probability model over the intensity space: a weighted logistic trend (captures "more stress of
// this kind -> more failures" and extrapolates it to unexplored corners) used as the prior mean of
// a local Beta-Bernoulli posterior built from kernel-weighted counts (captures islands and curved
// edges, and tolerates noisy labels). At any point x:
//   alpha = c * m(x) + sum_i w_i k(x, x_i) y_i,   beta = c * (1 - m(x)) + sum_i w_i k(x, x_i) (1 - y_i)
// with m the trend, c the prior strength (pseudo-trials), k a Gaussian kernel and w_i a trial's
// weight (1 for the VM's own trials, lower for priors imported from similar VMs).

export interface LabeledPoint {
  z: readonly number[];
  /** 1 = the event (failure / signature) was seen, 0 = not. */
  y: number;
  /** Trust in the trial: 1 for own trials, < 1 for priors from other VMs. */
  w: number;
}

export interface Prediction {
  mean: number;
  sd: number;
  alpha: number;
  beta: number;
  /** Kernel-weighted number of trials near x: how much local evidence there is. */
  evidence: number;
}

export interface ModelOptions {
  lengthscale: number;
  /**
   * Relevance mix in [0, 1): 0 = isotropic kernel; closer to 1 = each dimension's weight in the
   * distance follows |trend slope| (an automatic-relevance metric learned from the data).
   */
  relevance?: number;
  /** Pseudo-trials given to the trend (default 1). */
  priorStrength?: number;
  /** L2 penalty on the trend's slopes (default 1). */
  ridge?: number;
}

export class KernelBetaModel {
  readonly points: readonly LabeledPoint[];
  readonly lengthscale: number;
  readonly trendWeights: number[];
  /** Per-dimension distance weights (all 1 when isotropic). */
  readonly scales: number[];
  private readonly c: number;
  private readonly inv2l2: number;

  constructor(points: readonly LabeledPoint[], opts: ModelOptions, trendWeights?: number[]) {
    this.points = points;
    this.lengthscale = opts.lengthscale;
    this.c = opts.priorStrength ?? 1;
    this.inv2l2 = 1 / (2 * opts.lengthscale * opts.lengthscale);
    this.trendWeights = trendWeights ?? fitLogistic(points, opts.ridge ?? 1);
    this.scales = relevanceScales(this.trendWeights, opts.relevance ?? 0);
  }

  trend(z: readonly number[]): number {
    const w = this.trendWeights;
    let s = w[0]!;
    for (let i = 0; i < z.length; i++) s += (w[i + 1] ?? 0) * z[i]!;
    return sigmoid(s);
  }

  kernel(a: readonly number[], b: readonly number[]): number {
    return Math.exp(-scaledSqDist(a, b, this.scales) * this.inv2l2);
  }

  /** Posterior at z; `skip` leaves one trial out (for bandwidth selection). */
  predict(z: readonly number[], skip = -1): Prediction {
    const m = this.trend(z);
    const sums = kernelSums(this.points, (x) => this.kernel(z, x), skip);
    const evidence = sums.weight;
    const a = Math.max(this.c * m + sums.positive, 1e-6);
    const b = Math.max(this.c * (1 - m) + sums.negative, 1e-6);
    const n = a + b;
    const mean = a / n;
    return { mean, sd: Math.sqrt((a * b) / (n * n * (n + 1))), alpha: a, beta: b, evidence };
  }

  /** Leave-one-out log predictive likelihood (trend kept fixed: cheap and good enough to rank). */
  looLogLik(): number {
    let ll = 0;
    this.points.forEach((p, i) => {
      const q = Math.min(1 - 1e-4, Math.max(1e-4, this.predict(p.z, i).mean));
      ll += p.w * (p.y * Math.log(q) + (1 - p.y) * Math.log(1 - q));
    });
    return ll;
  }
}

const WIDTHS = [0.06, 0.09, 0.13, 0.19, 0.28];

/** Picks the kernel width from a grid (relative to sqrt(D)) by leave-one-out likelihood. */
export function selectLengthscale(points: readonly LabeledPoint[], dim: number): number {
  return selectByLoo(points, dim, [0]).lengthscale;
}

/**
 * Fits a model choosing width and relevance mix by leave-one-out likelihood: an isotropic kernel
 * when nothing stands out, a relevance-weighted one when the trend singles out a few knobs (which
 * is what lets the least-stress search drop knobs that do not matter).
 */
export function fitSelectedModel(points: readonly LabeledPoint[], dim: number): KernelBetaModel {
  return selectByLoo(points, dim, [0, 0.6, 0.95]);
}

/** The model with the best leave-one-out likelihood over the width grid x the given relevance mixes. */
function selectByLoo(
  points: readonly LabeledPoint[],
  dim: number,
  relevances: readonly number[],
): KernelBetaModel {
  const trend = fitLogistic(points, 1);
  const grid = WIDTHS.map((f) => f * Math.sqrt(Math.max(1, dim)));
  const positives = points.filter((p) => p.y > 0.5).length;
  // With no contrast in the labels every width explains them equally; take a middle one.
  if (positives === 0 || positives === points.length || points.length < 4) {
    return new KernelBetaModel(points, { lengthscale: grid[2]! }, trend);
  }
  let best: KernelBetaModel | undefined;
  let bestLl = -Infinity;
  for (const relevance of relevances) {
    for (const l of grid) {
      const m = new KernelBetaModel(points, { lengthscale: l, relevance }, trend);
      const ll = m.looLogLik();
      if (ll > bestLl + 1e-9) {
        bestLl = ll;
        best = m;
      }
    }
  }
  return best!;
}

/** Distance weights: (1 - mix) + mix * |slope_d| / max |slope|, rescaled to mean square 1. */
export function relevanceScales(trendWeights: readonly number[], mix: number): number[] {
  const slopes = trendWeights.slice(1).map(Math.abs);
  const max = Math.max(...slopes, 1e-12);
  const raw = slopes.map((s) => 1 - mix + (mix * s) / max);
  const ms = Math.sqrt(raw.reduce((a, b) => a + b * b, 0) / Math.max(1, raw.length)) || 1;
  return raw.map((r) => r / ms);
}

export function scaledSqDist(a: readonly number[], b: readonly number[], scales: readonly number[]): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const d = (a[i]! - (b[i] ?? 0)) * (scales[i] ?? 1);
    s += d * d;
  }
  return s;
}

/**
 * Weighted, ridge-penalized logistic regression by Newton's method (IRLS), with a weak prior on the
 * bias too, so separable data keep finite weights. Returns [bias, slopes...].
 */
export function fitLogistic(points: readonly LabeledPoint[], ridge: number): number[] {
  const p = (points[0]?.z.length ?? 0) + 1;
  let wsum = 0;
  let ysum = 0;
  for (const pt of points) {
    wsum += pt.w;
    ysum += pt.w * pt.y;
  }
  // Start from the smoothed base rate so an all-negative history gives a small, finite logit.
  const base = (ysum + 0.5) / (wsum + 1);
  const w = new Array<number>(p).fill(0);
  w[0] = Math.log(base / (1 - base));
  if (points.length === 0) return w;
  for (let iter = 0; iter < 30; iter++) {
    const g = new Array<number>(p).fill(0);
    const h = Array.from({ length: p }, () => new Array<number>(p).fill(0));
    for (const pt of points) {
      const x = [1, ...pt.z];
      let s = 0;
      for (let j = 0; j < p; j++) s += w[j]! * x[j]!;
      const q = sigmoid(s);
      const r = pt.w * (pt.y - q);
      const v = pt.w * Math.max(q * (1 - q), 1e-6);
      for (let j = 0; j < p; j++) {
        g[j]! += r * x[j]!;
        const hj = h[j]!;
        for (let k = 0; k <= j; k++) hj[k]! += v * x[j]! * x[k]!;
      }
    }
    for (let j = 0; j < p; j++) {
      const lam = j === 0 ? 0.01 : ridge;
      g[j]! -= lam * w[j]!;
      h[j]![j]! += lam;
      for (let k = 0; k < j; k++) h[k]![j] = h[j]![k]!;
    }
    const step = solveSpd(h, g);
    if (!step) break;
    let maxStep = 0;
    for (let j = 0; j < p; j++) {
      w[j]! += step[j]!;
      maxStep = Math.max(maxStep, Math.abs(step[j]!));
    }
    if (maxStep < 1e-7) break;
  }
  return w;
}

/**
 * Kernel-weighted sums over the trials (the one loop behind every prediction): total weight, weight of
 * the events (sum w k y) and of the non-events (sum w k (1 - y)). Negligible kernels are skipped;
 * `skip` leaves one trial out.
 */
export function kernelSums(
  points: readonly LabeledPoint[],
  kernel: (z: readonly number[]) => number,
  skip = -1,
): { weight: number; positive: number; negative: number } {
  let weight = 0;
  let positive = 0;
  let negative = 0;
  for (let i = 0; i < points.length; i++) {
    if (i === skip) continue;
    const p = points[i]!;
    const k = p.w * kernel(p.z);
    if (k < 1e-9) continue;
    weight += k;
    positive += k * p.y;
    negative += k * (1 - p.y);
  }
  return { weight, positive, negative };
}

/** Solves A x = b for symmetric positive definite A by Cholesky; undefined if not SPD. */
export function solveSpd(a: readonly (readonly number[])[], b: readonly number[]): number[] | undefined {
  const n = b.length;
  const l = Array.from({ length: n }, () => new Array<number>(n).fill(0));
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = a[i]![j]!;
      for (let k = 0; k < j; k++) s -= l[i]![k]! * l[j]![k]!;
      if (i === j) {
        if (s <= 0) return undefined;
        l[i]![i] = Math.sqrt(s);
      } else l[i]![j] = s / l[j]![j]!;
    }
  }
  const y = new Array<number>(n).fill(0);
  for (let i = 0; i < n; i++) {
    let s = b[i]!;
    for (let k = 0; k < i; k++) s -= l[i]![k]! * y[k]!;
    y[i] = s / l[i]![i]!;
  }
  const x = new Array<number>(n).fill(0);
  for (let i = n - 1; i >= 0; i--) {
    let s = y[i]!;
    for (let k = i + 1; k < n; k++) s -= l[k]![i]! * x[k]!;
    x[i] = s / l[i]![i]!;
  }
  return x;
}

export function sigmoid(s: number): number {
  return s >= 0 ? 1 / (1 + Math.exp(-s)) : Math.exp(s) / (1 + Math.exp(s));
}

export function sqDist(a: readonly number[], b: readonly number[]): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i]! - (b[i] ?? 0);
    s += d * d;
  }
  return s;
}
