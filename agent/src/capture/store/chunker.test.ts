import { createCipheriv, createHash } from "node:crypto";
import { test } from "uvu";
import * as assert from "uvu/assert";
import {
  Chunker,
  chunkBuffer,
  DEFAULT_CHUNKER_PARAMS,
  gearTableFromSeed,
  validateChunkerParams,
} from "./chunker.js";

const gear = gearTableFromSeed(Buffer.from("chunker test seed"));
const P = DEFAULT_CHUNKER_PARAMS;

/** Seeded pseudo-random bytes (an AES-CTR keystream), so every run chunks the same data. */
function seededBytes(n: number, label: string): Buffer {
  const key = createHash("sha256").update(label).digest();
  return createCipheriv("aes-256-ctr", key, Buffer.alloc(16)).update(Buffer.alloc(n));
}

function lengths(chunks: Buffer[]): number[] {
  return chunks.map((c) => c.length);
}

test("chunks reassemble to the input and respect min/max sizes", () => {
  const data = seededBytes(8 * 1024 * 1024, "sizes");
  const chunks = chunkBuffer(data, P, gear);
  assert.ok(Buffer.concat(chunks).equals(data));
  for (const c of chunks.slice(0, -1)) {
    assert.ok(c.length >= P.minSize && c.length <= P.maxSize, `chunk of ${c.length} bytes`);
  }
  // Normalized chunking keeps the mean near avgSize (it sits a bit above it in FastCDC).
  const mean = data.length / chunks.length;
  assert.ok(mean > P.avgSize * 0.75 && mean < P.avgSize * 1.5, `mean chunk ${mean}`);
});

test("cut points do not depend on how the input is split into reads", () => {
  const data = seededBytes(3 * 1024 * 1024 + 12345, "reads");
  const whole = lengths(chunkBuffer(data, P, gear));
  const c = new Chunker(P, gear);
  const out: Buffer[] = [];
  let off = 0;
  while (off < data.length) {
    const n = 1 + Math.floor(Math.random() * 200_000);
    out.push(...c.push(data.subarray(off, off + n)));
    off += n;
  }
  out.push(...c.finish());
  assert.equal(lengths(out), whole);
});

test("inserting bytes at the front changes only the first few chunks", () => {
  // The insertion lands in the first chunk and the chunker resynchronises at an old cut point. With
  // normalized chunking a cut also depends on the distance from the previous one, so that can take
  // a few chunks: over 150 random 4 MiB inputs, 1 chunk changed in 89% of them, up to 8 in one.
  // Hence several fixed inputs, each of which must resynchronise, and a bound on the mean.
  const cases = 12;
  let total = 0;
  for (let i = 0; i < cases; i++) {
    const data = seededBytes(4 * 1024 * 1024, `front insertion ${i}`);
    const before = chunkBuffer(data, P, gear).map((c) => c.toString("hex"));
    const shifted = Buffer.concat([seededBytes(1 + 617 * i, `inserted ${i}`), data]);
    const after = chunkBuffer(shifted, P, gear).map((c) => c.toString("hex"));
    const old = new Set(before);
    const changed = after.filter((h) => !old.has(h)).length;
    assert.ok(changed >= 1 && changed <= 8, `case ${i}: ${changed} of ${after.length} chunks changed`);
    // The unchanged chunks are the old sequence's tail, just no longer at the same offsets.
    assert.equal(after.slice(changed), before.slice(before.length - (after.length - changed)), `case ${i}`);
    total += changed;
  }
  assert.ok(total / cases <= 2, `${total / cases} chunks changed per insertion on average`);
});

test("changing one byte in the middle changes at most two chunks", () => {
  const data = seededBytes(4 * 1024 * 1024, "one byte");
  const before = new Set(chunkBuffer(data, P, gear).map((c) => c.toString("hex")));
  const edited = Buffer.from(data);
  edited[2_000_000] = (edited[2_000_000] as number) ^ 0xff;
  const after = chunkBuffer(edited, P, gear).map((c) => c.toString("hex"));
  assert.ok(after.filter((h) => !before.has(h)).length <= 2);
});

test("a run of zeros becomes identical max-size chunks", () => {
  const zeros = Buffer.alloc(4 * 1024 * 1024);
  const chunks = chunkBuffer(zeros, P, gear);
  assert.equal(new Set(lengths(chunks)), new Set([P.maxSize]));
  assert.is(chunks.length, zeros.length / P.maxSize);
});

test("the gear table (a store-key derivative) changes the cut points", () => {
  const data = seededBytes(2 * 1024 * 1024, "gear");
  const a = lengths(chunkBuffer(data, P, gear));
  const b = lengths(chunkBuffer(data, P, gearTableFromSeed(Buffer.from("another key"))));
  assert.not.equal(a, b);
});

test("empty and tiny inputs", () => {
  assert.equal(chunkBuffer(Buffer.alloc(0), P, gear), []);
  assert.equal(lengths(chunkBuffer(Buffer.from("hello"), P, gear)), [5]);
});

test("rejects inconsistent parameters", () => {
  assert.throws(() => validateChunkerParams({ minSize: 1024, avgSize: 3000, maxSize: 8192 }), /power of two/);
  assert.throws(() => validateChunkerParams({ minSize: 8192, avgSize: 4096, maxSize: 16384 }), /minSize/);
  assert.throws(() => validateChunkerParams({ minSize: 1024, avgSize: 4096, maxSize: 4096 }), /maxSize/);
});

test.run();
