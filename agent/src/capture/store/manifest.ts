// Capture manifests: what a capture is made of, sealed with the store key.
//
// Manifest file (manifests/<capture id>.manifest), integers big-endian:
//   offset  size  field
//   0       8     magic "SVMMAN01"
//   8       16    key fingerprint (public; tells "wrong key" apart from "damaged")
//   24      12    nonce (random)
//   36      4     ciphertext length n
//   40      n     AES-256-GCM ciphertext (manifest key) of zstd(JSON manifest)
//   40+n    16    GCM tag
// AAD = the 40 header bytes || "capture:" || capture id, so a manifest renamed to another id
// fails authentication. The length field makes truncation a distinct, clear error.
//
// JSON manifest (version 1): id, vm, created_at (capture start, ISO 8601), committed_at,
// metadata (caller's object), chunker params, stored_bytes (chunk bytes on disk referenced by
// the capture, each distinct chunk once), new_bytes (chunk bytes this capture added to the
// store), and parts: [{ name, size, sha256 (of the plaintext part), chunk_count, chunks }].
// `chunks` is the ordered chunk list, base64 of 44-byte records:
//   id (32) | plaintext size u32 | stored (file) size u32 | repeat count u32
// A record stands for `repeat` consecutive references to the same chunk, so a 100 GiB run of
// zeros costs one record.
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { Decoder, Encoder } from "@toondepauw/node-zstd";
import { CaptureStoreError } from "./errors.js";

export const MANIFEST_MAGIC = Buffer.from("SVMMAN01");
export const MANIFEST_HEADER_BYTES = 40;
const TAG_BYTES = 16;
export const MANIFEST_FORMAT = "shadowvm-capture-manifest";
export const MANIFEST_VERSION = 1;
export const CHUNK_RECORD_BYTES = 44;

export interface ChunkRef {
  id: Buffer;
  size: number;
  storedSize: number;
  repeat: number;
}

export interface ManifestPart {
  name: string;
  size: number;
  sha256: string;
  /** Number of chunk references, repeats included. */
  chunk_count: number;
  /** Packed records, see the header comment. */
  chunks: Buffer;
}

export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  version: typeof MANIFEST_VERSION;
  id: string;
  vm: string;
  created_at: string;
  committed_at: string;
  metadata: Record<string, unknown>;
  chunker: { min_size: number; avg_size: number; max_size: number };
  stored_bytes: number;
  new_bytes: number;
  parts: ManifestPart[];
}

/** Appends chunk references, merging consecutive references to the same chunk. */
export class ChunkTableBuilder {
  private buf = Buffer.alloc(CHUNK_RECORD_BYTES * 64);
  private length = 0;
  private lastId: Buffer | null = null;
  count = 0;

  add(id: Buffer, size: number): void {
    this.count++;
    if (this.lastId?.equals(id)) {
      const at = this.length - 4;
      this.buf.writeUInt32BE(this.buf.readUInt32BE(at) + 1, at);
      return;
    }
    if (this.length + CHUNK_RECORD_BYTES > this.buf.length) {
      const bigger = Buffer.alloc(this.buf.length * 2);
      this.buf.copy(bigger, 0, 0, this.length);
      this.buf = bigger;
    }
    id.copy(this.buf, this.length);
    this.buf.writeUInt32BE(size, this.length + 32);
    this.buf.writeUInt32BE(0, this.length + 36);
    this.buf.writeUInt32BE(1, this.length + 40);
    this.lastId = this.buf.subarray(this.length, this.length + 32);
    this.length += CHUNK_RECORD_BYTES;
  }

  /** The packed table, with each record's stored size filled in from `storedSize(hexId)`. */
  finish(storedSize: (hexId: string) => number): Buffer {
    const out = Buffer.from(this.buf.subarray(0, this.length));
    for (let off = 0; off < out.length; off += CHUNK_RECORD_BYTES) {
      out.writeUInt32BE(storedSize(out.toString("hex", off, off + 32)), off + 36);
    }
    return out;
  }
}

export function* chunkRefs(table: Buffer): Generator<ChunkRef> {
  for (let off = 0; off + CHUNK_RECORD_BYTES <= table.length; off += CHUNK_RECORD_BYTES) {
    yield {
      id: table.subarray(off, off + 32),
      size: table.readUInt32BE(off + 32),
      storedSize: table.readUInt32BE(off + 36),
      repeat: table.readUInt32BE(off + 40),
    };
  }
}

const encoder = new Encoder(3);
const decoder = new Decoder();

function aad(header: Buffer, id: string): Buffer {
  return Buffer.concat([header, Buffer.from(`capture:${id}`, "utf8")]);
}

export function sealManifest(m: Manifest, key: Buffer, fingerprint: Buffer): Buffer {
  const json = JSON.stringify({
    ...m,
    parts: m.parts.map((p) => ({ ...p, chunks: p.chunks.toString("base64") })),
  });
  const plain = encoder.encodeSync(Buffer.from(json, "utf8"));
  const header = Buffer.alloc(MANIFEST_HEADER_BYTES);
  MANIFEST_MAGIC.copy(header, 0);
  fingerprint.copy(header, 8);
  const nonce = randomBytes(12);
  nonce.copy(header, 24);
  header.writeUInt32BE(plain.length, 36);
  const cipher = createCipheriv("aes-256-gcm", key, nonce);
  cipher.setAAD(aad(header, m.id));
  const ct = Buffer.concat([cipher.update(plain), cipher.final()]);
  return Buffer.concat([header, ct, cipher.getAuthTag()]);
}

/** Authenticates, decrypts and parses a manifest file; every failure names the capture. */
export function openManifest(file: Buffer, id: string, key: Buffer, fingerprint: Buffer): Manifest {
  const fail = (code: "manifest_truncated" | "manifest_corrupt" | "wrong_key", msg: string) =>
    new CaptureStoreError(code, msg, { captureId: id });
  if (file.length < MANIFEST_HEADER_BYTES) {
    throw fail(
      "manifest_truncated",
      `manifest is truncated (${file.length} bytes, shorter than its ${MANIFEST_HEADER_BYTES}-byte header)`,
    );
  }
  if (!file.subarray(0, 8).equals(MANIFEST_MAGIC)) {
    throw fail(
      "manifest_corrupt",
      "manifest does not start with the manifest magic (not a manifest, or damaged)",
    );
  }
  const fp = file.subarray(8, 24);
  if (!fp.equals(fingerprint)) {
    throw fail(
      "wrong_key",
      `manifest was sealed with the key with fingerprint ${fp.toString("hex")}, but the store was opened with key ${fingerprint.toString("hex")} (wrong key file?)`,
    );
  }
  const ctLength = file.readUInt32BE(36);
  const expected = MANIFEST_HEADER_BYTES + ctLength + TAG_BYTES;
  if (file.length < expected) {
    throw fail("manifest_truncated", `manifest is truncated (${file.length} of ${expected} bytes)`);
  }
  if (file.length > expected) {
    throw fail("manifest_corrupt", `manifest has ${file.length - expected} unexpected trailing bytes`);
  }
  const header = file.subarray(0, MANIFEST_HEADER_BYTES);
  const decipher = createDecipheriv("aes-256-gcm", key, file.subarray(24, 36));
  decipher.setAAD(aad(header, id));
  decipher.setAuthTag(file.subarray(expected - TAG_BYTES));
  let plain: Buffer;
  try {
    plain = Buffer.concat([
      decipher.update(file.subarray(MANIFEST_HEADER_BYTES, expected - TAG_BYTES)),
      decipher.final(),
    ]);
  } catch {
    throw fail(
      "manifest_corrupt",
      "manifest authentication failed (GCM tag mismatch): the file was modified, damaged, or renamed from another capture",
    );
  }
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(decoder.decodeSync(plain).toString("utf8")) as Record<string, unknown>;
  } catch (err) {
    throw new CaptureStoreError("manifest_corrupt", "manifest content cannot be decoded", {
      captureId: id,
      cause: err,
    });
  }
  if (raw["format"] !== MANIFEST_FORMAT || raw["version"] !== MANIFEST_VERSION || raw["id"] !== id) {
    throw fail(
      "manifest_corrupt",
      `unsupported manifest (format ${String(raw["format"])} version ${String(raw["version"])}, id ${String(raw["id"])})`,
    );
  }
  const parts = (raw["parts"] as Array<Record<string, unknown>>).map((p) => ({
    ...(p as unknown as ManifestPart),
    chunks: Buffer.from(String(p["chunks"]), "base64"),
  }));
  return { ...(raw as unknown as Manifest), parts };
}
