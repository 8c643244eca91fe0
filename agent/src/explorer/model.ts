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
    let a = this.c * m;
    let b = this.c * (1 - m);
    let evidence = 0;
    for (let i = 0; i < this.points.length; i++) {
      if (i === skip) continue;
      const p = this.points[i]!;
      const k = p.w * this.kernel(z, p.z);
      if (k < 1e-9) continue;
      evidence += k;
      if (p.y > 0) a += k * p.y;
      if (p.y < 1) b += k * (1 - p.y);
    }
    a = Math.max(a, 1e-6);
    b = Math.max(b, 1e-6);
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
  const grid = WIDTHS.map((f) => f * Math.sqrt(Math.max(1, dim)));
  const positives = points.filter((p) => p.y > 0.5).length;
  // With no contrast in the labels every width explains them equally; take a middle one.
  if (positives === 0 || positives === points.length || points.length < 4) return grid[2]!;
  const trend = fitLogistic(points, 1);
  let best = grid[2]!;
  let bestLl = -Infinity;
  for (const l of grid) {
    const ll = new KernelBetaModel(points, { lengthscale: l }, trend).looLogLik();
    if (ll > bestLl + 1e-9) {
      bestLl = ll;
      best = l;
    }
  }
  return best;
}

/**
 * Fits a model choosing width and relevance mix by leave-one-out likelihood: an isotropic kernel
 * when nothing stands out, a relevance-weighted one when the trend singles out a few knobs (which
 * is what lets the least-stress search drop knobs that do not matter).
 */
export function fitSelectedModel(points: readonly LabeledPoint[], dim: number): KernelBetaModel {
  const trend = fitLogistic(points, 1);
  const positives = points.filter((p) => p.y > 0.5).length;
  const base = WIDTHS.map((f) => f * Math.sqrt(Math.max(1, dim)));
  if (positives === 0 || positives === points.length || points.length < 4) {
    return new KernelBetaModel(points, { lengthscale: base[2]! }, trend);
  }
  let best: KernelBetaModel | undefined;
  let bestLl = -Infinity;
  for (const relevance of [0, 0.6, 0.95]) {
    for (const l of base) {
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

/** Weighted, ridge-penalized logistic regression by Newton's method. Returns [bias, slopes...]. */
export function fitLogistic(points: readonly LabeledPoint[], ridge: number): number[] {
  const d = points[0]?.z.length ?? 0;
  const p = d + 1;
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
    // Weak prior on the bias too, so separable data keep finite weights.
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

/**
 * Expected number of signatures per trial: a Gamma-Poisson posterior whose prior mean is a
 * log-linear trend (Poisson regression), updated by kernel-weighted counts. Its standard deviation
 * is large where the trend predicts many signatures and few trials were run: the optimistic
 * "unseen failure modes" term of the discovery score.
 */
export class KernelCountModel {
  readonly trendWeights: number[];
  private readonly inv2l2: number;
  private readonly c: number;

  constructor(
    private readonly points: readonly LabeledPoint[],
    opts: { lengthscale: number; priorStrength?: number; ridge?: number },
  ) {
    this.inv2l2 = 1 / (2 * opts.lengthscale * opts.lengthscale);
    this.c = opts.priorStrength ?? 1;
    this.trendWeights = fitPoisson(points, opts.ridge ?? 1);
  }

  trend(z: readonly number[]): number {
    const w = this.trendWeights;
    let s = w[0]!;
    for (let i = 0; i < z.length; i++) s += (w[i + 1] ?? 0) * z[i]!;
    return Math.exp(Math.min(5, s));
  }

  predict(z: readonly number[]): { mean: number; sd: number } {
    const m = this.trend(z);
    let a = this.c * m;
    let b = this.c;
    for (const p of this.points) {
      const k = p.w * Math.exp(-sqDist(z, p.z) * this.inv2l2);
      if (k < 1e-9) continue;
      a += k * p.y;
      b += k;
    }
    return { mean: a / b, sd: Math.sqrt(Math.max(a, 1e-9)) / b };
  }
}

/** Weighted ridge Poisson regression (log link) by damped Newton. Returns [bias, slopes...]. */
export function fitPoisson(points: readonly LabeledPoint[], ridge: number): number[] {
  const d = points[0]?.z.length ?? 0;
  const p = d + 1;
  let wsum = 0;
  let ysum = 0;
  for (const pt of points) {
    wsum += pt.w;
    ysum += pt.w * pt.y;
  }
  const w = new Array<number>(p).fill(0);
  w[0] = Math.log((ysum + 0.5) / (wsum + 1));
  if (points.length === 0) return w;
  for (let iter = 0; iter < 30; iter++) {
    const g = new Array<number>(p).fill(0);
    const h = Array.from({ length: p }, () => new Array<number>(p).fill(0));
    for (const pt of points) {
      const x = [1, ...pt.z];
      let s = 0;
      for (let j = 0; j < p; j++) s += w[j]! * x[j]!;
      const mu = Math.exp(Math.min(8, s));
      const r = pt.w * (pt.y - mu);
      for (let j = 0; j < p; j++) {
        g[j]! += r * x[j]!;
        const hj = h[j]!;
        for (let k = 0; k <= j; k++) hj[k]! += pt.w * mu * x[j]! * x[k]!;
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
    for (const v of step) maxStep = Math.max(maxStep, Math.abs(v));
    const damp = maxStep > 2 ? 2 / maxStep : 1;
    for (let j = 0; j < p; j++) w[j]! += damp * step[j]!;
    if (maxStep < 1e-7) break;
  }
  return w;
}
