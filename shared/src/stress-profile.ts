// The stress profile: how hard, and in which way, one shadow is pushed. Its JSON form uses the
// specification's snake_case keys and is what the CLI, the explorer's oracle protocol and the API
// speak; the protobuf `StressProfile` message carries the same fields on the wire.

/** Fault kinds a profile may ask for. A driver's capability flags say which a host can do. */
export const FAULT_KINDS = [
  "disk_io_error",
  "memory_error",
  "net_latency_spike",
  "nmi",
  "process_kill",
  "disk_fill",
  "clock_jump",
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export interface FaultSpec {
  kind: FaultKind;
  /** Intensity in [0, 1]: error probability, share of free space, size of the jump, ... */
  rate: number;
  /** Seconds after the shadow resumed at which the fault starts. */
  at_s: number;
  /** How long the fault lasts; absent = until the run ends. */
  duration_s?: number;
}

export interface StressProfile {
  /** Guest CPU demand as a multiple of what it is given (1 = exactly its share, 2 = half starved). */
  cpu_load: number;
  /** Share of guest RAM the balloon leaves in use (0..1). */
  memory_load: number;
  /** Guest I/O demand as a multiple of its throttled allowance. */
  io_load: number;
  net_latency_ms: number;
  net_loss_pct: number;
  faults: FaultSpec[];
  /** How long the shadow runs under this profile. */
  duration_s: number;
}

/** Default search bounds of the explorer (issue 6); configurable. */
export const DEFAULT_PROFILE_BOUNDS = {
  cpu_load: [0, 2],
  memory_load: [0, 1],
  io_load: [0, 3],
  net_latency_ms: [0, 2000],
  net_loss_pct: [0, 50],
  fault_rate: [0, 1],
} as const;
