// shadowvm-agent: the host agent's command line. Each command lives in its own module; this file
// only dispatches and turns errors into one clear line (never a stack trace) and an exit code:
// 0 ok, 1 the operation failed, 2 bad usage or configuration.
import { ConfigError, describeError, SHADOWVM_VERSION } from "@shadowvm/shared";
import { EXPLORE_USAGE, runExploreCommand } from "../explorer/index.js";
import { CAPTURE_USAGE, CAPTURES_USAGE, captureCommand, capturesCommand } from "./capture-commands.js";
import { type CommandContext, GLOBAL_USAGE, type Output, UsageError } from "./cli-context.js";
import { ENROLL_USAGE, enrollCommand } from "./enroll-command.js";
import { PARSE_CONSOLE_USAGE, parseConsoleCommand } from "./parse-console-command.js";
import { SERVE_USAGE, serveCommand } from "./serve-command.js";
import { VMS_USAGE, vmsCommand } from "./vms-command.js";

interface Command {
  summary: string;
  usage: string;
  run(ctx: CommandContext): Promise<number>;
}

const COMMANDS: Record<string, Command> = {
  "parse-console": {
    summary: "find and sign the failures in a Linux console log",
    usage: PARSE_CONSOLE_USAGE,
    run: parseConsoleCommand,
  },
  vms: { summary: "list the VMs this host runs, read over QMP", usage: VMS_USAGE, run: vmsCommand },
  explore: {
    summary: "search stress profiles for failures (against an oracle command or real shadows)",
    usage: EXPLORE_USAGE,
    // The explorer's own parser reads its flags; its output goes through the same streams.
    run: (ctx) =>
      runExploreCommand(ctx.args, {
        stdout: (t: string) => ctx.io.out(t.replace(/\n$/, "")),
        stderr: (t: string) => ctx.io.err(t.replace(/\n$/, "")),
      }),
  },
  capture: {
    summary: "live, consistent capture of a VM into the capture store",
    usage: CAPTURE_USAGE,
    run: captureCommand,
  },
  captures: {
    summary: "list, verify or remove stored captures",
    usage: CAPTURES_USAGE,
    run: capturesCommand,
  },
  serve: {
    summary: "run the agent: telemetry, spool, link to the collector",
    usage: SERVE_USAGE,
    run: serveCommand,
  },
  enroll: {
    summary: "enroll with the collector using a token, then exit",
    usage: ENROLL_USAGE,
    run: enrollCommand,
  },
};

function mainUsage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return `shadowvm-agent ${SHADOWVM_VERSION}: shadows production VMs to predict their failures.

Usage: shadowvm-agent <command> [options]

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
    io.err(`shadowvm-agent: unknown command "${name}"; commands: ${Object.keys(COMMANDS).join(", ")}`);
    return 2;
  }
  if (args.includes("--help") || args.includes("-h")) {
    io.out(`${command.usage}\n\n${GLOBAL_USAGE}`);
    return 0;
  }
  try {
    return await command.run({ args, io, env });
  } catch (err) {
    io.err(`shadowvm-agent: error: ${describeError(err)}`);
    if (err instanceof UsageError) io.err(`Run "shadowvm-agent ${name} --help" for usage.`);
    return err instanceof UsageError || err instanceof ConfigError ? 2 : 1;
  }
}
