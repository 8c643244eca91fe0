// What every collector command gets: parsed options, the validated config and the output streams
// (injectable, so commands are testable in-process). The frame is shared/src/cli/command-line.ts.
import type { ParseArgsConfig } from "node:util";
import { type BaseCommandContext, parseOptions, UsageError } from "@shadowvm/shared";
import { type CollectorConfig, loadCollectorConfig } from "../config/collector-config.js";

export { type Output, UsageError } from "@shadowvm/shared";

export const GLOBAL_OPTIONS = {
  config: { type: "string" },
  "data-dir": { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const satisfies ParseArgsConfig["options"];

export const GLOBAL_USAGE = `Options for every command:
  --config FILE     collector config (default /etc/shadowvm/collector.yaml when it exists)
  --data-dir DIR    state directory (overrides data_dir)
  --json            machine-readable output
  -h, --help        this help`;

export type CommandContext = BaseCommandContext;

export interface ParsedCommand {
  values: { config?: string; "data-dir"?: string; json?: boolean } & Record<
    string,
    string | boolean | string[] | undefined
  >;
  positionals: string[];
  config: CollectorConfig;
}

export function parseCommand(ctx: CommandContext, options: ParseArgsConfig["options"] = {}): ParsedCommand {
  const parsed = parseOptions(ctx.args, { ...GLOBAL_OPTIONS, ...options });
  const values = parsed.values as ParsedCommand["values"];
  const config = loadCollectorConfig({ file: values.config, dataDir: values["data-dir"] }, ctx.env);
  return { values, positionals: parsed.positionals, config };
}

/** "90s", "30m", "24h", "7d" -> milliseconds. */
export function parseDuration(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)(s|m|h|d)$/.exec(text.trim());
  if (!m)
    throw new UsageError(
      `${what} must be a duration like 90s, 30m, 24h or 7d (actual: ${JSON.stringify(text)})`,
    );
  const unit = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as "s" | "m" | "h" | "d"];
  const ms = Number(m[1]) * unit;
  if (ms <= 0) throw new UsageError(`${what} must be positive (actual: ${JSON.stringify(text)})`);
  return ms;
}
