// API tokens of the HTTP query API: "svma_<16 hex id>_<43 base64url secret>" with a scope (read or
// admin). Like the enrollment tokens (collector/src/auth/auth-store.ts) they live in small files,
// not in DuckDB, so `shadowvm-collector api-token create|revoke|list` works while `serve` runs:
//
//   auth/api-tokens/<id>.json  0600  { id, sha256 (hex of the secret part), scope, created_at_ms,
//                                      description, revoked_at_ms }
//
// Only the SHA-256 of the secret part is stored; it is compared in constant time. A revoked token
// is refused at its next request (the file is read on every check; it is a few hundred bytes).
import { mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import {
  newToken,
  parseToken,
  readJsonFile,
  secretMatches,
  TOKEN_ID_RE,
  writeFileAtomic,
} from "../auth/token-files.js";

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

export class ApiTokenStore {
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  private file(id: string): string {
    return join(this.dir, `${id}.json`);
  }

  private read(id: string): ApiTokenRecord | undefined {
    return readJsonFile<ApiTokenRecord>(this.file(id));
  }

  create(options: { scope: ApiScope; description?: string; now?: number }): {
    token: string;
    record: ApiTokenRecord;
  } {
    const { id, token, sha256 } = newToken("svma");
    const record: ApiTokenRecord = {
      id,
      sha256,
      scope: options.scope,
      created_at_ms: options.now ?? Date.now(),
      description: options.description ?? "",
      revoked_at_ms: null,
    };
    writeFileAtomic(this.file(id), `${JSON.stringify(record)}\n`);
    return { token, record };
  }

  list(): ApiTokenRecord[] {
    return readdirSync(this.dir)
      .filter((f) => f.endsWith(".json"))
      .map((f) => f.slice(0, -".json".length))
      .filter((id) => TOKEN_ID_RE.test(id))
      .map((id) => this.read(id))
      .filter((r): r is ApiTokenRecord => r !== undefined)
      .sort((a, b) => a.created_at_ms - b.created_at_ms);
  }

  /** False when no such token. Revoking twice keeps the first time. */
  revoke(id: string, now = Date.now()): boolean {
    if (!TOKEN_ID_RE.test(id)) return false;
    const record = this.read(id);
    if (!record) return false;
    if (record.revoked_at_ms === null) {
      record.revoked_at_ms = now;
      writeFileAtomic(this.file(id), `${JSON.stringify(record)}\n`);
    }
    return true;
  }

  check(token: string): ApiTokenCheck {
    const parsed = parseToken("svma", token);
    if (!parsed) return { ok: false, reason: "malformed" };
    const record = this.read(parsed.id);
    const matches = secretMatches(parsed.secret, record?.sha256);
    if (!record) return { ok: false, reason: "unknown" };
    if (!matches) return { ok: false, reason: "mismatch" };
    if (record.revoked_at_ms !== null) return { ok: false, reason: "revoked" };
    return { ok: true, token: record };
  }
}
