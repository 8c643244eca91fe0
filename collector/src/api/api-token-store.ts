// API tokens of the HTTP query API: "svma_<16 hex id>_<43 base64url secret>" with a scope (read or
// admin). Like the enrollment tokens (collector/src/auth/auth-store.ts) they live in small files,
// not in DuckDB, so `shadowvm-collector api-token create|revoke|list` works while `serve` runs:
//
//   auth/api-tokens/<id>.json  0600  { id, sha256 (hex of the secret part), scope, created_at_ms,
//                                      description, revoked_at_ms }
//
// Only the SHA-256 of the secret part is stored; it is compared in constant time. A revoked token
// is refused at its next request (the file is read on every check; it is a few hundred bytes).
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import {
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";

export type ApiScope = "read" | "admin";
export const API_SCOPES: readonly ApiScope[] = ["read", "admin"];

export interface ApiTokenRecord {
  id: string;
  sha256: string;
  scope: ApiScope;
  created_at_ms: number;
  description: string;
  revoked_at_ms: number | null;
}

export type ApiTokenCheck =
  | { ok: true; token: ApiTokenRecord }
  | { ok: false; reason: "malformed" | "unknown" | "revoked" | "mismatch" };

const TOKEN_RE = /^svma_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;

const sha256Hex = (text: string): string => createHash("sha256").update(text).digest("hex");

function writeFileAtomic(path: string, data: string): void {
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

export class ApiTokenStore {
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  private file(id: string): string {
    return join(this.dir, `${id}.json`);
  }

  private read(id: string): ApiTokenRecord | undefined {
    try {
      return JSON.parse(readFileSync(this.file(id), "utf8")) as ApiTokenRecord;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
  }

  create(options: { scope: ApiScope; description?: string; now?: number }): {
    token: string;
    record: ApiTokenRecord;
  } {
    const id = randomBytes(8).toString("hex");
    const secret = randomBytes(32).toString("base64url");
    const record: ApiTokenRecord = {
      id,
      sha256: sha256Hex(secret),
      scope: options.scope,
      created_at_ms: options.now ?? Date.now(),
      description: options.description ?? "",
      revoked_at_ms: null,
    };
    writeFileAtomic(this.file(id), `${JSON.stringify(record)}\n`);
    return { token: `svma_${id}_${secret}`, record };
  }

  list(): ApiTokenRecord[] {
    return readdirSync(this.dir)
      .filter((f) => /^[0-9a-f]{16}\.json$/.test(f))
      .map((f) => this.read(f.slice(0, 16)))
      .filter((r): r is ApiTokenRecord => r !== undefined)
      .sort((a, b) => a.created_at_ms - b.created_at_ms);
  }

  /** False when no such token. Revoking twice keeps the first time. */
  revoke(id: string, now = Date.now()): boolean {
    if (!/^[0-9a-f]{16}$/.test(id)) return false;
    const record = this.read(id);
    if (!record) return false;
    if (record.revoked_at_ms === null) {
      record.revoked_at_ms = now;
      writeFileAtomic(this.file(id), `${JSON.stringify(record)}\n`);
    }
    return true;
  }

  check(token: string): ApiTokenCheck {
    const m = TOKEN_RE.exec(token);
    if (!m) return { ok: false, reason: "malformed" };
    const record = this.read(m[1]!);
    if (!record) return { ok: false, reason: "unknown" };
    const given = Buffer.from(sha256Hex(m[2]!), "hex");
    const stored = Buffer.from(record.sha256, "hex");
    if (given.length !== stored.length || !timingSafeEqual(given, stored))
      return { ok: false, reason: "mismatch" };
    if (record.revoked_at_ms !== null) return { ok: false, reason: "revoked" };
    return { ok: true, token: record };
  }
}
