// The search space the explorer works in. Every profile maps to two vectors:
// - u in [0,1]^D, the sampling coordinates (what designs and the random strategy draw uniformly);
// - z in [0,1]^D, the intensity features the model and the "stress" measure use.
// Continuous knobs map linearly onto their bounds (u = z). Each fault kind gets one coordinate:
// u < 0.5 means the fault is absent (z = 0); u in [0.5, 1] injects it with a rate spread linearly
// over the fault_rate bounds (z = normalized rate). Half the space is "fault off" per kind, so a
// uniform draw injects about half the allowed kinds, each at a uniform rate.
import type { FaultKind, FaultSpec, StressProfile } from "@shadowvm/shared";

export const CONTINUOUS_KNOBS = [
  "cpu_load",
  "memory_load",
  "io_load",
  "net_latency_ms",
  "net_loss_pct",
] as const;
export type ContinuousKnob = (typeof CONTINUOUS_KNOBS)[number];

export type Range = readonly [number, number];
export interface ProfileBounds {
  cpu_load: Range;
  memory_load: Range;
  io_load: Range;
  net_latency_ms: Range;
  net_loss_pct: Range;
  fault_rate: Range;
}

export interface SpaceOptions {
  bounds: ProfileBounds;
  faultKinds: readonly FaultKind[];
  /** Length of every shadow run. */
  durationS: number;
  /** Faults start at this share of the run, after the shadow has settled (default 0.1). */
  faultAtFraction?: number;
}

export type Dim =
  | { kind: "knob"; knob: ContinuousKnob; lo: number; hi: number }
  | { kind: "fault"; fault: FaultKind };

export class ProfileSpace {
  readonly dims: Dim[];
  readonly bounds: ProfileBounds;
  readonly faultKinds: readonly FaultKind[];
  readonly durationS: number;
  readonly faultAtS: number;

  constructor(opts: SpaceOptions) {
    this.bounds = opts.bounds;
    this.faultKinds = [...new Set(opts.faultKinds)];
    this.durationS = opts.durationS;
    this.faultAtS = Math.round(opts.durationS * (opts.faultAtFraction ?? 0.1));
    const [rlo, rhi] = opts.bounds.fault_rate;
    if (!(rhi > rlo) && this.faultKinds.length > 0) throw new Error("fault_rate bounds must have hi > lo");
    this.dims = [];
    for (const knob of CONTINUOUS_KNOBS) {
      const [lo, hi] = opts.bounds[knob];
      if (!(Number.isFinite(lo) && Number.isFinite(hi)) || hi < lo) throw new Error(`bad bounds for ${knob}`);
      // A knob pinned to one value (lo == hi) is no search dimension.
      if (hi > lo) this.dims.push({ kind: "knob", knob, lo, hi });
    }
    for (const fault of this.faultKinds) this.dims.push({ kind: "fault", fault });
  }

  get size(): number {
    return this.dims.length;
  }

  dimName(i: number): string {
    const d = this.dims[i]!;
    return d.kind === "knob" ? d.knob : `fault:${d.fault}`;
  }

  /** Sampling coordinates -> profile. */
  fromUnit(u: readonly number[]): StressProfile {
    const b = this.bounds;
    const p: StressProfile = {
      cpu_load: b.cpu_load[0],
      memory_load: b.memory_load[0],
      io_load: b.io_load[0],
      net_latency_ms: b.net_latency_ms[0],
      net_loss_pct: b.net_loss_pct[0],
      faults: [],
      duration_s: this.durationS,
    };
    const [rlo, rhi] = b.fault_rate;
    this.dims.forEach((d, i) => {
      const v = clamp01(u[i] ?? 0);
      if (d.kind === "knob") p[d.knob] = round6(d.lo + v * (d.hi - d.lo));
      else if (v >= 0.5) {
        const rate = round6(rlo + Math.min(1, (v - 0.5) * 2) * (rhi - rlo));
        p.faults.push({ kind: d.fault, rate, at_s: this.faultAtS });
      }
    });
    return p;
  }

  /** Intensity features of a profile, clamped to the bounds (profiles from other VMs may lie outside). */
  features(p: StressProfile): number[] {
    const [rlo, rhi] = this.bounds.fault_rate;
    return this.dims.map((d) => {
      if (d.kind === "knob") return clamp01((p[d.knob] - d.lo) / (d.hi - d.lo));
      const f = strongestFault(p.faults, d.fault);
      return f ? clamp01((f.rate - rlo) / (rhi - rlo)) : 0;
    });
  }

  /** Features -> sampling coordinates (fault present iff z > 0). */
  unitFromFeatures(z: readonly number[]): number[] {
    return this.dims.map((d, i) => {
      const v = clamp01(z[i] ?? 0);
      if (d.kind === "knob") return v;
      return v > 0 ? 0.5 + v / 2 : 0.25;
    });
  }

  profileFromFeatures(z: readonly number[]): StressProfile {
    return this.fromUnit(this.unitFromFeatures(z));
  }
}

/** "How much stress" a point is: Euclidean norm of its intensity features (0 = idle, no faults). */
export function stressOf(z: readonly number[]): number {
  let s = 0;
  for (const v of z) s += v * v;
  return Math.sqrt(s);
}

function strongestFault(faults: readonly FaultSpec[], kind: FaultKind): FaultSpec | undefined {
  let best: FaultSpec | undefined;
  for (const f of faults) if (f.kind === kind && (!best || f.rate > best.rate)) best = f;
  return best;
}

export function clamp01(v: number): number {
  return Number.isFinite(v) ? Math.min(1, Math.max(0, v)) : 0;
}

function round6(v: number): number {
  return Math.round(v * 1e6) / 1e6;
}
