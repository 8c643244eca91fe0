// What the enrollment tokens (auth-store.ts) and the API tokens (api/api-token-store.ts) share:
// small JSON files written atomically, and bearer tokens "<prefix>_<16 hex id>_<43 base64url
// secret>" of which only the SHA-256 of the secret part is stored and compared in constant time.
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { createError } from "@shadowvm/shared";

/** Token ids are 16 hex digits (8 random bytes). */
export const TOKEN_ID_RE = /^[0-9a-f]{16}$/;

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** Writes `data` to `path` atomically (temporary file, fsync, rename), mode 0600. */
export function writeFileAtomic(path: string, data: string): void {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  const fd = openSync(tmp, "wx", 0o600);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

/** Parsed JSON of `path`; undefined when the file does not exist, a clear error when it is corrupt. */
export function readJsonFile<T>(path: string): T | undefined {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  try {
    return JSON.parse(text) as T;
  } catch (err) {
    throw createError("auth", "corrupt", `${path} is not valid JSON: ${(err as Error).message}`);
  }
}

/** A new token: its id, the string shown once to the operator, and the hash that is stored. */
export function newToken(prefix: string): { id: string; token: string; sha256: string } {
  const id = randomBytes(8).toString("hex");
  const secret = randomBytes(32).toString("base64url");
  return { id, token: `${prefix}_${id}_${secret}`, sha256: sha256Hex(secret) };
}

/** Splits a presented token; undefined when it does not have the shape of a `prefix` token. */
export function parseToken(prefix: string, token: string): { id: string; secret: string } | undefined {
  const m = /^([a-z]+)_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/.exec(token);
  return m && m[1] === prefix ? { id: m[2]!, secret: m[3]! } : undefined;
}

/**
 * Whether `secret` hashes to `storedSha256`, in constant time. Hashes and compares even when there
 * is no stored hash (unknown id), so the time taken does not tell which ids exist.
 */
export function secretMatches(secret: string, storedSha256: string | undefined): boolean {
  const presented = Buffer.from(sha256Hex(secret), "hex");
  const stored = Buffer.from(storedSha256 ?? "0".repeat(64), "hex");
  return (
    stored.length === presented.length && timingSafeEqual(stored, presented) && storedSha256 !== undefined
  );
}
