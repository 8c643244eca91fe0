// The agent's per-agent secret (control.proto, step 3), kept in one small JSON file in the data
// dir, mode 0600, written atomically (temporary file, fsync, rename). The file names the agent id
// it belongs to: a secret is never used for another id.
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  writeSync,
} from "node:fs";
import { dirname } from "node:path";
import { createError, type Logger, silentLogger } from "@shadowvm/shared";

export interface AgentCredentials {
  agent_id: string;
  secret: Uint8Array;
  enrolled_at_ms: number;
  collector_url: string;
}

interface CredentialsFile {
  agent_id: string;
  secret: string;
  enrolled_at_ms: number;
  collector_url: string;
}

export class CredentialsFileStore {
  constructor(
    readonly path: string,
    private readonly logger: Logger = silentLogger(),
  ) {}

  /** The stored credentials for `agentId`, or undefined (none, or they belong to another id). */
  load(agentId: string): AgentCredentials | undefined {
    let text: string;
    try {
      text = readFileSync(this.path, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw createError("credentials", "unreadable", `cannot read ${this.path}: ${(err as Error).message}`);
    }
    const mode = statSync(this.path).mode & 0o777;
    if (mode & 0o077) {
      this.logger.warn(
        { path: this.path, mode: mode.toString(8) },
        "credentials: file readable by others; setting mode 0600",
      );
      chmodSync(this.path, 0o600);
    }
    let file: CredentialsFile;
    try {
      file = JSON.parse(text) as CredentialsFile;
    } catch (err) {
      throw createError(
        "credentials",
        "corrupt",
        `${this.path} is not valid JSON: ${(err as Error).message}`,
      );
    }
    if (file.agent_id !== agentId) {
      this.logger.warn(
        { path: this.path, stored_for: file.agent_id, agent_id: agentId },
        "credentials: stored secret belongs to another agent id; ignoring it",
      );
      return undefined;
    }
    const secret = new Uint8Array(Buffer.from(file.secret ?? "", "base64"));
    if (secret.byteLength < 16)
      throw createError("credentials", "corrupt", `${this.path} holds no valid secret`);
    return {
      agent_id: file.agent_id,
      secret,
      enrolled_at_ms: file.enrolled_at_ms,
      collector_url: file.collector_url,
    };
  }

  save(credentials: AgentCredentials): void {
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    const body: CredentialsFile = {
      agent_id: credentials.agent_id,
      secret: Buffer.from(credentials.secret).toString("base64"),
      enrolled_at_ms: credentials.enrolled_at_ms,
      collector_url: credentials.collector_url,
    };
    const tmp = `${this.path}.${randomBytes(4).toString("hex")}.tmp`;
    const fd = openSync(tmp, "wx", 0o600);
    try {
      writeSync(fd, `${JSON.stringify(body, null, 2)}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
  }
}
