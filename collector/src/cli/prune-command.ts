// `shadowvm-collector prune [--dry-run]`: deletes the data past its retention now (retention.* in
// the config; collector/src/store/retention.ts). A running collector is asked through its query API
// (POST /api/v1/retention/prune, admin; GET /api/v1/retention for a dry run) and prunes with the
// policy it started with; a stopped collector's database is opened and pruned here.
import { ConfigError, formatTable } from "@shadowvm/shared";
import { type PruneResult, pruneStore, retentionPolicy, retentionProblems } from "../store/retention.js";
import { type CommandContext, parseCommand, UsageError } from "./cli-context.js";
import { openAccess } from "./store-access.js";

export const PRUNE_USAGE = `Usage: shadowvm-collector prune [--dry-run]

Deletes the rows older than their retention (retention.samples_days, ingest_frames_days,
production_events_days, alerts_days, shadow_results_days; 0 keeps a table forever) and prints how
many per table. The collector does this at start and on retention.schedule; run it after lowering a
retention. A running collector prunes with the policy it started with (restart it to apply a changed
config); a stopped collector's database is pruned here.
--dry-run  count what would be deleted; delete nothing.`;

export async function pruneCommand(ctx: CommandContext): Promise<number> {
  const cmd = parseCommand(ctx, { "dry-run": { type: "boolean" } });
  if (cmd.positionals.length)
    throw new UsageError(`prune takes no arguments (actual: ${cmd.positionals.join(" ")})`);
  const problems = retentionProblems(cmd.config);
  if (problems.length) throw new ConfigError("collector config", problems);
  const dryRun = cmd.values["dry-run"] === true;
  const policy = retentionPolicy(cmd.config);
  const access = await openAccess(cmd.config, dryRun ? "read" : "admin", { write: !dryRun });
  let result: PruneResult;
  try {
    if (access.kind === "db") {
      const { db, execute } = access;
      const target = { query: db.query.bind(db), ...(execute ? { execute } : {}) };
      result = await pruneStore(target, policy, { dryRun });
    } else {
      result = dryRun
        ? ((await access.request("GET", "/api/v1/retention")) as { due: PruneResult }).due
        : ((await access.request("POST", "/api/v1/retention/prune")) as PruneResult);
      const running = new Map<string, number>(result.tables.map((t) => [t.key, t.days]));
      for (const [key, days] of Object.entries(policy)) {
        if ((running.get(key) ?? 0) !== days)
          ctx.io.err(
            `shadowvm-collector: note: the running collector has retention.${key}: ${running.get(key) ?? 0}; the config now says ${days} (restart the collector to apply it)`,
          );
      }
    }
  } finally {
    access.close();
  }
  if (cmd.values.json) {
    ctx.io.out(JSON.stringify(result, null, 2));
    return 0;
  }
  if (result.tables.length === 0) {
    ctx.io.err("nothing to prune: every retention.*_days is 0 (keep forever)");
    return 0;
  }
  ctx.io.out(
    formatTable(
      ["TABLE", "KEPT", "OLDER THAN", dryRun ? "WOULD DELETE" : "DELETED"],
      result.tables.map((t) => [t.table, `${t.days} d`, new Date(t.cutoff_ms).toISOString(), String(t.rows)]),
    ),
  );
  const total = result.tables.reduce((n, t) => n + t.rows, 0);
  ctx.io.err(
    `${dryRun ? "would delete" : "deleted"} ${total} row(s) in ${Math.round(result.duration_ms)} ms${dryRun ? " (dry run: nothing deleted)" : ""}`,
  );
  return 0;
}
