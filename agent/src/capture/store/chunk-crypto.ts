// Chunk ids and the chunk file format.
//
// Chunk id = HMAC-SHA256(chunk-id key, plaintext chunk): 32 bytes, shown as 64 hex digits. It is
// keyed, so an id reveals nothing about the content to someone without the key (a plain hash
// would let anyone confirm that a known page is in the store).
//
// Chunk file (chunks/<first 2 hex digits of id>/<64 hex id>), all integers big-endian:
//   offset  size  field
//   0       4     magic "SVC1"
//   4       1     flags: bit 0 = body is zstd-compressed (else stored raw: incompressible data)
//   5       3     reserved, zero
//   8       12    nonce (random per chunk write)
//   20      n     AES-256-GCM ciphertext of the body
//   20+n    16    GCM tag
// AAD = the 8 header bytes || the 32-byte chunk id. Binding the id means a valid chunk file
// renamed to another id (or with its flags flipped) fails authentication.
//
// Random 96-bit nonces are safe for up to 2^32 chunk writes per key (NIST SP 800-38D), i.e.
// ~256 TiB of unique data at 64 KiB chunks.
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from "node:crypto";

export const CHUNK_MAGIC = Buffer.from("SVC1");
export const CHUNK_HEADER_BYTES = 8;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
export const CHUNK_OVERHEAD = CHUNK_HEADER_BYTES + NONCE_BYTES + TAG_BYTES;
export const FLAG_ZSTD = 1;

export function chunkId(idKey: Buffer, data: Uint8Array): Buffer {
  return createHmac("sha256", idKey).update(data).digest();
}

function header(flags: number): Buffer {
  const h = Buffer.alloc(CHUNK_HEADER_BYTES);
  CHUNK_MAGIC.copy(h, 0);
  h[4] = flags;
  return h;
}

/** Encrypts a chunk body into the bytes of a chunk file. */
export function sealChunk(key: Buffer, id: Buffer, body: Uint8Array, flags: number): Buffer {
  const hdr = header(flags);
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv("aes-256-gcm", key, nonce);
  cipher.setAAD(Buffer.concat([hdr, id]));
  const ct = cipher.update(body);
  const fin = cipher.final();
  return Buffer.concat([hdr, nonce, ct, fin, cipher.getAuthTag()]);
}

export type OpenChunkResult =
  | { ok: true; flags: number; body: Buffer }
  | { ok: false; reason: "truncated" | "bad_magic" | "bad_flags" | "auth_failed" };

/** Decrypts and authenticates a chunk file's bytes. Never returns unauthenticated data. */
export function openChunk(key: Buffer, id: Buffer, file: Buffer): OpenChunkResult {
  if (file.length < CHUNK_OVERHEAD) return { ok: false, reason: "truncated" };
  if (!file.subarray(0, 4).equals(CHUNK_MAGIC)) return { ok: false, reason: "bad_magic" };
  const flags = file[4] as number;
  if ((flags & ~FLAG_ZSTD) !== 0 || file[5] !== 0 || file[6] !== 0 || file[7] !== 0) {
    return { ok: false, reason: "bad_flags" };
  }
  const nonce = file.subarray(CHUNK_HEADER_BYTES, CHUNK_HEADER_BYTES + NONCE_BYTES);
  const ct = file.subarray(CHUNK_HEADER_BYTES + NONCE_BYTES, file.length - TAG_BYTES);
  const decipher = createDecipheriv("aes-256-gcm", key, nonce);
  decipher.setAAD(Buffer.concat([file.subarray(0, CHUNK_HEADER_BYTES), id]));
  decipher.setAuthTag(file.subarray(file.length - TAG_BYTES));
  const part = decipher.update(ct);
  try {
    const fin = decipher.final();
    return { ok: true, flags, body: fin.length > 0 ? Buffer.concat([part, fin]) : part };
  } catch {
    return { ok: false, reason: "auth_failed" };
  }
}

export function describeChunkFailure(reason: Exclude<OpenChunkResult, { ok: true }>["reason"]): string {
  switch (reason) {
    case "truncated":
      return "the chunk file is truncated (shorter than its header and tag)";
    case "bad_magic":
      return "the chunk file does not start with the chunk magic (not a chunk file, or damaged)";
    case "bad_flags":
      return "the chunk file header has unknown flags (damaged)";
    case "auth_failed":
      return "authentication failed (GCM tag mismatch): the chunk file was modified or damaged";
  }
}
