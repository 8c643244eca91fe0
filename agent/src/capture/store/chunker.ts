// Content-defined chunking: FastCDC (Xia et al., USENIX ATC '16) with normalized chunking
// (level 2) over a 32-bit gear hash.
//
// Invariant: a cut point depends only on the bytes since the previous cut (the gear hash sees
// the last 32 bytes), never on absolute offsets or on how the input was split into reads. So
// inserting or changing bytes only changes the chunks around the edit; later chunks realign and
// dedupe. A run of identical bytes (e.g. zero pages) never matches the mask (for all but a
// negligible fraction of gear tables), so it is cut into identical max-size chunks, which
// dedupe to one stored chunk.
//
// The gear table is derived from the store key (see key-file.ts) so chunk sizes do not reveal
// known content. Parameters and the table define the dedupe domain; both are fixed per store.
import { createHash } from "node:crypto";

export interface ChunkerParams {
  minSize: number;
  avgSize: number;
  maxSize: number;
}

/**
 * 8/32/256 KiB. The 32 KiB mask gives a measured mean chunk of ~55 KiB on memory images
 * (zero pages hold no cut points, so chunks there run longer) and ~36 KiB on incompressible
 * data; a 64 KiB mask cost 1.1-1.9x the new bytes of a capture with clustered dirty pages.
 * See README.md ("Chunk size").
 */
export const DEFAULT_CHUNKER_PARAMS: Readonly<ChunkerParams> = Object.freeze({
  minSize: 8 * 1024,
  avgSize: 32 * 1024,
  maxSize: 256 * 1024,
});

export function validateChunkerParams(p: ChunkerParams): void {
  const { minSize, avgSize, maxSize } = p;
  const pow2 = Number.isInteger(Math.log2(avgSize));
  if (!pow2 || avgSize < 256 || avgSize > 16 * 1024 * 1024) {
    throw new RangeError(`chunker avgSize must be a power of two between 256 and 16 MiB (got ${avgSize})`);
  }
  if (!(Number.isInteger(minSize) && minSize >= 64 && minSize < avgSize)) {
    throw new RangeError(`chunker minSize must be an integer in [64, avgSize) (got ${minSize})`);
  }
  if (!(Number.isInteger(maxSize) && maxSize > avgSize && maxSize <= 64 * 1024 * 1024)) {
    throw new RangeError(`chunker maxSize must be an integer in (avgSize, 64 MiB] (got ${maxSize})`);
  }
}

/** 256 pseudo-random 32-bit values from a seed (any length; the store passes a derived key). */
export function gearTableFromSeed(seed: Uint8Array): Uint32Array {
  const table = new Uint32Array(256);
  const bytes = Buffer.alloc(1024);
  if (seed.length >= 1024) Buffer.from(seed.buffer, seed.byteOffset, 1024).copy(bytes);
  else {
    for (let i = 0; i < 32; i++) {
      createHash("sha256")
        .update(seed)
        .update(Buffer.from([i]))
        .digest()
        .copy(bytes, i * 32);
    }
  }
  for (let i = 0; i < 256; i++) table[i] = bytes.readUInt32LE(i * 4);
  return table;
}

/** A mask selecting the top `bits` bits of a 32-bit hash (high bits depend on more bytes). */
function topBits(bits: number): number {
  return bits >= 32 ? -1 : ~((1 << (32 - bits)) - 1) | 0;
}

/**
 * Streaming chunker: push() input of any size, get back complete chunks; finish() returns the
 * rest. Memory: at most 2 x maxSize plus the last pushed buffer are held.
 */
export class Chunker {
  readonly params: Readonly<ChunkerParams>;
  private readonly gear: Uint32Array;
  private readonly maskS: number;
  private readonly maskL: number;
  private pending: Buffer[] = [];
  private pendingLength = 0;

  constructor(params: ChunkerParams, gear: Uint32Array) {
    validateChunkerParams(params);
    if (gear.length !== 256) throw new RangeError("gear table must have 256 entries");
    this.params = Object.freeze({ ...params });
    this.gear = gear;
    const bits = Math.round(Math.log2(params.avgSize));
    // Normalized chunking: a harder mask before the average size, an easier one after it,
    // which narrows the size distribution around avgSize.
    this.maskS = topBits(bits + 2);
    this.maskL = topBits(bits - 2);
  }

  /**
   * Feeds data; returns the chunks completed by it (views into an internal copy). The chunker
   * keeps a reference to `data` until the next cut, so the caller must not modify it.
   */
  push(data: Uint8Array): Buffer[] {
    if (data.length === 0) return [];
    this.pending.push(Buffer.from(data.buffer, data.byteOffset, data.length));
    this.pendingLength += data.length;
    // Waiting for 2 x maxSize bounds the re-copying of the remainder to ~2x the input.
    if (this.pendingLength < 2 * this.params.maxSize) return [];
    return this.drain(false);
  }

  /** Ends the input: returns the remaining chunks (the last one may be shorter than minSize). */
  finish(): Buffer[] {
    return this.drain(true);
  }

  private drain(final: boolean): Buffer[] {
    if (this.pendingLength === 0) return [];
    // One contiguous copy: the caller may reuse its buffers, and cut search needs contiguity.
    const buf = Buffer.concat(this.pending, this.pendingLength);
    const out: Buffer[] = [];
    let off = 0;
    while (buf.length - off >= this.params.maxSize || (final && off < buf.length)) {
      const len = this.cut(buf, off, buf.length);
      out.push(buf.subarray(off, off + len));
      off += len;
    }
    this.pending = off < buf.length ? [buf.subarray(off)] : [];
    this.pendingLength = buf.length - off;
    return out;
  }

  /** Length of the chunk starting at `start` (FastCDC's cut-point search). */
  private cut(buf: Buffer, start: number, end: number): number {
    const { minSize, avgSize, maxSize } = this.params;
    const n = end - start;
    if (n <= minSize) return n;
    const gear = this.gear;
    const maskS = this.maskS;
    const maskL = this.maskL;
    let h = 0;
    let i = start + minSize;
    let barrier = start + Math.min(avgSize, n);
    for (; i < barrier; i++) {
      h = ((h << 1) + (gear[buf[i] as number] as number)) | 0;
      if ((h & maskS) === 0) return i + 1 - start;
    }
    barrier = start + Math.min(maxSize, n);
    for (; i < barrier; i++) {
      h = ((h << 1) + (gear[buf[i] as number] as number)) | 0;
      if ((h & maskL) === 0) return i + 1 - start;
    }
    return i - start;
  }
}

/** Chunks a whole buffer at once (tests, small parts). */
export function chunkBuffer(data: Uint8Array, params: ChunkerParams, gear: Uint32Array): Buffer[] {
  const c = new Chunker(params, gear);
  return [...c.push(data), ...c.finish()];
}
