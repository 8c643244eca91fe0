// shadowvm-collector: the collector's command line. Each command lives in its own module; the
// shared frame (shared/src/cli/command-line.ts) dispatches and turns errors into one clear line
// and an exit code: 0 ok, 1 the operation failed, 2 bad usage or configuration.
import { type CliProgram, runProgram, stdio } from "@shadowvm/shared";
import { AGENTS_USAGE, agentsCommand } from "./agents-command.js";
import { type CommandContext, GLOBAL_USAGE, type Output } from "./cli-context.js";
import { SERVE_USAGE, serveCommand } from "./serve-command.js";
import { TOKEN_USAGE, tokenCommand } from "./token-command.js";

const COMMANDS: CliProgram<CommandContext>["commands"] = {
  serve: { summary: "run the collector (ingest, store, metrics)", usage: SERVE_USAGE, run: serveCommand },
  token: { summary: "create, list and revoke enrollment tokens", usage: TOKEN_USAGE, run: tokenCommand },
  agents: { summary: "list and revoke enrolled agents", usage: AGENTS_USAGE, run: agentsCommand },
};

const PROGRAM: CliProgram<CommandContext> = {
  name: "shadowvm-collector",
  tagline: "stores what shadowvm agents see and find.",
  globalUsage: GLOBAL_USAGE,
  commands: COMMANDS,
};

export function main(
  argv: string[],
  io: Output = stdio,
  env: Record<string, string | undefined> = process.env,
  signal?: AbortSignal,
): Promise<number> {
  return runProgram(PROGRAM, argv, { io, env, ...(signal ? { signal } : {}) });
}
