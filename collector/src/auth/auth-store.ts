// Enrollment tokens and per-agent secrets (the flow in shared/proto/shadowvm/v1/control.proto).
//
// Kept as small files under <data_dir>/auth rather than in DuckDB because DuckDB lets one process
// open a database for writing: the operator's `shadowvm-collector token create` and `agents
// revoke` must work while `serve` runs. Every file is written to a temporary name and renamed (or
// hard-linked, for the create-only enrollment) into place, so a reader never sees half a file and
// two enrollments of one agent id cannot both win.
//
//   auth/                    0700
//     tokens/<id>.json       0600  { id, sha256 (hex of the secret part), created_at_ms,
//                                    expires_at_ms, description, revoked_at_ms }
//     agents/<key>.json      0600  { agent_id, secret (base64), enrolled_at_ms, token_id, hostname }
//     revoked/<key>.<ms>.json       an agent's file as it was when revoked (audit trail)
//
// <key> is the agent id in base64url, so any id the wire accepts is a safe file name. Tokens are
// "svmt_<id>_<secret>": only the SHA-256 of the secret part is stored, compared in constant time.
// Agent secrets are stored as they are: the collector needs them to compute the HMAC proofs.
import { randomBytes } from "node:crypto";
import { chmodSync, linkSync, mkdirSync, readdirSync, renameSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { newAgentSecret } from "@shadowvm/shared";
import {
  newToken,
  parseToken,
  readJsonFile,
  secretMatches,
  TOKEN_ID_RE,
  writeFileAtomic,
} from "./token-files.js";

export interface TokenRecord {
  id: string;
  sha256: string;
  created_at_ms: number;
  expires_at_ms: number;
  description: string;
  revoked_at_ms: number | null;
}

export interface AgentRecord {
  agent_id: string;
  secret: string;
  enrolled_at_ms: number;
  token_id: string;
  hostname: string;
}

export type TokenCheck =
  | { ok: true; token: TokenRecord }
  | { ok: false; reason: "malformed" | "unknown" | "revoked" | "expired" | "mismatch" };

export class AuthStore {
  readonly dir: string;
  private readonly tokensDir: string;
  private readonly agentsDir: string;
  private readonly revokedDir: string;

  constructor(dir: string) {
    this.dir = dir;
    this.tokensDir = join(dir, "tokens");
    this.agentsDir = join(dir, "agents");
    this.revokedDir = join(dir, "revoked");
    for (const d of [dir, this.tokensDir, this.agentsDir, this.revokedDir]) {
      mkdirSync(d, { recursive: true, mode: 0o700 });
      chmodSync(d, 0o700);
    }
  }

  // --- enrollment tokens -------------------------------------------------------------------------

  /** Creates a token; the returned `token` string is shown once and never stored. */
  createToken(options: { ttlMs: number; description?: string; now?: number }): {
    token: string;
    record: TokenRecord;
  } {
    const now = options.now ?? Date.now();
    const { id, token, sha256 } = newToken("svmt");
    const record: TokenRecord = {
      id,
      sha256,
      created_at_ms: now,
      expires_at_ms: now + options.ttlMs,
      description: options.description ?? "",
      revoked_at_ms: null,
    };
    writeFileAtomic(join(this.tokensDir, `${id}.json`), `${JSON.stringify(record, null, 2)}\n`);
    return { token, record };
  }

  listTokens(): TokenRecord[] {
    return readdirSync(this.tokensDir)
      .filter((f) => f.endsWith(".json"))
      .map((f) => readJsonFile<TokenRecord>(join(this.tokensDir, f)))
      .filter((t): t is TokenRecord => t !== undefined)
      .sort((a, b) => a.created_at_ms - b.created_at_ms);
  }

  /** Marks a token revoked; false when there is no such token. */
  revokeToken(id: string, now = Date.now()): boolean {
    if (!TOKEN_ID_RE.test(id)) return false;
    const path = join(this.tokensDir, `${id}.json`);
    const record = readJsonFile<TokenRecord>(path);
    if (!record) return false;
    if (record.revoked_at_ms === null) {
      record.revoked_at_ms = now;
      writeFileAtomic(path, `${JSON.stringify(record, null, 2)}\n`);
    }
    return true;
  }

  /** Checks a presented token (constant-time on the secret part). */
  checkToken(token: string, now = Date.now()): TokenCheck {
    const parsed = parseToken("svmt", token);
    if (!parsed) return { ok: false, reason: "malformed" };
    const record = readJsonFile<TokenRecord>(join(this.tokensDir, `${parsed.id}.json`));
    const matches = secretMatches(parsed.secret, record?.sha256);
    if (!record) return { ok: false, reason: "unknown" };
    if (!matches) return { ok: false, reason: "mismatch" };
    if (record.revoked_at_ms !== null) return { ok: false, reason: "revoked" };
    if (record.expires_at_ms <= now) return { ok: false, reason: "expired" };
    return { ok: true, token: record };
  }

  // --- agents ------------------------------------------------------------------------------------

  private agentPath(agentId: string): string {
    return join(this.agentsDir, `${Buffer.from(agentId, "utf8").toString("base64url")}.json`);
  }

  /** The agent's secret, or undefined when the agent is not enrolled (or was revoked). */
  agentSecret(agentId: string): Uint8Array | undefined {
    const record = readJsonFile<AgentRecord>(this.agentPath(agentId));
    return record ? new Uint8Array(Buffer.from(record.secret, "base64")) : undefined;
  }

  /**
   * Creates the agent's secret. Returns undefined when the id is already enrolled: an enrolled id
   * cannot enroll again until an operator revokes it (control.proto, step 3).
   */
  enrollAgent(agentId: string, tokenId: string, hostname: string, now = Date.now()): Uint8Array | undefined {
    const secret = newAgentSecret();
    const record: AgentRecord = {
      agent_id: agentId,
      secret: Buffer.from(secret).toString("base64"),
      enrolled_at_ms: now,
      token_id: tokenId,
      hostname,
    };
    const path = this.agentPath(agentId);
    const tmp = `${path}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
    writeFileAtomic(tmp, `${JSON.stringify(record, null, 2)}\n`);
    try {
      linkSync(tmp, path); // fails with EEXIST if another enrollment won
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") return undefined;
      throw err;
    } finally {
      unlinkSync(tmp);
    }
    return secret;
  }

  listAgents(): Omit<AgentRecord, "secret">[] {
    return readdirSync(this.agentsDir)
      .filter((f) => f.endsWith(".json"))
      .map((f) => readJsonFile<AgentRecord>(join(this.agentsDir, f)))
      .filter((a): a is AgentRecord => a !== undefined)
      .map(({ secret: _secret, ...rest }) => rest)
      .sort((a, b) => a.agent_id.localeCompare(b.agent_id));
  }

  /** Revokes an agent's secret (its connections are closed by the running service); false if unknown. */
  revokeAgent(agentId: string, now = Date.now()): boolean {
    const path = this.agentPath(agentId);
    const key = Buffer.from(agentId, "utf8").toString("base64url");
    try {
      renameSync(path, join(this.revokedDir, `${key}.${now}.json`));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
      throw err;
    }
  }
}
