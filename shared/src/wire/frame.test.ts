import { test } from "uvu";
import * as assert from "uvu/assert";
import { schema } from "../../generated/shadowvm-schema.js";
import { ShadowvmError } from "../errors.js";
import { WireError, type WireErrorCode } from "./errors.js";
import {
  DATA_BODY_KINDS,
  DEFAULT_MAX_FRAME_BYTES,
  decodeFrame,
  ENVELOPE_BODY_KINDS,
  type EnvelopeInit,
  encodeFrame,
  PROTOCOL_VERSION,
} from "./frame.js";
import { shadowvm } from "./index.js";
import { sampleBytes, sampleEnvelopes } from "./sample-frames.js";
import { validateWireMessage } from "./validate.js";

const v1 = shadowvm.v1;

/**
 * A message (instance or plain object) as plain data by the schema: unset fields, scalars with
 * their default value, empty repeated fields and empty maps dropped, as proto3 cannot tell them
 * from absent (decoded instances show defaults through their prototype).
 */
function plain(value: unknown, type = "shadowvm.v1.Envelope"): unknown {
  const msg = value as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  const conv = (kind: string, fieldType: string, v: unknown) =>
    kind === "message" ? plain(v, fieldType) : v instanceof Uint8Array ? Array.from(v) : v;
  for (const field of schema.messages[type]?.fields ?? []) {
    const v = msg[field.name];
    if (v === undefined || v === null) continue;
    const isDefault = v === "" || v === 0 || v === false || (v instanceof Uint8Array && v.byteLength === 0);
    if (field.rule === "single" && isDefault) continue;
    if (field.rule === "repeated") {
      if ((v as unknown[]).length > 0)
        out[field.name] = (v as unknown[]).map((x) => conv(field.kind, field.type, x));
    } else if (field.rule === "map") {
      const entries = Object.entries(v as object).sort(([a], [b]) => (a < b ? -1 : 1));
      if (entries.length > 0) out[field.name] = entries.map(([k, x]) => [k, conv(field.kind, field.type, x)]);
    } else out[field.name] = conv(field.kind, field.type, v);
  }
  return out;
}

/** Runs fn, which must throw a WireError; returns it. */
function wireError(fn: () => unknown, label = ""): WireError {
  try {
    fn();
  } catch (err) {
    if (err instanceof WireError) return err;
    throw new Error(`${label}: expected a WireError, got ${(err as Error)?.stack ?? String(err)}`);
  }
  throw new Error(`${label}: expected a WireError, but nothing was thrown`);
}

function expectCode(fn: () => unknown, code: WireErrorCode, message?: RegExp): WireError {
  const err = wireError(fn, code);
  assert.is(err.code, code, `code of: ${err.message}`);
  if (message) assert.match(err.message, message);
  return err;
}

/** Encodes with protobufjs directly, bypassing the codec's validation. */
function rawEncode(envelope: EnvelopeInit): Uint8Array {
  return v1.Envelope.encode(envelope).finish();
}

function varint(n: number): number[] {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return out;
}

function concat(...parts: (Uint8Array | number[])[]): Uint8Array {
  const arrays = parts.map((p) => (p instanceof Uint8Array ? p : Uint8Array.from(p)));
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.byteLength, 0));
  let at = 0;
  for (const a of arrays) {
    out.set(a, at);
    at += a.byteLength;
  }
  return out;
}

const samples = sampleEnvelopes();

test("the samples cover every body kind", () => {
  assert.equal(Object.keys(samples).sort(), [...ENVELOPE_BODY_KINDS].sort());
  assert.equal([...ENVELOPE_BODY_KINDS], schema.messages["shadowvm.v1.Envelope"]?.oneofs["body"]);
});

test("data bodies: what agents spool and collectors acknowledge, none of the session's own", () => {
  assert.equal([...DATA_BODY_KINDS].sort(), [
    "capture_record",
    "failure",
    "host_inventory",
    "production_event",
    "shadow_run",
    "signature_update",
    "telemetry_batch",
    "vm_inventory",
  ]);
  for (const kind of ["hello", "auth_challenge", "auth_response", "ack", "error", "heartbeat"] as const)
    assert.not.ok(DATA_BODY_KINDS.has(kind), kind);
});

for (const kind of ENVELOPE_BODY_KINDS) {
  test(`round trip: ${kind}`, () => {
    const input = samples[kind];
    const bytes = encodeFrame(input);
    const decoded = decodeFrame(bytes);
    assert.is(decoded.body, kind);
    assert.equal(plain(decoded), plain(input));
    // Re-encoding the decoded message gives the same bytes (deterministic field order).
    assert.equal(Array.from(encodeFrame(decoded)), Array.from(bytes));
  });
}

test("the samples set every field of every message to a non-default value", () => {
  const seen = new Set<string>();
  const walk = (type: string, msg: Record<string, unknown>) => {
    for (const field of schema.messages[type]?.fields ?? []) {
      const v = msg[field.name];
      const empty =
        v === undefined ||
        v === null ||
        v === 0 ||
        v === "" ||
        v === false ||
        (v instanceof Uint8Array && v.byteLength === 0) ||
        (Array.isArray(v) && v.length === 0) ||
        (field.rule === "map" && Object.keys(v as object).length === 0);
      if (empty) continue;
      seen.add(`${type}.${field.name}`);
      if (field.kind !== "message") continue;
      const items = field.rule === "repeated" ? (v as unknown[]) : [v];
      for (const item of items) walk(field.type, item as Record<string, unknown>);
    }
  };
  for (const env of Object.values(samples)) walk("shadowvm.v1.Envelope", env as Record<string, unknown>);
  const all = Object.entries(schema.messages).flatMap(([type, m]) =>
    m.fields.map((f) => `${type}.${f.name}`),
  );
  assert.equal(
    all.filter((f) => !seen.has(f)),
    [],
  );
});

test("64-bit fields decode as numbers, set or not", () => {
  const decoded = decodeFrame(encodeFrame({ agent_id: "a", seq: 2 ** 53 - 1, heartbeat: {} }));
  assert.is(decoded.seq, Number.MAX_SAFE_INTEGER);
  assert.is(typeof decoded.epoch, "number");
  assert.is(decoded.epoch, 0);
  assert.is(decoded.sent_at_ms, 0);
  const negative = decodeFrame(encodeFrame({ agent_id: "a", sent_at_ms: -5, heartbeat: {} }));
  assert.is(negative.sent_at_ms, -5);
});

test("decodeFrame accepts an ArrayBuffer", () => {
  const bytes = encodeFrame(samples.ack);
  // A copy: encodeFrame may return a view into a shared pool buffer.
  const copy = new Uint8Array(bytes).buffer;
  assert.is(decodeFrame(copy).body, "ack");
});

test("PROTOCOL_VERSION and the frame size limit", () => {
  assert.is(PROTOCOL_VERSION, 1);
  assert.is(DEFAULT_MAX_FRAME_BYTES, 4 * 1024 * 1024);
});

test("oversized: checked before decoding, with sizes in the message", () => {
  // Garbage that would be malformed if it were decoded at all.
  const big = new Uint8Array(5 * 1024 * 1024).fill(0xff);
  expectCode(
    () => decodeFrame(big),
    "oversized",
    /^frame of 5242880 bytes exceeds the maximum of 4194304 bytes$/,
  );
  const bytes = encodeFrame(samples.vm_inventory);
  assert.is(decodeFrame(bytes, { maxFrameBytes: bytes.byteLength }).body, "vm_inventory");
  expectCode(() => decodeFrame(bytes, { maxFrameBytes: bytes.byteLength - 1 }), "oversized");
});

test("oversized: encodeFrame refuses to produce a frame above the limit", () => {
  const samplesList = Array.from({ length: 2000 }, (_, i) => ({
    scope: v1.SampleScope.SAMPLE_SCOPE_VM,
    vm_uuid: `vm-${i}`,
    ts_ms: 1_700_000_000_000 + i,
    cpu_usage: 0.5,
  }));
  const env = { agent_id: "a", epoch: 1, seq: 1, telemetry_batch: { samples: samplesList } };
  const size = encodeFrame(env).byteLength;
  assert.ok(size > 20_000);
  expectCode(
    () => encodeFrame(env, { maxFrameBytes: 20_000 }),
    "oversized",
    new RegExp(`^encoded frame of ${size} bytes exceeds the maximum of 20000 bytes`),
  );
});

test("truncated: every proper prefix of every sample frame is refused", () => {
  const codes = new Set<string>();
  for (const kind of ENVELOPE_BODY_KINDS) {
    const bytes = encodeFrame(samples[kind]);
    for (let n = 0; n < bytes.byteLength; n++) {
      const err = wireError(() => decodeFrame(bytes.subarray(0, n)), `${kind} prefix ${n}`);
      // A prefix either cuts a field (truncated) or ends before the body (invalid: no body).
      assert.ok(err.code === "truncated" || err.code === "invalid", `${kind} prefix ${n}: ${err.message}`);
      codes.add(err.code);
    }
  }
  assert.equal([...codes].sort(), ["invalid", "truncated"]);
});

test("truncated: a length prefix longer than the frame names the sizes", () => {
  // agent_id (field 1) claims 5 bytes, 1 is there.
  expectCode(
    () => decodeFrame(Uint8Array.from([0x0a, 0x05, 0x61])),
    "truncated",
    /3-byte frame.*expected one complete encoded shadowvm\.v1\.Envelope/,
  );
});

test("malformed: bad wire type, bad varint, field number 0, invalid UTF-8", () => {
  const agent = [0x0a, 0x01, 0x61];
  // Field 100 with wire type 7, which does not exist.
  expectCode(() => decodeFrame(concat(agent, varint((100 << 3) | 7))), "malformed", /wire type 7/);
  // A varint of 11 continuation bytes.
  expectCode(
    () => decodeFrame(concat(agent, [0x10], new Array(11).fill(0xff), [0x01])),
    "malformed",
    /varint|encoding/,
  );
  expectCode(() => decodeFrame(concat(agent, [0x00, 0x00])), "malformed");
  expectCode(() => decodeFrame(Uint8Array.from([0x0a, 0x02, 0xc3, 0x28])), "malformed", /UTF-8/);
});

test("too_deep: thousands of nested unknown groups", () => {
  const open = varint((100 << 3) | 3);
  const close = varint((100 << 3) | 4);
  const depth = 5000;
  const nested = concat(...new Array(depth).fill(open), ...new Array(depth).fill(close));
  const frame = concat(encodeFrame(samples.heartbeat), nested);
  expectCode(() => decodeFrame(frame), "too_deep", /deeper than 100 levels/);
  // Open groups only (nothing closes them) is refused the same way, not by exhausting the stack.
  expectCode(
    () => decodeFrame(concat(encodeFrame(samples.heartbeat), ...new Array(100_000).fill(open))),
    "too_deep",
  );
  // Inside a nested known message (shadow_run.failures[0]) too.
  const failure = concat(varint((2 << 3) | 2), [1, 0x61], nested);
  const run = concat(varint((12 << 3) | 2), varint(failure.byteLength), failure);
  const env = concat([0x0a, 0x01, 0x61], varint((60 << 3) | 2), varint(run.byteLength), run);
  expectCode(() => decodeFrame(env), "too_deep");
});

test("a few nested unknown groups are skipped (forward compatibility)", () => {
  const open = varint((100 << 3) | 3);
  const close = varint((100 << 3) | 4);
  const nested = concat(...new Array(50).fill(open), [0x08, 0x01], ...new Array(50).fill(close));
  const decoded = decodeFrame(concat(encodeFrame(samples.heartbeat), nested));
  assert.equal(plain(decoded), plain(samples.heartbeat));
});

test("thousands of nested unknown length-delimited fields are skipped, not recursed into", () => {
  let inner: Uint8Array = new Uint8Array(0);
  for (let i = 0; i < 5000; i++) inner = concat(varint((100 << 3) | 2), varint(inner.byteLength), inner);
  assert.ok(inner.byteLength > 10_000);
  const decoded = decodeFrame(concat(encodeFrame(samples.heartbeat), inner));
  assert.equal(plain(decoded), plain(samples.heartbeat));
  // The same bytes where a known message is expected (hello.capabilities is a string): refused.
  const helloBytes = concat(varint((5 << 3) | 2), varint(inner.byteLength), inner);
  const wrapped = concat(
    [0x0a, 0x01, 0x61],
    varint((10 << 3) | 2),
    varint(helloBytes.byteLength),
    helloBytes,
  );
  wireError(() => decodeFrame(wrapped), "nested bytes as a string");
});

test("invalid: no body, two bodies, a body unknown to this version", () => {
  expectCode(() => decodeFrame(new Uint8Array(0)), "invalid", /agent_id/);
  expectCode(() => decodeFrame(rawEncode({ agent_id: "a" })), "invalid", /exactly one body \(none is set/);
  // Protobuf merges concatenated messages: both bodies end up set.
  const two = concat(encodeFrame(samples.heartbeat), rawEncode({ agent_id: "agent-7", ack: { ranges: [] } }));
  expectCode(
    () => decodeFrame(two),
    "invalid",
    /exactly one body, but the frame carries 2 \(heartbeat, ack\)/,
  );
  // The same body twice counts too (protobuf would merge them).
  const twice = concat(encodeFrame(samples.heartbeat), rawEncode({ agent_id: "agent-7", heartbeat: {} }));
  expectCode(() => decodeFrame(twice), "invalid", /carries 2 \(heartbeat, heartbeat\)/);
  // Field 79 (reserved for shadow bodies) is unknown today.
  const unknownBody = concat(rawEncode({ agent_id: "a" }), varint((79 << 3) | 2), [0]);
  expectCode(() => decodeFrame(unknownBody), "invalid", /none is set/);
});

test("invalid: enum values, numbers and protocol rules", () => {
  const cases: [string, EnvelopeInit, RegExp][] = [
    [
      "unknown enum",
      { agent_id: "a", error: { code: 99 as shadowvm.v1.ErrorCode } },
      /envelope\.error\.code must be one of .*ERROR_CODE_SHUTTING_DOWN = 9 \(actual: 99\)/,
    ],
    [
      "NaN",
      { agent_id: "a", telemetry_batch: { samples: [{ scope: 1, cpu_usage: Number.NaN }] } },
      /telemetry_batch\.samples\[0\]\.cpu_usage must be a finite number \(actual: NaN\)/,
    ],
    [
      "infinity in a map",
      { agent_id: "a", telemetry_batch: { samples: [{ scope: 1, extra: { x: Number.POSITIVE_INFINITY } }] } },
      /extra\["x"\] must be a finite number \(actual: Infinity\)/,
    ],
    ["unsafe uint64", { agent_id: "a", seq: 2 ** 60, heartbeat: {} }, /envelope\.seq must be a safe integer/],
    ["empty agent id", { agent_id: "", heartbeat: {} }, /envelope\.agent_id must be a non-empty string/],
    ["control character in agent id", { agent_id: "a\nb", heartbeat: {} }, /agent_id/],
    [
      "hello from another agent",
      { ...samples.hello, agent_id: "someone-else" },
      /hello\.agent_id must equal envelope\.agent_id/,
    ],
    [
      "short nonce",
      { agent_id: "a", auth_challenge: { server_nonce: sampleBytes(1, 8) } },
      /server_nonce must be 16\.\.64 bytes \(actual: 8 bytes\)/,
    ],
    [
      "short proof",
      { agent_id: "a", auth_response: { proof: sampleBytes(1, 31) } },
      /proof must be 32 bytes/,
    ],
    [
      "backwards ack range",
      { agent_id: "a", ack: { ranges: [{ epoch: 1, first_seq: 9, last_seq: 3 }] } },
      /ranges\[0\]\.first_seq must be <= last_seq \(3\) \(actual: 9\)/,
    ],
    [
      "sample without scope",
      { agent_id: "a", telemetry_batch: { samples: [{ ts_ms: 1 }] } },
      /samples\[0\]\.scope must be SAMPLE_SCOPE_HOST or SAMPLE_SCOPE_VM/,
    ],
    [
      "bad profile",
      { ...samples.shadow_run, shadow_run: { profile: { cpu_load: -1, duration_s: 10 } } },
      /envelope\.shadow_run\.profile: cpu_load must be a number >= 0 \(actual: -1\)/,
    ],
    [
      "unknown fault kind",
      {
        agent_id: "a",
        shadow_run: { profile: { duration_s: 10, faults: [{ kind: 42 as shadowvm.v1.FaultKind }] } },
      },
      /faults\[0\]\.kind must be one of .*(actual: 42)/,
    ],
  ];
  for (const [label, env, message] of cases) {
    // Sent by a peer that skipped validation: decodeFrame refuses it ...
    const err = expectCode(() => decodeFrame(rawEncode(env)), "invalid");
    assert.match(err.message, message, `${label}: ${err.message}`);
    // ... and encodeFrame never produces it.
    expectCode(() => encodeFrame(env), "invalid", message);
  }
});

test("encodeFrame refuses unknown keys and wrongly typed values", () => {
  const camel = { agentId: "a", heartbeat: {} } as unknown as EnvelopeInit;
  expectCode(() => encodeFrame(camel), "invalid", /envelope has unknown field "agentId" \(known: agent_id,/);
  const text = { agent_id: "a", epoch: "1", heartbeat: {} } as unknown as EnvelopeInit;
  expectCode(() => encodeFrame(text), "invalid", /envelope\.epoch must be a safe integer .*\(actual: "1"\)/);
  const big = { agent_id: "a", epoch: 1n, heartbeat: {} } as unknown as EnvelopeInit;
  expectCode(() => encodeFrame(big), "invalid", /\(actual: 1n\)/);
  const both = { ...samples.ack, heartbeat: {} };
  expectCode(() => encodeFrame(both), "invalid", /exactly one body/);
  const nullItem = { agent_id: "a", ack: { ranges: [null] } } as unknown as EnvelopeInit;
  expectCode(() => encodeFrame(nullItem), "invalid", /ack\.ranges\[0\] must be a SeqRange message object/);
});

test("WireError is a ShadowvmError from origin wire", () => {
  const err = expectCode(() => decodeFrame(new Uint8Array(0)), "invalid");
  assert.instance(err, ShadowvmError);
  assert.is(err.origin, "wire");
  assert.is(err.name, "WireError");
  assert.match(String(err), /^\[wire\] invalid frame: envelope\.agent_id/);
});

test("validateWireMessage checks a single message by type", () => {
  validateWireMessage("shadowvm.v1.VmInventory", samples.vm_inventory.vm_inventory);
  expectCode(
    () => validateWireMessage("shadowvm.v1.VmInventory", { state: 42 }),
    "invalid",
    /^invalid frame: VmInventory\.state must be one of VM_STATE_UNSPECIFIED = 0,/,
  );
});

test("decodeFrame refuses non-binary input with a WireError", () => {
  expectCode(() => decodeFrame("hello" as unknown as Uint8Array), "malformed", /must be binary/);
});

test.run();
