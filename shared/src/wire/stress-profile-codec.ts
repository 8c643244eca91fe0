// Conversion between the StressProfile interface (shared/src/stress-profile.ts, the JSON form)
// and the protobuf `shadowvm.v1.StressProfile` message. Both directions validate with the JSON
// form's rules, so a profile is equally valid, or invalid, in either form.
import { shadowvm } from "../../generated/shadowvm.js";
import {
  FAULT_KINDS,
  type FaultKind,
  type StressProfile,
  StressProfileError,
  stressProfileFromJson,
} from "../stress-profile.js";

const FaultKindEnum = shadowvm.v1.FaultKind;

/** "disk_io_error" <-> FAULT_KIND_DISK_IO_ERROR, by name, so enum numbering can't drift. */
function enumName(kind: FaultKind): string {
  return `FAULT_KIND_${kind.toUpperCase()}`;
}

export function faultKindToProto(kind: FaultKind): shadowvm.v1.FaultKind {
  const value = (FaultKindEnum as unknown as Record<string, number>)[enumName(kind)];
  if (value === undefined) {
    throw new StressProfileError("kind", `stress profile: fault kind "${kind}" has no protobuf FaultKind`);
  }
  return value;
}

const KIND_BY_NUMBER = new Map<number, FaultKind>(FAULT_KINDS.map((k) => [faultKindToProto(k), k]));

/** The fault kind of a protobuf FaultKind number, or undefined for UNSPECIFIED and unknown values. */
export function faultKindFromProto(value: number): FaultKind | undefined {
  return KIND_BY_NUMBER.get(value);
}

/** Validates a profile (JSON rules) and builds the protobuf message. */
export function stressProfileToProto(profile: StressProfile): shadowvm.v1.StressProfile {
  const p = stressProfileFromJson(profile);
  return shadowvm.v1.StressProfile.create({
    cpu_load: p.cpu_load,
    memory_load: p.memory_load,
    io_load: p.io_load,
    net_latency_ms: p.net_latency_ms,
    net_loss_pct: p.net_loss_pct,
    faults: p.faults.map((f) =>
      shadowvm.v1.Fault.create({
        kind: faultKindToProto(f.kind),
        rate: f.rate,
        at_s: f.at_s,
        ...(f.duration_s === undefined ? {} : { duration_s: f.duration_s }),
      }),
    ),
    duration_s: p.duration_s,
  });
}

/**
 * The StressProfile of a protobuf message (a decoded instance or a plain object), validated with
 * the JSON rules. Absent proto3 numbers count as 0; an unknown fault kind number is reported
 * against the allowed kinds.
 */
export function stressProfileFromProto(message: shadowvm.v1.StressProfile.$Properties): StressProfile {
  const faults = (message.faults ?? []).map((f, i): Record<string, unknown> => {
    const kindNumber = f?.kind ?? 0;
    const kind = faultKindFromProto(kindNumber);
    if (kind === undefined) {
      const allowed = FAULT_KINDS.map((k) => `${k} (${enumName(k)} = ${faultKindToProto(k)})`).join(", ");
      throw new StressProfileError(
        `faults[${i}].kind`,
        `stress profile: faults[${i}].kind must be one of ${allowed} (actual: ${kindNumber})`,
      );
    }
    const fault: Record<string, unknown> = { kind, rate: f?.rate ?? 0, at_s: f?.at_s ?? 0 };
    if (f?.duration_s !== undefined && f.duration_s !== null) fault["duration_s"] = f.duration_s;
    return fault;
  });
  return stressProfileFromJson({
    cpu_load: message.cpu_load ?? 0,
    memory_load: message.memory_load ?? 0,
    io_load: message.io_load ?? 0,
    net_latency_ms: message.net_latency_ms ?? 0,
    net_loss_pct: message.net_loss_pct ?? 0,
    faults,
    duration_s: message.duration_s ?? 0,
  });
}
