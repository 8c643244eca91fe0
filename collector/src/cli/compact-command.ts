// `shadowvm-collector compact`: rewrites a stopped collector's database without the space of
// deleted rows (collector/src/store/compact.ts), e.g. after a retention was lowered and pruned.
import { databasePath } from "../config/collector-config.js";
import { compactDatabase } from "../store/compact.js";
import { type CommandContext, parseCommand, UsageError } from "./cli-context.js";

export const COMPACT_USAGE = `Usage: shadowvm-collector compact

Gives the space of deleted rows back to the file system: copies the database into a new file,
checks every table's row count, and renames the copy over the original. DuckDB reuses the space of
deleted rows but never shrinks its file, so run this after lowering a retention and pruning
(shadowvm-collector prune). The collector must be stopped, and the disk needs room for the copy.`;

const MiB = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;

export async function compactCommand(ctx: CommandContext): Promise<number> {
  const cmd = parseCommand(ctx);
  if (cmd.positionals.length)
    throw new UsageError(`compact takes no arguments (actual: ${cmd.positionals.join(" ")})`);
  const result = await compactDatabase(databasePath(cmd.config));
  if (cmd.values.json) {
    ctx.io.out(JSON.stringify(result, null, 2));
    return 0;
  }
  const rows = Object.values(result.rows).reduce((a, b) => a + b, 0);
  ctx.io.out(
    `compacted ${result.path}: ${MiB(result.bytes_before)} -> ${MiB(result.bytes_after)}, ${rows} rows in ${Object.keys(result.rows).length} tables checked, ${(result.duration_ms / 1000).toFixed(1)} s`,
  );
  return 0;
}
