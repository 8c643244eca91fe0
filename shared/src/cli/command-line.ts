// The command-line frame both services' CLIs share: option parsing that turns mistakes into usage
// errors, dispatch to one module per command, and the rule that an error is one clear line
// (`<program>: error: ...`, never a stack trace) with exit code 0 ok, 1 the operation failed,
// 2 bad usage or configuration.
import { type ParseArgsConfig, parseArgs } from "node:util";
import { ConfigError } from "../config/load-config.js";
import { describeError, ShadowvmError } from "../errors.js";
import { SHADOWVM_VERSION } from "../version.js";

export interface Output {
  out(text: string): void;
  err(text: string): void;
}

/** Process stdout/stderr, one line per call. */
export const stdio: Output = {
  out: (text) => process.stdout.write(`${text}\n`),
  err: (text) => process.stderr.write(`${text}\n`),
};

/** Bad usage: printed with a pointer to the command's --help, exit code 2. */
export class UsageError extends ShadowvmError {
  constructor(message: string) {
    super("cli", "usage", message);
    this.name = "UsageError";
  }
}

export interface BaseCommandContext {
  args: string[];
  io: Output;
  env: Record<string, string | undefined>;
  /** Aborted on SIGTERM/SIGINT (services stop gracefully). */
  signal?: AbortSignal;
}

export interface CliCommand<C extends BaseCommandContext> {
  summary: string;
  usage: string;
  run(ctx: C): Promise<number>;
}

export interface CliProgram<C extends BaseCommandContext> {
  /** e.g. "shadowvm-agent" */
  name: string;
  /** One line after the name and version in the main usage. */
  tagline: string;
  /** Options every command takes, described. */
  globalUsage: string;
  commands: Record<string, CliCommand<C>>;
}

function mainUsage<C extends BaseCommandContext>(program: CliProgram<C>): string {
  const width = Math.max(...Object.keys(program.commands).map((c) => c.length));
  const lines = Object.entries(program.commands).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return `${program.name} ${SHADOWVM_VERSION}: ${program.tagline}

Usage: ${program.name} <command> [options]

Commands:
${lines.join("\n")}

${program.globalUsage}`;
}

/** Runs one command line of a program and returns its exit code. */
export async function runProgram<C extends BaseCommandContext>(
  program: CliProgram<C>,
  argv: string[],
  context: Omit<C, "args">,
): Promise<number> {
  const { io } = context;
  const [name, ...args] = argv;
  if (!name || name === "help" || name === "--help" || name === "-h") {
    io.out(mainUsage(program));
    return name ? 0 : 2;
  }
  if (name === "version" || name === "--version") {
    io.out(SHADOWVM_VERSION);
    return 0;
  }
  const command = program.commands[name];
  if (!command) {
    io.err(
      `${program.name}: unknown command "${name}"; commands: ${Object.keys(program.commands).join(", ")}`,
    );
    return 2;
  }
  if (args.includes("--help") || args.includes("-h")) {
    io.out(`${command.usage}\n\n${program.globalUsage}`);
    return 0;
  }
  try {
    return await command.run({ ...context, args } as C);
  } catch (err) {
    io.err(`${program.name}: error: ${describeError(err)}`);
    if (err instanceof UsageError) io.err(`Run "${program.name} ${name} --help" for usage.`);
    return err instanceof UsageError || err instanceof ConfigError ? 2 : 1;
  }
}

/** node:util parseArgs, strict, with positionals; its errors become UsageErrors. */
export function parseOptions(
  args: string[],
  options: NonNullable<ParseArgsConfig["options"]>,
): { values: Record<string, string | boolean | string[] | undefined>; positionals: string[] } {
  try {
    const parsed = parseArgs({ args, options, allowPositionals: true, strict: true });
    return {
      values: parsed.values as Record<string, string | boolean | string[] | undefined>,
      positionals: parsed.positionals,
    };
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}
