// The risk model as pure functions (no I/O): the failure boundary of one signature in stress space
// from shadow runs, the production operating point's linear forecast, the probability of crossing
// the boundary within the horizon, the confidence from the evidence, and the time to failure.
// docs/risk-model.md explains the model in plain words; risk-engine.ts feeds it from DuckDB.
import { aboutHours, formatHours } from "@shadowvm/shared";

/** Stress dimensions with a production counterpart in telemetry (the operating point). */
export const FORECAST_DIMENSIONS = ["cpu_load", "memory_load", "io_load"] as const;
export type ForecastDimension = (typeof FORECAST_DIMENSIONS)[number];

/** Operating-point key in samples.extra for each forecastable stress dimension. */
export const OPERATING_POINT_KEY: Record<ForecastDimension, string> = {
  cpu_load: "op_avg_cpu",
  memory_load: "op_avg_memory",
  io_load: "op_avg_disk_io",
};

/** Dimensions without a production counterpart: boundaries are found, but cannot be forecast. */
export const OTHER_DIMENSIONS = ["net_latency_ms", "net_loss_pct"] as const;

/** One finished shadow run, reduced to what the boundary needs. */
export interface RunPoint {
  run_id: string;
  /** Stress values by dimension (cpu_load, memory_load, io_load, net_*, fault:<kind>). */
  values: Record<string, number>;
  /** true = the signature was seen in this run; false = the run finished ok. */
  failed: boolean;
}

export interface DimensionBoundary {
  dimension: string;
  /** Estimated stress value at which the signature appears (midpoint of the bracket). */
  boundary: number;
  /** Standard deviation of that estimate. */
  uncertainty: number;
  /** Lowest failing value, highest passing value below it. */
  lowest_failing: number;
  highest_passing_below: number | null;
  /** Passing runs at or above the lowest failing value: evidence against this dimension alone. */
  contradicting: number;
  /** Probability that a failing run is more stressed in this dimension than a passing one (AUC). */
  discrimination: number;
}

export interface BoundaryEstimate {
  runs: number;
  failing: number;
  passing: number;
  /** Per dimension, most discriminating first. */
  dimensions: DimensionBoundary[];
  /** The dominating dimension (first of `dimensions`), undefined without a failing run. */
  dominant: DimensionBoundary | undefined;
  failing_run_ids: string[];
}

/** Standard deviation of a uniform distribution over an interval of length 1. */
const UNIFORM_SD = 1 / Math.sqrt(12);

/** The failure boundary per dimension from runs of one VM (or fleet group) and one signature. */
export function estimateBoundary(runs: readonly RunPoint[]): BoundaryEstimate {
  const fails = runs.filter((r) => r.failed);
  const passes = runs.filter((r) => !r.failed);
  const dims = new Set<string>();
  for (const r of runs) for (const k of Object.keys(r.values)) dims.add(k);
  const value = (r: RunPoint, d: string) => r.values[d] ?? 0;
  const dimensions: DimensionBoundary[] = [];
  if (fails.length > 0) {
    for (const d of dims) {
      const f = fails.map((r) => value(r, d));
      const p = passes.map((r) => value(r, d));
      const lowest = Math.min(...f);
      if (lowest <= 0) continue; // failures without stress in d say nothing about a boundary in d
      const below = p.filter((v) => v < lowest);
      const highestBelow = below.length ? Math.max(...below) : null;
      const lower = highestBelow ?? 0;
      const above = p.filter((v) => v >= lowest);
      // Bracket [highest pass below, lowest fail]: the boundary is in there, uniformly as far as we
      // know. Passing runs above the lowest failing one widen it: the boundary is fuzzy up to them.
      let uncertainty = (lowest - lower) * UNIFORM_SD;
      if (above.length) uncertainty += (Math.max(...above) - lowest) / 2;
      let wins = 0;
      for (const fv of f) for (const pv of p) wins += fv > pv ? 1 : fv === pv ? 0.5 : 0;
      const discrimination = p.length ? wins / (f.length * p.length) : 0.5;
      dimensions.push({
        dimension: d,
        boundary: (lower + lowest) / 2,
        uncertainty,
        lowest_failing: lowest,
        highest_passing_below: highestBelow,
        contradicting: above.length,
        discrimination,
      });
    }
  }
  // Most discriminating first; among equals, the one whose boundary is tighter relative to its value.
  dimensions.sort(
    (a, b) =>
      b.discrimination - a.discrimination ||
      a.uncertainty / Math.max(a.boundary, 1e-9) - b.uncertainty / Math.max(b.boundary, 1e-9),
  );
  return {
    runs: runs.length,
    failing: fails.length,
    passing: passes.length,
    dimensions,
    dominant: dimensions[0],
    failing_run_ids: fails.map((r) => r.run_id),
  };
}

/** Least-squares line of one operating-point series, time in hours relative to "now" (t = 0). */
export interface Trend {
  /** Number of points. */
  n: number;
  /** Level at t = 0 (the fitted line, not the last raw point). */
  level: number;
  /** Change per hour. */
  slope: number;
  /** Residual standard deviation. */
  residual_sd: number;
  /** Mean of t and sum of squares of t (for the prediction interval). */
  mean_t: number;
  sxx: number;
  /** Newest point's time (hours, <= 0). */
  last_t: number;
  /** Oldest point's time (hours, <= last_t): the line rests on last_t - first_t hours of telemetry. */
  first_t: number;
}

/** Fits a line to (t hours, y) points (tests and fallbacks; the engine does it in DuckDB). */
export function fitTrend(points: readonly { t: number; y: number }[]): Trend | undefined {
  const n = points.length;
  if (n === 0) return undefined;
  const mt = points.reduce((s, p) => s + p.t, 0) / n;
  const my = points.reduce((s, p) => s + p.y, 0) / n;
  let sxx = 0;
  let sxy = 0;
  let syy = 0;
  for (const p of points) {
    sxx += (p.t - mt) ** 2;
    sxy += (p.t - mt) * (p.y - my);
    syy += (p.y - my) ** 2;
  }
  return trendFromMoments({
    n,
    mean_t: mt,
    mean_y: my,
    sxx,
    sxy,
    syy,
    last_t: Math.max(...points.map((p) => p.t)),
    first_t: Math.min(...points.map((p) => p.t)),
  });
}

/** The trend from regression moments (what DuckDB's regr_* aggregates give). */
export function trendFromMoments(m: {
  n: number;
  mean_t: number;
  mean_y: number;
  sxx: number;
  sxy: number;
  syy: number;
  last_t: number;
  first_t: number;
}): Trend {
  const slope = m.n >= 2 && m.sxx > 0 ? m.sxy / m.sxx : 0;
  const level = m.mean_y - slope * m.mean_t;
  const rss = Math.max(0, m.syy - slope * m.sxy);
  const residual_sd = m.n > 2 ? Math.sqrt(rss / (m.n - 2)) : m.n === 2 ? 0.05 : 0.1;
  return {
    n: m.n,
    level,
    slope,
    residual_sd,
    mean_t: m.mean_t,
    sxx: m.sxx,
    last_t: m.last_t,
    first_t: m.first_t,
  };
}

/** Forecast at t hours from now, with its prediction standard error. */
export function forecastAt(trend: Trend, t: number): { value: number; error: number } {
  const value = trend.level + trend.slope * t;
  const lever = trend.sxx > 0 ? (t - trend.mean_t) ** 2 / trend.sxx : 1;
  const error = trend.residual_sd * Math.sqrt(1 + 1 / trend.n + lever);
  return { value, error };
}

/** Standard normal CDF (Abramowitz-Stegun 7.1.26 on erf; |error| < 1.5e-7). */
export function normalCdf(z: number): number {
  const x = Math.abs(z) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * x);
  const y =
    1 -
    ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) *
      t *
      Math.exp(-x * x);
  return z >= 0 ? (1 + y) / 2 : (1 - y) / 2;
}

export interface CrossingEstimate {
  /** Probability that the operating point reaches the boundary within the horizon. */
  probability: number;
  /** Forecast at the worst point of the horizon, and its error. */
  forecast: number;
  forecast_error: number;
}

/**
 * P(max over [0, horizon] of the production level >= boundary). The line is monotone, so its
 * maximum is at one end; the gap to the boundary is judged against the forecast error and the
 * boundary's own uncertainty together (both taken as normal).
 */
export function crossingProbability(
  trend: Trend,
  boundary: number,
  boundaryUncertainty: number,
  horizonH: number,
): CrossingEstimate {
  const atEnd = forecastAt(trend, horizonH);
  const atNow = forecastAt(trend, 0);
  const worst = atEnd.value >= atNow.value ? atEnd : atNow;
  const sd = Math.max(Math.sqrt(worst.error ** 2 + boundaryUncertainty ** 2), 1e-3);
  const probability = normalCdf((worst.value - boundary) / sd);
  return { probability, forecast: worst.value, forecast_error: worst.error };
}

/** No time to failure is claimed further ahead than this many horizons. */
export const MAX_HORIZONS = 10;

/** A rise of less than this many standard errors of the slope is not told apart from noise. */
export const RISE_SIGNIFICANCE = 2;

/** Whether, and why, a time to failure is claimed for a line and a boundary. */
export type ReachBasis =
  /** The level is at or past the boundary: time to failure 0. */
  | "reached"
  /** The line rises toward the boundary and reaches it within what the telemetry supports. */
  | "on_trend"
  /** Flat or falling. */
  | "not_rising"
  /** Rising by less than RISE_SIGNIFICANCE standard errors of the slope. */
  | "within_noise"
  /** Rising, but it reaches the boundary further ahead than the horizon and than the telemetry
   * supports (max_extrapolation times the hours the line was fitted on). */
  | "beyond_telemetry"
  /** Rising, but it reaches the boundary more than 10 horizons ahead (however long the telemetry). */
  | "beyond_horizons";

export interface Reach {
  /** Hours until the line reaches the boundary: 0 when already there, null when none is claimed. */
  time_to_failure_h: number | null;
  basis: ReachBasis;
  /** Where the line alone reaches the boundary (hours ahead) when it rises but no time is claimed. */
  line_h: number | null;
  /** Hours of telemetry the line rests on. */
  span_h: number;
  /** Standard error of the slope (per hour). */
  slope_error: number;
}

/**
 * When the fitted line reaches the boundary, if that is a claim the telemetry supports. A straight
 * line is trusted through the horizon (the probability covers it too) and beyond it only up to
 * `maxExtrapolation` times the telemetry it was fitted on: four minutes of a VM settling after boot
 * say nothing about where it will be in nine hours. A slope within its own noise gives no time.
 */
export function timeToBoundary(
  trend: Trend,
  boundary: number,
  horizonH: number,
  maxExtrapolation: number,
): Reach {
  const span_h = Math.max(0, trend.last_t - trend.first_t);
  const slope_error = trend.sxx > 0 ? trend.residual_sd / Math.sqrt(trend.sxx) : Number.POSITIVE_INFINITY;
  const reach = { span_h, slope_error };
  if (trend.level >= boundary) return { ...reach, time_to_failure_h: 0, basis: "reached", line_h: null };
  if (!(trend.slope > 0)) return { ...reach, time_to_failure_h: null, basis: "not_rising", line_h: null };
  const line_h = (boundary - trend.level) / trend.slope;
  if (trend.slope < RISE_SIGNIFICANCE * slope_error)
    return { ...reach, time_to_failure_h: null, basis: "within_noise", line_h };
  if (line_h > Math.max(horizonH, maxExtrapolation * span_h))
    return { ...reach, time_to_failure_h: null, basis: "beyond_telemetry", line_h };
  if (line_h > MAX_HORIZONS * horizonH)
    return { ...reach, time_to_failure_h: null, basis: "beyond_horizons", line_h };
  return { ...reach, time_to_failure_h: line_h, basis: "on_trend", line_h: null };
}

/** The boundary's reach in an explanation: "reached in ~2 min", "not reached on the current trend", ... */
export function reachText(r: Reach, maxExtrapolation: number): string {
  switch (r.basis) {
    case "reached":
      return "already reached";
    case "on_trend":
      return `reached in ${aboutHours(r.time_to_failure_h ?? 0)}`;
    case "not_rising":
      return "not reached on the current trend";
    case "within_noise":
      return `not reached on the current trend (the rise is within its noise, ± ${r.slope_error.toFixed(4)}/h)`;
    case "beyond_telemetry":
      return `not claimed: the line reaches it in ${aboutHours(r.line_h ?? 0)}, further ahead than ${maxExtrapolation}x the ${formatHours(r.span_h)} of telemetry it rests on`;
    case "beyond_horizons":
      return `not claimed: the line reaches it in ${aboutHours(r.line_h ?? 0)}, more than ${MAX_HORIZONS} horizons ahead`;
  }
}

/** Why a VM below its boundary needs no change now (no time to failure claimed), for its operator. */
export function notHeadingText(r: Reach | undefined): string {
  if (r?.basis === "beyond_telemetry")
    return `rising, but on this line it reaches the boundary only in ${aboutHours(r.line_h ?? 0)}, further ahead than ${formatHours(r.span_h)} of telemetry can tell`;
  if (r?.basis === "beyond_horizons")
    return `rising, but on this line it reaches the boundary only in ${aboutHours(r.line_h ?? 0)}, more than ${MAX_HORIZONS} horizons ahead`;
  if (r?.basis === "within_noise") return "not rising toward the boundary beyond its noise";
  return "not rising toward the boundary";
}

export interface ConfidenceInputs {
  runs: number;
  failing: number;
  boundary_uncertainty: number;
  contradicting: number;
  forecast_error: number;
  samples: number;
  /** Fleet evidence (another VM's shadows): scaled down by this factor (1 = own shadows). */
  fleet_factor: number;
  /** How far the telemetry carries the claim: `extrapolationFactor`. */
  extrapolation: number;
}

export interface Confidence {
  value: number;
  level: "low" | "medium" | "high";
  factors: {
    runs: number;
    boundary: number;
    consistency: number;
    forecast: number;
    extrapolation: number;
    fleet: number;
  };
}

/** high >= 0.6, medium >= 0.3, low below. */
export function confidenceLevel(value: number): Confidence["level"] {
  return value >= 0.6 ? "high" : value >= 0.3 ? "medium" : "low";
}

/**
 * Evidence from a precursor seen on the production console, combined with what the boundary and
 * the forecast say as independent evidence (a noisy-OR): P' = 1 - (1 - P)(1 - w), and the same for
 * the confidence with its own weight. w = 0 leaves both as they are, w = 1 makes them certain.
 */
/**
 * How far a precursor warned in the shadows: of the runs that showed its line, the share that went
 * on to the failure (runs that failed otherwise are not counted either way). Null when the agent
 * did not say (agents before ProductionEvent.precursor_runs_with): weighed as before, in full.
 */
export function precursorPrecision(runsWith: number, runsWithout: number): number | null {
  if (!(runsWith > 0)) return null;
  return runsWith / (runsWith + Math.max(0, runsWithout));
}

export function withPrecursor(
  probability: number,
  confidence: number,
  weight: number,
  confidenceWeight: number,
): { probability: number; confidence: number; level: Confidence["level"] } {
  // p + (1 - p) w is 1 - (1 - p)(1 - w), exact at w = 0.
  const p = Math.min(1, probability + (1 - probability) * weight);
  const c = Math.min(1, confidence + (1 - confidence) * confidenceWeight);
  return { probability: p, confidence: c, level: confidenceLevel(c) };
}

/** Confidence from the evidence: each factor is in 0..1, and they multiply. */
export function confidenceOf(c: ConfidenceInputs): Confidence {
  const runs = c.failing > 0 ? 1 - Math.exp(-c.runs / 6) : 0;
  const boundary = Math.exp(-c.boundary_uncertainty / 0.15);
  const consistency = c.runs > 0 ? Math.max(0, 1 - (2 * c.contradicting) / c.runs) : 0;
  const forecast = Math.exp(-c.forecast_error / 0.15) * Math.min(1, c.samples / 10);
  const value = runs * boundary * consistency * forecast * c.extrapolation * c.fleet_factor;
  return {
    value,
    level: confidenceLevel(value),
    factors: { runs, boundary, consistency, forecast, extrapolation: c.extrapolation, fleet: c.fleet_factor },
  };
}

/**
 * How far the telemetry carries the claim, in 0..1: what the claim rests on is the line up to the
 * time to failure when one is claimed, else through the whole horizon ("no failure within 24 h"
 * needs the line 24 h ahead); the line carries `maxExtrapolation` times the hours it was fitted on.
 * Four minutes of telemetry back a failure 3 minutes away fully, and "none within the hour" at 0.3.
 */
export function extrapolationFactor(reach: Reach, horizonH: number, maxExtrapolation: number): number {
  const ahead = Math.min(horizonH, reach.time_to_failure_h ?? horizonH);
  return ahead <= 0 ? 1 : Math.min(1, (maxExtrapolation * reach.span_h) / ahead);
}
