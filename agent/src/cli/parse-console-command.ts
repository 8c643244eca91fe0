// `shadowvm-agent parse-console <file>`: the failure parser on a saved console log.
import { readFileSync } from "node:fs";
import { formatTable, parseConsole } from "@shadowvm/shared";
import { type CommandContext, parseCommand, UsageError } from "./cli-context.js";

export const PARSE_CONSOLE_USAGE = `Usage: shadowvm-agent parse-console <file|-> [--json]

Finds every failure report in a Linux console log (panics, oopses, BUGs, WARNINGs, hung tasks,
lockups, RCU stalls, OOM kills, I/O and filesystem errors, machine checks, segfaults), most
important first. --json prints {"failures":[{"title","class","frame","fingerprint","corrupted","line"}]},
with "failures": [] when the log holds none. "-" reads standard input.`;

export async function parseConsoleCommand(ctx: CommandContext): Promise<number> {
  const cmd = parseCommand(ctx, {});
  const [file, ...extra] = cmd.positionals;
  if (!file || extra.length)
    throw new UsageError("parse-console takes exactly one file (or - for standard input)");
  let text: Buffer;
  try {
    text = readFileSync(file === "-" ? 0 : file);
  } catch (err) {
    throw new UsageError(
      `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    );
  }
  const failures = parseConsole(text).map((f) => ({
    title: f.title,
    class: f.class,
    frame: f.frame,
    fingerprint: f.fingerprint,
    corrupted: f.corrupted,
    line: f.line,
  }));
  if (cmd.values.json) {
    ctx.io.out(JSON.stringify({ failures }, null, 2));
  } else if (failures.length === 0) {
    ctx.io.out("no failures found");
  } else {
    ctx.io.out(
      formatTable(
        ["LINE", "CLASS", "FINGERPRINT", "TITLE"],
        failures.map((f) => [
          String(f.line),
          f.class,
          f.fingerprint,
          `${f.title}${f.corrupted ? " (corrupted)" : ""}`,
        ]),
      ),
    );
  }
  return 0;
}
