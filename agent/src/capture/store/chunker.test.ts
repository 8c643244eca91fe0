import { randomBytes } from "node:crypto";
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

function lengths(chunks: Buffer[]): number[] {
  return chunks.map((c) => c.length);
}

test("chunks reassemble to the input and respect min/max sizes", () => {
  const data = randomBytes(8 * 1024 * 1024);
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
  const data = randomBytes(3 * 1024 * 1024 + 12345);
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

test("inserting bytes at the front changes only the first chunks", () => {
  const data = randomBytes(8 * 1024 * 1024);
  const before = chunkBuffer(data, P, gear).map((c) => c.toString("hex"));
  const shifted = Buffer.concat([randomBytes(1000), data]);
  const after = chunkBuffer(shifted, P, gear).map((c) => c.toString("hex"));
  const old = new Set(before);
  const changed = after.filter((h) => !old.has(h)).length;
  // The insertion lands in the first chunk; the chunker resynchronises at the next cut.
  assert.ok(changed <= 2, `${changed} of ${after.length} chunks changed`);
  assert.equal(after.slice(-10), before.slice(-10));
  // And the unchanged chunks are the same sequence, just no longer at the same offsets.
  assert.equal(after.slice(changed), before.slice(before.length - (after.length - changed)));
});

test("changing one byte in the middle changes at most two chunks", () => {
  const data = randomBytes(4 * 1024 * 1024);
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
  const data = randomBytes(2 * 1024 * 1024);
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
