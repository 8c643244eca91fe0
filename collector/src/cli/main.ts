// shadowvm-collector: the collector's command line. Each command lives in its own module; this
// file only dispatches and turns errors into one clear line and an exit code: 0 ok, 1 the
// operation failed, 2 bad usage or configuration.
import { ConfigError, describeError, SHADOWVM_VERSION } from "@shadowvm/shared";
import { AGENTS_USAGE, agentsCommand } from "./agents-command.js";
import { type CommandContext, GLOBAL_USAGE, type Output, UsageError } from "./cli-context.js";
import { SERVE_USAGE, serveCommand } from "./serve-command.js";
import { TOKEN_USAGE, tokenCommand } from "./token-command.js";

interface Command {
  summary: string;
  usage: string;
  run(ctx: CommandContext): Promise<number>;
}

const COMMANDS: Record<string, Command> = {
  serve: { summary: "run the collector (ingest, store, metrics)", usage: SERVE_USAGE, run: serveCommand },
  token: { summary: "create, list and revoke enrollment tokens", usage: TOKEN_USAGE, run: tokenCommand },
  agents: { summary: "list and revoke enrolled agents", usage: AGENTS_USAGE, run: agentsCommand },
};

function mainUsage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return `shadowvm-collector ${SHADOWVM_VERSION}: stores what shadowvm agents see and find.

Usage: shadowvm-collector <command> [options]

Commands:
${lines.join("\n")}

${GLOBAL_USAGE}`;
}

const stdio: Output = {
  out: (text) => process.stdout.write(`${text}\n`),
  err: (text) => process.stderr.write(`${text}\n`),
};

export async function main(
  argv: string[],
  io: Output = stdio,
  env: Record<string, string | undefined> = process.env,
  signal?: AbortSignal,
): Promise<number> {
  const [name, ...args] = argv;
  if (!name || name === "help" || name === "--help" || name === "-h") {
    io.out(mainUsage());
    return name ? 0 : 2;
  }
  if (name === "version" || name === "--version") {
    io.out(SHADOWVM_VERSION);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    io.err(`shadowvm-collector: unknown command "${name}"; commands: ${Object.keys(COMMANDS).join(", ")}`);
    return 2;
  }
  if (args.includes("--help") || args.includes("-h")) {
    io.out(`${command.usage}\n\n${GLOBAL_USAGE}`);
    return 0;
  }
  try {
    return await command.run({ args, io, env, ...(signal ? { signal } : {}) });
  } catch (err) {
    io.err(`shadowvm-collector: error: ${describeError(err)}`);
    if (err instanceof UsageError) io.err(`Run "shadowvm-collector ${name} --help" for usage.`);
    return err instanceof UsageError || err instanceof ConfigError ? 2 : 1;
  }
}
