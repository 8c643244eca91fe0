// `shadowvm-agent enroll`: enrolls this agent with the collector once (token -> per-agent secret,
// stored mode 0600 in the data dir), checks the collector's proof, and exits. `serve` does the
// same by itself on its first connection; this command lets an operator do it, and see it work,
// before starting the service.
import { existsSync } from "node:fs";
import { createLogger } from "@shadowvm/shared";
import { type CommandContext, parseCommand, UsageError } from "./cli-context.js";

export const ENROLL_USAGE = `Usage: shadowvm-agent enroll [--token TOKEN | --token-file FILE]

Connects to collector.url, enrolls with the token (default collector.enrollment_token or
collector.enrollment_token_file) unless this agent already has a secret, authenticates, and exits.
The secret is kept in collector.credentials_file (default <data_dir>/collector-credentials.json,
mode 0600). Exit code 0 when authenticated, 1 when the collector refused or could not be reached.`;

export async function enrollCommand(ctx: CommandContext): Promise<number> {
  const cmd = parseCommand(ctx, { token: { type: "string" }, "token-file": { type: "string" } });
  if (cmd.positionals.length)
    throw new UsageError(`enroll takes no arguments (got ${cmd.positionals.join(" ")})`);
  const config = cmd.config;
  if (!config.collector.url)
    throw new UsageError("collector.url is not set (in the config file or SHADOWVM_AGENT__COLLECTOR__URL)");
  const token = cmd.values["token"];
  const tokenFile = cmd.values["token-file"];
  if (typeof token === "string") config.collector.enrollment_token = token;
  if (typeof tokenFile === "string") config.collector.enrollment_token_file = tokenFile;
  const logger = createLogger({ service: "shadowvm-agent", level: config.log_level, fd: 2 });
  const { credentialsPath, sessionConnector } = await import("../telemetry/agent-service.js");
  const had = existsSync(credentialsPath(config));
  const session = await sessionConnector(config, logger)();
  session.close("enrolled");
  const result = {
    agent_id: config.agent_id,
    collector: config.collector.url,
    credentials_file: credentialsPath(config),
    enrolled_now: !had,
  };
  if (cmd.values.json) ctx.io.out(JSON.stringify(result));
  else
    ctx.io.out(
      had
        ? `agent ${config.agent_id} is enrolled with ${config.collector.url} and authenticated`
        : `agent ${config.agent_id} enrolled with ${config.collector.url}; secret stored in ${result.credentials_file}`,
    );
  return 0;
}
