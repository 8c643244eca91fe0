// The store key file and the sub-keys derived from it.
//
// Format (text, mode 0600, kept OUTSIDE the store so a copy of the store alone is useless):
//   shadowvm-capture-store-key v1
//   # optional comment lines
//   <64 hex digits: the 32-byte master key>
//
// The master key is never used directly. HKDF-SHA256 (fixed salt, one `info` label per use)
// derives independent 32-byte sub-keys, so a weakness in one use cannot leak another:
//   chunk-encryption  AES-256-GCM key of chunk files
//   chunk-id          HMAC-SHA256 key of chunk ids (ids reveal nothing about the content)
//   manifest          AES-256-GCM key that encrypts and authenticates manifests
//   chunker-gear      seeds the content-defined chunker's gear table, so chunk boundaries (and
//                     therefore chunk file sizes) do not fingerprint known content either
//   fingerprint       16 public bytes written into store.json and manifest headers, so a wrong
//                     key is reported as "wrong key" rather than as corruption
import { hkdfSync, randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { link, mkdir, open, readFile, stat, unlink } from "node:fs/promises";
import { dirname } from "node:path";
import { CaptureStoreError, isErrno } from "./errors.js";

export const KEY_FILE_HEADER = "shadowvm-capture-store-key v1";
const HKDF_SALT = Buffer.from("shadowvm-capture-store/v1");

export interface StoreKeys {
  chunkEncryption: Buffer;
  chunkId: Buffer;
  manifest: Buffer;
  chunkerGear: Buffer;
  /** Public, 16 bytes: identifies the master key without revealing it. */
  fingerprint: Buffer;
}

export function deriveKeys(master: Buffer): StoreKeys {
  if (master.length !== 32) throw new CaptureStoreError("key_invalid", "the master key must be 32 bytes");
  const derive = (info: string, length = 32) =>
    Buffer.from(hkdfSync("sha256", master, HKDF_SALT, Buffer.from(info), length));
  return {
    chunkEncryption: derive("chunk-encryption"),
    chunkId: derive("chunk-id"),
    manifest: derive("manifest"),
    chunkerGear: derive("chunker-gear", 1024),
    fingerprint: derive("fingerprint", 16),
  };
}

export function formatKeyFile(master: Buffer): string {
  return (
    `${KEY_FILE_HEADER}\n` +
    "# Master key of a shadowvm capture store. Keep it secret and back it up: without it every\n" +
    "# capture in the store is unreadable.\n" +
    `${master.toString("hex")}\n`
  );
}

export function parseKeyFile(text: string, path: string): Buffer {
  const lines = text.split(/\r?\n/).map((l) => l.trim());
  if (lines[0] !== KEY_FILE_HEADER) {
    throw new CaptureStoreError(
      "key_invalid",
      `key file ${path}: the first line must be "${KEY_FILE_HEADER}" (found ${JSON.stringify(lines[0]?.slice(0, 40) ?? "")})`,
    );
  }
  const body = lines.slice(1).filter((l) => l !== "" && !l.startsWith("#"));
  if (body.length !== 1 || !/^[0-9a-fA-F]{64}$/.test(body[0] ?? "")) {
    throw new CaptureStoreError(
      "key_invalid",
      `key file ${path}: expected exactly one line of 64 hex digits (a 32-byte key) after the header`,
    );
  }
  return Buffer.from(body[0] as string, "hex");
}

/** Reads the key file; refuses one that group or others can read (like ssh does). */
export async function readKeyFile(path: string): Promise<Buffer> {
  const st = await stat(path);
  if (!st.isFile()) throw new CaptureStoreError("key_invalid", `key file ${path} is not a regular file`);
  if ((st.mode & 0o077) !== 0) {
    throw new CaptureStoreError(
      "key_insecure",
      `key file ${path} has mode ${(st.mode & 0o777).toString(8)}; it must not be accessible by group or others (chmod 600 ${path})`,
    );
  }
  return parseKeyFile(await readFile(path, "utf8"), path);
}

/**
 * Creates a new key file with mode 0600 without ever replacing an existing one: the key is
 * written to a temporary name, fsynced, then hard-linked to `path` (link fails if `path`
 * appeared meanwhile, in which case that key is used instead).
 */
export async function createKeyFile(path: string): Promise<{ key: Buffer; created: boolean }> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const master = randomBytes(32);
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  try {
    await fh.writeFile(formatKeyFile(master));
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await link(tmp, path);
  } catch (err) {
    if (isErrno(err, "EEXIST")) return { key: await readKeyFile(path), created: false };
    throw err;
  } finally {
    await unlink(tmp).catch(() => {});
  }
  const dirFh = await open(dirname(path), constants.O_RDONLY);
  try {
    await dirFh.sync();
  } finally {
    await dirFh.close();
  }
  return { key: master, created: true };
}
