// The stress profile: how hard, and in which way, one shadow is pushed. Its JSON form uses the
// specification's snake_case keys and is what the CLI, the explorer's oracle protocol and the API
// speak; the protobuf `StressProfile` message carries the same fields on the wire.
import { ShadowvmError } from "./errors.js";

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

/**
 * A stress profile (JSON or protobuf form) broke a rule (origin "stress-profile", code "invalid");
 * the message names the key, the rule and the actual value.
 */
export class StressProfileError extends ShadowvmError {
  /** The offending key, e.g. "cpu_load" or "faults[2].kind"; "" for the profile as a whole. */
  readonly key: string;
  constructor(key: string, message: string) {
    super("stress-profile", "invalid", message);
    this.name = "StressProfileError";
    this.key = key;
  }
}

const PROFILE_KEYS = [
  "cpu_load",
  "memory_load",
  "io_load",
  "net_latency_ms",
  "net_loss_pct",
  "faults",
  "duration_s",
] as const;
const FAULT_KEYS = ["kind", "rate", "at_s", "duration_s"] as const;
/** More faults than this in one run is a mistake, not a profile. */
export const MAX_FAULTS_PER_PROFILE = 64;

/** How a value shows up in an error message: short, and unambiguous about its type. */
function describeValue(value: unknown): string {
  if (value === undefined) return "missing";
  if (typeof value === "number") return Number.isNaN(value) ? "NaN" : String(value);
  if (typeof value === "bigint") return `${value}n`;
  if (Array.isArray(value)) return `an array of ${value.length}`;
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function fail(key: string, rule: string, actual: unknown): never {
  throw new StressProfileError(key, `stress profile: ${key} ${rule} (actual: ${describeValue(actual)})`);
}

type Bound = { min: number; minInclusive: boolean; max?: number };
const AT_LEAST_0: Bound = { min: 0, minInclusive: true };
const ABOVE_0: Bound = { min: 0, minInclusive: false };
const UNIT: Bound = { min: 0, minInclusive: true, max: 1 };

function boundText(b: Bound): string {
  if (b.max !== undefined) return `in [${b.min}, ${b.max}]`;
  return b.minInclusive ? `>= ${b.min}` : `> ${b.min}`;
}

function number(obj: Record<string, unknown>, key: string, path: string, bound: Bound): number {
  const value = obj[key];
  const ok =
    typeof value === "number" &&
    Number.isFinite(value) &&
    (bound.minInclusive ? value >= bound.min : value > bound.min) &&
    (bound.max === undefined || value <= bound.max);
  if (!ok) fail(path, `must be a number ${boundText(bound)}`, value);
  return value as number;
}

function plainObject(value: unknown, path: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new StressProfileError(
      path,
      `stress profile: ${path || "the profile"} must be an object (actual: ${describeValue(value)})`,
    );
  }
  return value as Record<string, unknown>;
}

function noUnknownKeys(obj: Record<string, unknown>, allowed: readonly string[], prefix: string): void {
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) {
      throw new StressProfileError(
        prefix + key,
        `stress profile: unknown key "${prefix}${key}" (allowed: ${allowed.join(", ")})`,
      );
    }
  }
}

function faultFromJson(value: unknown, path: string): FaultSpec {
  const obj = plainObject(value, path);
  noUnknownKeys(obj, FAULT_KEYS, `${path}.`);
  const kind = obj["kind"];
  if (typeof kind !== "string" || !(FAULT_KINDS as readonly string[]).includes(kind)) {
    fail(`${path}.kind`, `must be one of ${FAULT_KINDS.join(", ")}`, kind);
  }
  const fault: FaultSpec = {
    kind: kind as FaultKind,
    rate: number(obj, "rate", `${path}.rate`, UNIT),
    at_s: number(obj, "at_s", `${path}.at_s`, AT_LEAST_0),
  };
  // Absent (or null) = the fault lasts until the run ends.
  if (obj["duration_s"] !== undefined && obj["duration_s"] !== null) {
    fault.duration_s = number(obj, "duration_s", `${path}.duration_s`, ABOVE_0);
  }
  return fault;
}

/**
 * Validates a stress profile in its JSON form (an object, or JSON text) and returns a fresh copy
 * with only the known keys. Throws StressProfileError naming the key, the rule and the value.
 * `faults` may be left out (no faults); every other key is required.
 */
export function stressProfileFromJson(value: unknown): StressProfile {
  if (typeof value === "string") {
    try {
      value = JSON.parse(value);
    } catch (err) {
      throw new StressProfileError("", `stress profile: not valid JSON (${(err as Error).message})`);
    }
  }
  const obj = plainObject(value, "");
  noUnknownKeys(obj, PROFILE_KEYS, "");
  // Checked in the specification's key order, so the first error reported is the first key's.
  return {
    cpu_load: number(obj, "cpu_load", "cpu_load", AT_LEAST_0),
    memory_load: number(obj, "memory_load", "memory_load", UNIT),
    io_load: number(obj, "io_load", "io_load", AT_LEAST_0),
    net_latency_ms: number(obj, "net_latency_ms", "net_latency_ms", AT_LEAST_0),
    net_loss_pct: number(obj, "net_loss_pct", "net_loss_pct", { min: 0, minInclusive: true, max: 100 }),
    faults: faultsFromJson(obj["faults"]),
    duration_s: number(obj, "duration_s", "duration_s", ABOVE_0),
  };
}

function faultsFromJson(value: unknown): FaultSpec[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value) || value.length > MAX_FAULTS_PER_PROFILE) {
    fail("faults", `must be an array of at most ${MAX_FAULTS_PER_PROFILE} faults`, value);
  }
  return value.map((f, i) => faultFromJson(f, `faults[${i}]`));
}

/**
 * The JSON form of a profile: validated, keys in the specification's order, a fault's duration_s
 * left out when it lasts until the run ends. JSON.stringify of the result is canonical.
 */
export function stressProfileToJson(profile: StressProfile): StressProfile {
  return stressProfileFromJson(profile);
}
