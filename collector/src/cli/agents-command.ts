// `shadowvm-collector agents list|revoke`: enrolled agents. Revoking removes the agent's secret
// (kept under auth/revoked for the record): its live connection is closed at the next heartbeat
// tick and it can neither authenticate nor enroll again until given a token.
import { formatTable } from "@shadowvm/shared";
import { AuthStore } from "../auth/auth-store.js";
import { authDir } from "../config/collector-config.js";
import { type CommandContext, parseCommand, UsageError } from "./cli-context.js";

export const AGENTS_USAGE = `Usage: shadowvm-collector agents list
       shadowvm-collector agents revoke <agent-id>

list     enrolled agents: id, hostname, enrollment time and the token that enrolled it.
revoke   deletes the agent's secret; the running collector closes its connection within one
         heartbeat interval. The agent must enroll again with a token to come back.`;

export async function agentsCommand(ctx: CommandContext): Promise<number> {
  const cmd = parseCommand(ctx);
  const [action, ...rest] = cmd.positionals;
  const store = new AuthStore(authDir(cmd.config));
  switch (action) {
    case "list": {
      const agents = store
        .listAgents()
        .map((a) => ({ ...a, enrolled_at: new Date(a.enrolled_at_ms).toISOString() }));
      if (cmd.values.json) ctx.io.out(JSON.stringify(agents, null, 2));
      else if (agents.length === 0) ctx.io.err("no enrolled agents");
      else {
        ctx.io.out(
          formatTable(
            ["AGENT", "HOSTNAME", "ENROLLED", "TOKEN"],
            agents.map((a) => [a.agent_id, a.hostname || "-", a.enrolled_at, a.token_id]),
          ),
        );
      }
      return 0;
    }
    case "revoke": {
      if (rest.length !== 1) throw new UsageError("agents revoke takes exactly one agent id");
      if (!store.revokeAgent(rest[0]!)) {
        ctx.io.err(`shadowvm-collector: error: no enrolled agent with id ${JSON.stringify(rest[0])}`);
        return 1;
      }
      ctx.io.err(`agent ${rest[0]} revoked`);
      return 0;
    }
    default:
      throw new UsageError(
        action
          ? `unknown agents action "${action}"; expected list or revoke`
          : "agents needs an action: list or revoke",
      );
  }
}
