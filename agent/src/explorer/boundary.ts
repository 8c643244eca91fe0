// Failure-boundary estimates: for each signature, the least stress (Euclidean norm of the intensity
// features) at which it becomes likely. The estimate is the signature's monotone conjunction
// (conjunction.ts: which knobs it needs and from which level), with a bootstrap interval over the
// runs. Next to it, for comparison, the least-stress point where the signature's probability model
// says p >= 0.5 (found by scanning rays from the idle origin and shrinking coordinates while
// p >= 0.5), and the least stress actually seen.
import { percentile, type StressProfile } from "@shadowvm/shared";
import { fitConjunction } from "./conjunction.js";
import { fitSelectedModel, type LabeledPoint } from "./model.js";
import type { Rng } from "./rng.js";
import { type ProfileSpace, stressOf } from "./space.js";

export interface SignatureBoundary {
  /** Own trials that showed the signature. */
  trials_with_signature: number;
  /** Least stress among own trials that showed it (an upper bound on the boundary). */
  observed_min_stress: number;
  observed_min_profile: StressProfile;
  /** Estimated least stress at which the signature shows: the norm of what it needs. */
  min_stress: number;
  /** The least-stress profile: every needed knob at its threshold, everything else idle. */
  min_stress_profile: StressProfile;
  /** What the signature needs, in profile units (knob name, or `fault:<kind>` for a fault's rate).
   * `at_least` is the estimate, inside `between`: [the highest value of a run without the signature
   * that this knob alone kept out (0 if none), the least value of a run with it].
   * `established` is false when the runs fit as well without this knob (another knob could stand in
   * for it); a run at the least-stress profile settles it. `stand_ins`, only when not established:
   * the knobs that could stand in for it (empty: the runs fit as well without it at all). */
  needs: {
    knob: string;
    at_least: number;
    between: [number, number];
    established: boolean;
    stand_ins?: string[];
  }[];
  /** Own runs without the signature that meet all of `needs` (missed detections, or a region the
   * thresholds describe only roughly). */
  runs_meeting_needs_without_it: number;
  /** Where the least stress lies, given the runs (null when not computed): from the 10% quantile,
   * over bootstrap resamples of the runs, of the least stress with every needed knob at the bottom
   * of its bracket, to the 90% quantile with every needed knob at the top (or another fit's knobs,
   * if they need more), but not above observed_min_stress; it always contains min_stress. On the
   * benchmark it holds the true least stress in 93-97% of estimates at budgets 12-50
   * (docs/explorer.md, point 4). */
  min_stress_interval: [number, number] | null;
  /** Share of bootstrap resamples that still contain the signature. */
  bootstrap_support: number | null;
  /** The probability model's least-stress point with p >= 0.5; null when it puts p >= 0.5 nowhere. */
  model_min_stress: number | null;
}

export type Boundary = Record<string, SignatureBoundary>;

/**
 * One need in a few characters for logs, e.g. `memory_load>=0.961`; `?` marks it not established,
 * followed by the knobs that could stand in for it, e.g. `fault:clock_jump>=0.948?(or fault:nmi/cpu_load)`.
 */
export function needLabel(n: SignatureBoundary["needs"][number]): string {
  const label = `${n.knob}>=${Math.round(n.at_least * 1000) / 1000}`;
  if (n.established) return label;
  return n.stand_ins?.length ? `${label}?(or ${n.stand_ins.join("/")})` : `${label}?`;
}

export interface MinStressResult {
  z: number[];
  stress: number;
}

/** Least-stress point with p >= threshold under `prob`; undefined if no scanned ray reaches it. */
export function minStressPoint(
  prob: (z: readonly number[]) => number,
  dim: number,
  seeds: readonly (readonly number[])[],
  rng: Rng,
  opts: { threshold?: number; randomRays?: number; steps?: number } = {},
): MinStressResult | undefined {
  const thr = opts.threshold ?? 0.5;
  const steps = opts.steps ?? 24;
  const dirs: number[][] = [];
  for (const s of seeds) if (stressOf(s) > 1e-9) dirs.push([...s]);
  const nRandom = opts.randomRays ?? 48;
  for (let r = 0; r < nRandom; r++) {
    const v = new Array<number>(dim).fill(0);
    if (r % 2 === 0) {
      // Sparse rays: failures often hinge on one to three knobs.
      const k = 1 + rng.int(Math.min(3, dim));
      for (let j = 0; j < k; j++) v[rng.int(dim)] = 0.2 + rng.random();
    } else for (let j = 0; j < dim; j++) v[j] = rng.random();
    dirs.push(v);
  }
  let best: MinStressResult | undefined;
  for (const d of dirs) {
    const n = stressOf(d);
    if (n < 1e-9) continue;
    const v = d.map((x) => x / n);
    let tMax = Infinity;
    for (const x of v) if (x > 1e-12) tMax = Math.min(tMax, 1 / x);
    if (!Number.isFinite(tMax)) continue;
    if (best && best.stress <= 0) break;
    const limit = best ? Math.min(tMax, best.stress) : tMax;
    let prev = 0;
    let hit = -1;
    for (let i = 1; i <= steps; i++) {
      const t = (limit * i) / steps;
      if (prob(v.map((x) => x * t)) >= thr) {
        hit = t;
        break;
      }
      prev = t;
    }
    if (hit < 0) continue;
    let lo = prev;
    let hi = hit;
    for (let i = 0; i < 8; i++) {
      const mid = (lo + hi) / 2;
      if (prob(v.map((x) => x * mid)) >= thr) hi = mid;
      else lo = mid;
    }
    if (!best || hi < best.stress) best = { z: v.map((x) => x * hi), stress: hi };
  }
  if (!best) return undefined;
  // Polish: lower each coordinate as far as the probability allows.
  const z = [...best.z];
  for (let pass = 0; pass < 2; pass++) {
    for (let j = 0; j < dim; j++) {
      if (z[j]! <= 0) continue;
      const at = (val: number) => {
        const y = [...z];
        y[j] = val;
        return prob(y);
      };
      if (at(0) >= thr) {
        z[j] = 0;
        continue;
      }
      let lo = 0;
      let hi = z[j]!;
      for (let i = 0; i < 8; i++) {
        const mid = (lo + hi) / 2;
        if (at(mid) >= thr) hi = mid;
        else lo = mid;
      }
      z[j] = hi;
    }
  }
  return { z, stress: stressOf(z) };
}

export interface BoundaryInput {
  space: ProfileSpace;
  /** Own trials' features and signature sets. */
  own: { z: number[]; signatures: readonly string[]; profile: StressProfile }[];
  /** Prior trials (other VMs), with weights. */
  priors: { z: number[]; signatures: readonly string[]; w: number }[];
  rng: Rng;
  /** Bootstrap refits for the interval (0 = none). */
  bootstrap?: number;
}

export function estimateBoundaries(input: BoundaryInput): Boundary {
  const { space, own, priors } = input;
  const sigs = [...new Set(own.flatMap((t) => t.signatures))].sort();
  const all = [
    ...own.map((t) => ({ z: t.z, signatures: t.signatures, w: 1 })),
    ...priors.map((t) => ({ z: t.z, signatures: t.signatures, w: t.w })),
  ];
  const out: Boundary = {};
  for (const sig of sigs) {
    const positives = own.filter((t) => t.signatures.includes(sig));
    let obs = positives[0]!;
    for (const p of positives) if (stressOf(p.z) < stressOf(obs.z)) obs = p;
    // Own runs only: what similar VMs need says little about this VM's thresholds.
    const conjunction = (runs: readonly { z: number[]; signatures: readonly string[] }[]) =>
      fitConjunction(
        runs.filter((r) => r.signatures.includes(sig)).map((r) => r.z),
        runs.filter((r) => !r.signatures.includes(sig)).map((r) => r.z),
      );
    const fit = conjunction(own)!;
    const estimate = stressOf(fit.thresholds);
    const observed = stressOf(obs.z);
    let interval: [number, number] | null = null;
    let support: number | null = null;
    const b = input.bootstrap ?? 0;
    if (b > 0) {
      // Per resample of the runs, the least and the most stress the runs leave possible: every
      // needed knob at the bottom of its bracket (the runs without the signature), and at the top
      // (the least values with it) together with every knob another fit the runs allow names.
      // Few runs often cannot tell which knobs a failure needs (with positives only at full
      // stress, any one knob fits), and it may need all of them at once.
      const lows: number[] = [];
      const highs: number[] = [];
      for (let i = 0; i < b; i++) {
        const r = conjunction(own.map(() => own[input.rng.int(own.length)]!));
        if (!r) continue;
        lows.push(stressOf(r.brackets.map((x) => x.seenWithout)));
        const top = r.brackets.map((x) => x.seenWith);
        highs.push(stressOf(top.map((v, j) => Math.max(v, ...r.alternatives.map((alt) => alt[j]!)))));
      }
      support = lows.length / b;
      if (lows.length > 0) {
        // A resample without the least-stress run can put the top above it; that run itself shows
        // the failure needs no more.
        interval = [
          round4(Math.min(estimate, percentile(lows, 0.1)!)),
          round4(Math.min(observed, Math.max(estimate, percentile(highs, 0.9)!))),
        ];
      }
    }
    const model = fitSelectedModel(
      all.map((r): LabeledPoint => ({ z: r.z, y: r.signatures.includes(sig) ? 1 : 0, w: r.w })),
      space.size,
    );
    const modelPoint = minStressPoint(
      (z) => model.predict(z).mean,
      space.size,
      positives.map((p) => p.z),
      input.rng,
    );
    const profile = space.profileFromFeatures(fit.thresholds);
    out[sig] = {
      trials_with_signature: positives.length,
      observed_min_stress: round4(observed),
      observed_min_profile: obs.profile,
      min_stress: round4(estimate),
      min_stress_profile: profile,
      needs: fit.needed.map((j, i) => {
        const established = fit.established.includes(j);
        return {
          knob: space.dimName(j),
          at_least: profileValue(space, j, fit.thresholds[j]!),
          between: [
            profileValue(space, j, fit.brackets[j]!.seenWithout),
            profileValue(space, j, fit.brackets[j]!.seenWith),
          ] as [number, number],
          established,
          ...(established ? {} : { stand_ins: fit.standIns[i]!.map((k) => space.dimName(k)) }),
        };
      }),
      runs_meeting_needs_without_it: fit.negativesInside,
      min_stress_interval: interval,
      bootstrap_support: support,
      model_min_stress: modelPoint ? round4(modelPoint.stress) : null,
    };
  }
  return out;
}

/** Coordinate j's intensity in profile units: the knob's value, or the fault's rate (0 = absent). */
function profileValue(space: ProfileSpace, j: number, intensity: number): number {
  const z = new Array<number>(space.size).fill(0);
  z[j] = intensity;
  const profile = space.profileFromFeatures(z);
  const d = space.dims[j]!;
  if (d.kind === "knob") return profile[d.knob];
  return profile.faults.find((f) => f.kind === d.fault)?.rate ?? 0;
}

function round4(v: number): number {
  return Math.round(v * 1e4) / 1e4;
}
