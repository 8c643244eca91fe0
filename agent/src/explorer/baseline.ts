// The specification's stress-profile generator, line for line, plus the mapping of its result onto
// the StressProfile type. The generator consumes exactly five draws in the pseudocode's order
// (cpu, memory, io variation, corruption roll, latency roll), so a seed reproduces a profile.
import type { FaultKind, FaultSpec, StressProfile } from "@shadowvm/shared";
import type { RandomSource } from "./rng.js";
import type { ProfileBounds } from "./space.js";

/** What the specification's generator reads about the production VM (fractions of capacity). */
export interface ProductionVmData {
  average_cpu_usage: number;
  average_memory_usage: number;
  average_disk_io: number;
}

/** The pseudocode's return value, plus which faults were rolled (it only returns a flag). */
export interface BaselineStressProfile {
  cpu_load: number;
  memory_load: number;
  io_load: number;
  fault_injected: boolean;
  memory_corruption: boolean;
  network_latency_spike: boolean;
}

const uniform = (rng: RandomSource, lo: number, hi: number) => lo + (hi - lo) * rng.random();

/** generate_stress_profile from the specification. */
export function generateStressProfile(
  productionVmData: ProductionVmData,
  rng: RandomSource,
): BaselineStressProfile {
  const baseCpuLoad = productionVmData.average_cpu_usage * 1.2; // 20% above average
  const baseMemoryLoad = productionVmData.average_memory_usage * 1.1; // 10% above average
  const baseIoLoad = productionVmData.average_disk_io * 1.3; // 30% above average

  const cpuVariation = uniform(rng, -0.2, 0.2);
  const memoryVariation = uniform(rng, -0.1, 0.1);
  const ioVariation = uniform(rng, -0.15, 0.15);

  const finalCpuLoad = Math.max(0, baseCpuLoad + cpuVariation);
  const finalMemoryLoad = Math.max(0, baseMemoryLoad + memoryVariation);
  const finalIoLoad = Math.max(0, baseIoLoad + ioVariation);

  const memoryCorruption = rng.random() < 0.1; // 10% chance
  const networkLatencySpike = rng.random() < 0.05; // 5% chance

  return {
    cpu_load: finalCpuLoad,
    memory_load: finalMemoryLoad,
    io_load: finalIoLoad,
    fault_injected: memoryCorruption || networkLatencySpike,
    memory_corruption: memoryCorruption,
    network_latency_spike: networkLatencySpike,
  };
}

export interface BaselineMappingOptions {
  durationS: number;
  /** Rate given to an injected fault; the pseudocode has none (default 0.5). */
  faultRate?: number;
  /** Share of the run after which a fault starts (default 0.5: steady state first). */
  faultAtFraction?: number;
  /** Length of a latency spike as a share of the run (default 0.1); memory corruption persists. */
  spikeFraction?: number;
  /** Fault kinds the host can inject; a rolled fault of another kind is dropped. Default: both. */
  faultKinds?: readonly FaultKind[];
  /** When given, loads are clamped into these bounds (memory_load is a share of RAM, at most 1). */
  bounds?: ProfileBounds;
}

/** Maps the generator's result onto StressProfile: loads as is, network knobs 0, faults as FaultSpecs. */
export function baselineToStressProfile(
  raw: BaselineStressProfile,
  opts: BaselineMappingOptions,
): StressProfile {
  const rate = opts.faultRate ?? 0.5;
  const atS = Math.round(opts.durationS * (opts.faultAtFraction ?? 0.5));
  const allowed = new Set<FaultKind>(opts.faultKinds ?? ["memory_error", "net_latency_spike"]);
  const faults: FaultSpec[] = [];
  if (raw.memory_corruption && allowed.has("memory_error"))
    faults.push({ kind: "memory_error", rate, at_s: atS });
  if (raw.network_latency_spike && allowed.has("net_latency_spike")) {
    const spike = Math.max(1, Math.round(opts.durationS * (opts.spikeFraction ?? 0.1)));
    faults.push({ kind: "net_latency_spike", rate, at_s: atS, duration_s: spike });
  }
  const b = opts.bounds;
  const clampTo = (v: number, r: readonly [number, number] | undefined) =>
    r ? Math.min(r[1], Math.max(r[0], v)) : v;
  return {
    cpu_load: clampTo(raw.cpu_load, b?.cpu_load),
    memory_load: clampTo(raw.memory_load, b?.memory_load ?? [0, 1]),
    io_load: clampTo(raw.io_load, b?.io_load),
    net_latency_ms: 0,
    net_loss_pct: 0,
    faults,
    duration_s: opts.durationS,
  };
}
