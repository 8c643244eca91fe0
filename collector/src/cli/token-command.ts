// `shadowvm-collector token create|list|revoke`: enrollment tokens. A token is printed once, at
// creation; only its hash is stored (collector/src/auth/auth-store.ts). Works while serve runs.
import { formatTable } from "@shadowvm/shared";
import { AuthStore } from "../auth/auth-store.js";
import { authDir } from "../config/collector-config.js";
import { type CommandContext, parseCommand, parseDuration, UsageError } from "./cli-context.js";

export const TOKEN_USAGE = `Usage: shadowvm-collector token create [--ttl DURATION] [--description TEXT]
       shadowvm-collector token list
       shadowvm-collector token revoke <id>

create   prints a new enrollment token (shown once; give it to agents as collector.enrollment_token
         or in the file collector.enrollment_token_file). --ttl: 90s, 30m, 24h, 7d
         (default ingest.token_ttl_hours). A token enrolls any number of agents until it expires
         or is revoked; each agent id enrolls once.
list     tokens with their state (active, expired, revoked); never the tokens themselves.
revoke   refuses further enrollments with the token; agents enrolled with it keep their secrets
         (revoke those with "shadowvm-collector agents revoke <id>").`;

function state(t: { expires_at_ms: number; revoked_at_ms: number | null }, now: number): string {
  if (t.revoked_at_ms !== null) return "revoked";
  return t.expires_at_ms <= now ? "expired" : "active";
}

export async function tokenCommand(ctx: CommandContext): Promise<number> {
  const cmd = parseCommand(ctx, { ttl: { type: "string" }, description: { type: "string" } });
  const [action, ...rest] = cmd.positionals;
  const store = new AuthStore(authDir(cmd.config));
  const now = Date.now();
  switch (action) {
    case "create": {
      if (rest.length) throw new UsageError(`token create takes no arguments (got ${rest.join(" ")})`);
      const ttl = cmd.values["ttl"];
      const ttlMs =
        typeof ttl === "string" ? parseDuration(ttl, "--ttl") : cmd.config.ingest.token_ttl_hours * 3_600_000;
      const description = typeof cmd.values["description"] === "string" ? cmd.values["description"] : "";
      const { token, record } = store.createToken({ ttlMs, description });
      if (cmd.values.json) {
        ctx.io.out(
          JSON.stringify({ token, id: record.id, expires_at: new Date(record.expires_at_ms).toISOString() }),
        );
      } else {
        ctx.io.out(token);
        ctx.io.err(
          `token ${record.id} expires ${new Date(record.expires_at_ms).toISOString()}; it is shown only now`,
        );
      }
      return 0;
    }
    case "list": {
      const tokens = store.listTokens().map((t) => ({
        id: t.id,
        state: state(t, now),
        created_at: new Date(t.created_at_ms).toISOString(),
        expires_at: new Date(t.expires_at_ms).toISOString(),
        revoked_at: t.revoked_at_ms === null ? null : new Date(t.revoked_at_ms).toISOString(),
        description: t.description,
      }));
      if (cmd.values.json) ctx.io.out(JSON.stringify(tokens, null, 2));
      else if (tokens.length === 0)
        ctx.io.err("no enrollment tokens (create one with: shadowvm-collector token create)");
      else {
        ctx.io.out(
          formatTable(
            ["ID", "STATE", "CREATED", "EXPIRES", "DESCRIPTION"],
            tokens.map((t) => [t.id, t.state, t.created_at, t.expires_at, t.description || "-"]),
          ),
        );
      }
      return 0;
    }
    case "revoke": {
      if (rest.length !== 1) throw new UsageError("token revoke takes exactly one token id");
      if (!store.revokeToken(rest[0]!)) {
        ctx.io.err(`shadowvm-collector: error: no enrollment token with id ${JSON.stringify(rest[0])}`);
        return 1;
      }
      ctx.io.err(`token ${rest[0]} revoked`);
      return 0;
    }
    default:
      throw new UsageError(
        action
          ? `unknown token action "${action}"; expected create, list or revoke`
          : "token needs an action: create, list or revoke",
      );
  }
}
