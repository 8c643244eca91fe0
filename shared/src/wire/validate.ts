// Validation of protocol messages against the generated field table (shared/generated/
// shadowvm-schema.js) plus the protocol's own rules. Runs on decoded frames and on everything
// about to be encoded, so neither side can put a value on the wire the other would refuse.
import type { FieldSchema, MessageSchema } from "../../generated/shadowvm-schema.js";
import { schema } from "../../generated/shadowvm-schema.js";
import { StressProfileError } from "../stress-profile.js";
import { MAX_NONCE_BYTES, MIN_NONCE_BYTES, PROOF_BYTES } from "./auth.js";
import { WireError } from "./errors.js";
import { stressProfileFromProto } from "./stress-profile-codec.js";

const PKG = "shadowvm.v1.";
/** Agent ids end up in file names and database keys. */
export const MAX_AGENT_ID_LENGTH = 128;

/** Oneofs that must have exactly one member set (others: at most one). */
const REQUIRED_ONEOFS: Record<string, string[]> = { [`${PKG}Envelope`]: ["body"] };

const INT_RANGES: Record<string, [number, number]> = {
  int32: [-(2 ** 31), 2 ** 31 - 1],
  sint32: [-(2 ** 31), 2 ** 31 - 1],
  sfixed32: [-(2 ** 31), 2 ** 31 - 1],
  uint32: [0, 2 ** 32 - 1],
  fixed32: [0, 2 ** 32 - 1],
  int64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  sint64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  sfixed64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  uint64: [0, Number.MAX_SAFE_INTEGER],
  fixed64: [0, Number.MAX_SAFE_INTEGER],
};
const FLOAT_MAX = 3.4028234663852886e38;

function invalid(path: string, rule: string, actual?: unknown, showActual = true): never {
  const suffix = showActual ? ` (actual: ${describe(actual)})` : "";
  throw new WireError("invalid", `invalid frame: ${path} ${rule}${suffix}`);
}

function describe(value: unknown): string {
  if (value === undefined) return "missing";
  if (value === null) return "null";
  if (typeof value === "number") return Number.isNaN(value) ? "NaN" : String(value);
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "string")
    return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
  if (value instanceof Uint8Array) return `${value.byteLength} bytes`;
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (typeof value === "object") return `an object (${value.constructor?.name ?? "null prototype"})`;
  return String(value);
}

type CompiledSchema = MessageSchema & { known: Set<string> };
const compiled = new Map<string, CompiledSchema>();

function messageSchema(type: string): CompiledSchema {
  let c = compiled.get(type);
  if (!c) {
    const m = schema.messages[type];
    if (!m) throw new Error(`wire schema has no message ${type}`);
    c = { ...m, known: new Set(m.fields.map((f) => f.name)) };
    compiled.set(type, c);
  }
  return c;
}

const enumSets = new Map<string, Set<number>>();
function enumValues(type: string): Set<number> {
  let set = enumSets.get(type);
  if (!set) {
    set = new Set(Object.values(schema.enums[type] ?? {}));
    enumSets.set(type, set);
  }
  return set;
}

function enumText(type: string): string {
  return Object.entries(schema.enums[type] ?? {})
    .map(([name, n]) => `${name} = ${n}`)
    .join(", ");
}

function checkScalar(type: string, value: unknown, path: string): void {
  switch (type) {
    case "double":
    case "float":
      if (typeof value !== "number" || !Number.isFinite(value))
        invalid(path, "must be a finite number", value);
      if (type === "float" && Math.abs(value) > FLOAT_MAX) invalid(path, "must fit a 32-bit float", value);
      return;
    case "bool":
      if (typeof value !== "boolean") invalid(path, "must be a boolean", value);
      return;
    case "string":
      if (typeof value !== "string") invalid(path, "must be a string", value);
      return;
    case "bytes":
      if (!(value instanceof Uint8Array)) invalid(path, "must be bytes (a Uint8Array)", value);
      return;
  }
  const range = INT_RANGES[type];
  if (!range) throw new Error(`wire schema: unsupported scalar type ${type} at ${path}`);
  const [min, max] = range;
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    const what = type.endsWith("64") ? "a safe integer" : "an integer";
    invalid(path, `must be ${what} in [${min}, ${max}] (${type})`, value);
  }
}

function checkValue(field: FieldSchema, value: unknown, path: string, depth: number): void {
  if (field.kind === "scalar") checkScalar(field.type, value, path);
  else if (field.kind === "enum") {
    if (typeof value !== "number" || !enumValues(field.type).has(value)) {
      invalid(path, `must be one of ${enumText(field.type)}`, value);
    }
  } else validateWireMessage(field.type, value, path, depth + 1);
}

/** Past this, a message object is cyclic or absurd; the schema itself nests only a few levels. */
const MAX_VALIDATE_DEPTH = 32;

/**
 * Checks `value` against message `type` (full name, e.g. "shadowvm.v1.VmInventory") and the
 * protocol rules; `path` prefixes error messages. Throws
 * WireError("invalid") naming the path, the rule and the actual value. Accepts decoded instances
 * and plain objects (unset fields may be missing or null; unknown keys are refused, which catches
 * camelCase slips like `agentId`).
 */
export function validateWireMessage(
  type: string,
  value: unknown,
  path = type.replace(PKG, ""),
  depth = 0,
): void {
  if (depth > MAX_VALIDATE_DEPTH) {
    throw new WireError(
      "too_deep",
      `invalid frame: ${path} nests deeper than ${MAX_VALIDATE_DEPTH} messages`,
    );
  }
  if (typeof value !== "object" || value === null || Array.isArray(value) || value instanceof Uint8Array) {
    invalid(path, `must be a ${type.replace(PKG, "")} message object`, value);
  }
  const msg = value as Record<string, unknown>;
  const ms = messageSchema(type);
  const known = ms.known;
  for (const key of Object.keys(msg)) {
    if (known.has(key) || key === "$unknowns" || Object.hasOwn(ms.oneofs, key)) continue;
    if (key.startsWith("_") && known.has(key.slice(1))) continue; // proto3 optional's virtual oneof
    invalid(path, `has unknown field "${key}" (known: ${[...known].join(", ")})`, undefined, false);
  }
  for (const field of ms.fields) {
    const v = msg[field.name];
    if (v === undefined || v === null) continue;
    const fpath = `${path}.${field.name}`;
    if (field.rule === "repeated") {
      if (!Array.isArray(v)) invalid(fpath, "must be an array", v);
      for (let i = 0; i < v.length; i++) checkValue(field, v[i], `${fpath}[${i}]`, depth);
    } else if (field.rule === "map") {
      if (typeof v !== "object" || Array.isArray(v)) invalid(fpath, "must be an object (a map)", v);
      for (const [k, item] of Object.entries(v)) {
        if (field.keyType !== "string" && field.keyType !== "bool" && !/^-?\d+$/.test(k)) {
          invalid(`${fpath}[${JSON.stringify(k)}]`, `key must be an integer (${field.keyType})`, k);
        }
        checkValue(field, item, `${fpath}[${JSON.stringify(k)}]`, depth);
      }
    } else checkValue(field, v, fpath, depth);
  }
  RULES[type]?.(msg, path);
  for (const [name, members] of Object.entries(ms.oneofs)) {
    const set = members.filter((m) => msg[m] !== undefined && msg[m] !== null);
    const required = REQUIRED_ONEOFS[type]?.includes(name) ?? false;
    if (set.length > 1 || (required && set.length === 0)) {
      const which = set.length === 0 ? "none is set" : `${set.join(" and ")} are set`;
      invalid(
        path,
        `must have exactly one ${name} (${which}; expected one of ${members.join(", ")})`,
        0,
        false,
      );
    }
  }
}

function bytesLength(msg: Record<string, unknown>, key: string, path: string, min: number, max: number) {
  const v = msg[key];
  const n = v instanceof Uint8Array ? v.byteLength : 0;
  if (n < min || n > max) {
    const expected = min === max ? `${min} bytes` : `${min}..${max} bytes`;
    invalid(`${path}.${key}`, `must be ${expected}`, v);
  }
}

function agentId(value: unknown, path: string): void {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
  const bad = /[\u0000-\u001f\u007f]/;
  if (
    typeof value !== "string" ||
    value.length === 0 ||
    value.length > MAX_AGENT_ID_LENGTH ||
    bad.test(value)
  ) {
    invalid(
      path,
      `must be a non-empty string of at most ${MAX_AGENT_ID_LENGTH} characters without control characters`,
      value,
    );
  }
}

const u64 = (v: unknown): number => (typeof v === "number" ? v : 0);

/** Rules beyond what the schema says, by message type. */
const RULES: Record<string, (msg: Record<string, unknown>, path: string) => void> = {
  [`${PKG}Envelope`]: (msg, path) => {
    agentId(msg["agent_id"], `${path}.agent_id`);
    const hello = msg["hello"] as Record<string, unknown> | null | undefined;
    if (hello && hello["agent_id"] !== msg["agent_id"]) {
      invalid(
        `${path}.hello.agent_id`,
        `must equal envelope.agent_id (${JSON.stringify(msg["agent_id"])})`,
        hello["agent_id"],
      );
    }
  },
  [`${PKG}Hello`]: (msg, path) => {
    agentId(msg["agent_id"], `${path}.agent_id`);
    if (u64(msg["protocol_version"]) < 1)
      invalid(`${path}.protocol_version`, "must be >= 1", msg["protocol_version"]);
    bytesLength(msg, "client_nonce", path, MIN_NONCE_BYTES, MAX_NONCE_BYTES);
  },
  [`${PKG}AuthChallenge`]: (msg, path) =>
    bytesLength(msg, "server_nonce", path, MIN_NONCE_BYTES, MAX_NONCE_BYTES),
  [`${PKG}EnrollRequest`]: (msg, path) => {
    if (!msg["enrollment_token"])
      invalid(`${path}.enrollment_token`, "must be a non-empty string", msg["enrollment_token"]);
  },
  [`${PKG}EnrollResult`]: (msg, path) => bytesLength(msg, "agent_secret", path, 16, 64),
  [`${PKG}AuthResponse`]: (msg, path) => bytesLength(msg, "proof", path, PROOF_BYTES, PROOF_BYTES),
  [`${PKG}AuthResult`]: (msg, path) => {
    if (msg["ok"]) bytesLength(msg, "server_proof", path, PROOF_BYTES, PROOF_BYTES);
  },
  [`${PKG}SeqRange`]: (msg, path) => {
    if (u64(msg["first_seq"]) > u64(msg["last_seq"])) {
      invalid(`${path}.first_seq`, `must be <= last_seq (${u64(msg["last_seq"])})`, msg["first_seq"]);
    }
  },
  [`${PKG}Sample`]: (msg, path) => {
    const scope = msg["scope"] ?? 0;
    if (scope === 0) invalid(`${path}.scope`, "must be SAMPLE_SCOPE_HOST or SAMPLE_SCOPE_VM", scope);
    if (scope === schema.enums[`${PKG}SampleScope`]?.["SAMPLE_SCOPE_VM"] && !msg["vm_uuid"]) {
      invalid(`${path}.vm_uuid`, "must be set for SAMPLE_SCOPE_VM", msg["vm_uuid"]);
    }
  },
  [`${PKG}StressProfile`]: (msg, path) => {
    try {
      stressProfileFromProto(msg);
    } catch (err) {
      if (!(err instanceof StressProfileError)) throw err;
      throw new WireError(
        "invalid",
        `invalid frame: ${path}: ${err.message.replace(/^stress profile: /, "")}`,
        {
          cause: err,
        },
      );
    }
  },
};

/** Validates a whole Envelope (decoded or about to be encoded). */
export function validateEnvelope(envelope: unknown): void {
  validateWireMessage(`${PKG}Envelope`, envelope, "envelope");
}
