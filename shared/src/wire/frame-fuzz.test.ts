// Seeded fuzzing of decodeFrame: random buffers must produce a WireError; random bodies and mutated
// valid frames a WireError or a frame that passes validation; never another exception.
import { test } from "uvu";
import * as assert from "uvu/assert";
import { StressProfileError } from "../stress-profile.js";
import { WireError } from "./errors.js";
import { decodeFrame, ENVELOPE_BODY_KINDS, encodeFrame } from "./frame.js";
import { sampleEnvelopes } from "./sample-frames.js";

/** mulberry32: small, fast, and the same sequence on every run. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function classify(bytes: Uint8Array, label: string): string {
  try {
    const env = decodeFrame(bytes);
    // Whatever decodes must also be encodable: validation is the same both ways.
    encodeFrame(env);
    return "ok";
  } catch (err) {
    if (err instanceof WireError) {
      // decodeFrame turns a validator bug into "invalid" too; only profile errors may be behind one.
      if (err.code === "invalid" && err.cause !== undefined && !(err.cause instanceof StressProfileError)) {
        throw new Error(`${label}: validation failed internally: ${(err.cause as Error)?.stack}`);
      }
      return err.code;
    }
    throw new Error(`${label}: not a WireError: ${(err as Error)?.stack ?? String(err)}`);
  }
}

test("3000 seeded random buffers each give a WireError", () => {
  const rand = rng(0x5eed);
  const codes = new Map<string, number>();
  for (let i = 0; i < 3000; i++) {
    const length = Math.floor(rand() * 300);
    const bytes = Uint8Array.from({ length }, () => Math.floor(rand() * 256));
    const code = classify(bytes, `buffer ${i}`);
    assert.is.not(code, "ok", `random buffer ${i} decoded as a valid frame`);
    codes.set(code, (codes.get(code) ?? 0) + 1);
  }
  // The garbage reaches the different failure paths, not just one of them.
  for (const code of ["truncated", "malformed", "invalid"])
    assert.ok(codes.has(code), `no ${code} among ${[...codes]}`);
});

test("random bodies behind a valid header: a WireError or a frame that passes validation", () => {
  // An agent id and a body tag up front get the garbage past the first bytes into the body decoders,
  // where random bytes can be a legitimate body (unknown fields are skipped).
  const rand = rng(42);
  const tags = [10, 16, 31, 40, 50, 60, 62].map((id) => (id << 3) | 2);
  const outcomes = new Map<string, number>();
  for (let i = 0; i < 2000; i++) {
    const length = Math.floor(rand() * 128);
    const tag = tags[i % tags.length] ?? 0x52;
    const body = Uint8Array.from({ length }, () => Math.floor(rand() * 256));
    const head = [0x0a, 0x01, 0x61, ...(tag > 0x7f ? [(tag & 0x7f) | 0x80, tag >>> 7] : [tag]), length];
    const code = classify(Uint8Array.from([...head, ...body]), `body ${i}`);
    outcomes.set(code, (outcomes.get(code) ?? 0) + 1);
  }
  for (const code of ["truncated", "malformed", "invalid"]) {
    assert.ok(outcomes.has(code), `no ${code} among ${[...outcomes]}`);
  }
});

test("2000 mutations of valid frames never throw anything but a WireError", () => {
  const rand = rng(7);
  const frames = Object.values(sampleEnvelopes()).map((e) => encodeFrame(e));
  assert.is(frames.length, ENVELOPE_BODY_KINDS.length);
  let refused = 0;
  for (let i = 0; i < 2000; i++) {
    const base = frames[i % frames.length] ?? new Uint8Array(0);
    const bytes = new Uint8Array(base);
    const flips = 1 + Math.floor(rand() * 4);
    for (let f = 0; f < flips; f++) {
      const at = Math.floor(rand() * bytes.length);
      bytes[at] = Math.floor(rand() * 256);
    }
    if (classify(bytes, `mutation ${i}`) !== "ok") refused++;
  }
  // Most mutations land in a string or number and still decode; a fair share must not.
  assert.ok(refused > 100, `only ${refused} of 2000 mutations were refused`);
});

test.run();
