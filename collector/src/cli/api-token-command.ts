// `shadowvm-collector api-token create|list|revoke`: tokens of the HTTP query API (scopes read and
// admin). A token is printed once, at creation; only its hash is stored
// (collector/src/api/api-token-store.ts). Works while serve runs; a revoked token is refused at its
// next request.
import { formatTable } from "@shadowvm/shared";
import { API_SCOPES, type ApiScope, ApiTokenStore } from "../api/api-token-store.js";
import { apiTokenDir } from "../config/collector-config.js";
import { type CommandContext, parseCommand, UsageError } from "./cli-context.js";

export const API_TOKEN_USAGE = `Usage: shadowvm-collector api-token create --scope read|admin [--description TEXT]
       shadowvm-collector api-token list
       shadowvm-collector api-token revoke <id>

create   prints a new API token (shown once). Send it as "Authorization: Bearer <token>" to
         http://<api.host>:<api.port>/api/v1/... read: every GET; admin: also POST/DELETE reports.
list     tokens with scope and state (active, revoked); never the tokens themselves.
revoke   the token is refused from its next request on.`;

export async function apiTokenCommand(ctx: CommandContext): Promise<number> {
  const cmd = parseCommand(ctx, { scope: { type: "string" }, description: { type: "string" } });
  const [action, ...rest] = cmd.positionals;
  const store = new ApiTokenStore(apiTokenDir(cmd.config));
  switch (action) {
    case "create": {
      if (rest.length) throw new UsageError(`api-token create takes no arguments (got ${rest.join(" ")})`);
      const scope = cmd.values["scope"];
      if (typeof scope !== "string" || !API_SCOPES.includes(scope as ApiScope))
        throw new UsageError(
          `api-token create needs --scope read or --scope admin (actual: ${scope ?? "missing"})`,
        );
      const description = typeof cmd.values["description"] === "string" ? cmd.values["description"] : "";
      const { token, record } = store.create({ scope: scope as ApiScope, description });
      if (cmd.values.json) ctx.io.out(JSON.stringify({ token, id: record.id, scope: record.scope }));
      else {
        ctx.io.out(token);
        ctx.io.err(`API token ${record.id} (scope ${record.scope}); it is shown only now`);
      }
      return 0;
    }
    case "list": {
      const tokens = store.list().map((t) => ({
        id: t.id,
        scope: t.scope,
        state: t.revoked_at_ms === null ? "active" : "revoked",
        created_at: new Date(t.created_at_ms).toISOString(),
        revoked_at: t.revoked_at_ms === null ? null : new Date(t.revoked_at_ms).toISOString(),
        description: t.description,
      }));
      if (cmd.values.json) ctx.io.out(JSON.stringify(tokens, null, 2));
      else if (tokens.length === 0)
        ctx.io.err("no API tokens (create one with: shadowvm-collector api-token create --scope read)");
      else
        ctx.io.out(
          formatTable(
            ["ID", "SCOPE", "STATE", "CREATED", "DESCRIPTION"],
            tokens.map((t) => [t.id, t.scope, t.state, t.created_at, t.description || "-"]),
          ),
        );
      return 0;
    }
    case "revoke": {
      if (rest.length !== 1) throw new UsageError("api-token revoke takes exactly one token id");
      if (!store.revoke(rest[0]!)) {
        ctx.io.err(`shadowvm-collector: error: no API token with id ${JSON.stringify(rest[0])}`);
        return 1;
      }
      ctx.io.err(`API token ${rest[0]} revoked`);
      return 0;
    }
    default:
      throw new UsageError(
        action
          ? `unknown api-token action "${action}"; expected create, list or revoke`
          : "api-token needs an action: create, list or revoke",
      );
  }
}
