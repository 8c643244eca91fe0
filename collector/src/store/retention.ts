// Data retention: what the collector deletes, and when. Telemetry samples arrive every few seconds
// per VM and each frame leaves a bookkeeping row, so without pruning the database grows without
// bound. Each rule deletes rows older than its table's retention (retention.* in the config, in
// days; 0 keeps them forever). The collector prunes at start and on retention.schedule
// (RetentionService); `shadowvm-collector prune` does it on demand. The risk history has its own
// retention (risk.history_days), pruned with every round (risk-engine.ts).
//
// Deletion runs on its own connection, beside ingest: DuckDB's MVCC lets it delete old rows while
// the ingest connection appends new ones. Deleted space is reused by new rows; the file does not
// shrink.
import type { DuckDBConnection, DuckDBValue } from "@duckdb/node-api";
import type { Logger } from "@shadowvm/shared";
import cron, { type ScheduledTask } from "node-cron";
import type { CollectorConfig } from "../config/collector-config.js";
import { queryable } from "../risk/risk-engine.js";

const DAY_MS = 86_400_000;

export type RetentionKey =
  | "samples_days"
  | "ingest_frames_days"
  | "production_events_days"
  | "alerts_days"
  | "shadow_results_days";

interface RetentionRule {
  table: string;
  key: RetentionKey;
  /** Rows to delete; $1 is the cutoff (ms since the epoch). */
  where: string;
}

/**
 * In deletion order: a run's failures go before the run they are found through, an alert's
 * deliveries before the alert.
 */
export const RETENTION_RULES: readonly RetentionRule[] = [
  { table: "samples", key: "samples_days", where: "ts_ms < $1" },
  // A VM its host no longer lists, whose last inventory is older than the samples kept: it left
  // (deleted or moved), and nothing of its telemetry is left to show.
  {
    table: "vms",
    key: "samples_days",
    where: `updated_at_ms < $1 AND NOT EXISTS (SELECT 1 FROM hosts h WHERE h.agent_id = vms.agent_id
              AND list_contains(from_json(h.vm_uuids, '["VARCHAR"]'), vms.uuid))`,
  },
  // The dedupe marks are in ingest_streams (kept): the per-frame rows are bookkeeping only.
  { table: "ingest_frames", key: "ingest_frames_days", where: "committed_at_ms < $1" },
  { table: "production_events", key: "production_events_days", where: "ts_ms < $1" },
  { table: "alert_deliveries", key: "alerts_days", where: "at_ms < $1" },
  // Firing alerts, and resolved ones whose resolution has not been delivered, are live state.
  {
    table: "alerts",
    key: "alerts_days",
    where: "status = 'resolved' AND delivered AND ends_at_ms < $1",
  },
  // A run's failures go with the run; a failure whose run never arrived goes by its own age.
  {
    table: "failures",
    key: "shadow_results_days",
    where: `EXISTS (SELECT 1 FROM shadow_runs r WHERE r.agent_id = failures.agent_id
              AND r.id = failures.shadow_run_id AND r.started_at_ms < $1)
            OR (received_at_ms < $1 AND NOT EXISTS (SELECT 1 FROM shadow_runs r
              WHERE r.agent_id = failures.agent_id AND r.id = failures.shadow_run_id))`,
  },
  { table: "shadow_runs", key: "shadow_results_days", where: "started_at_ms < $1" },
  { table: "captures", key: "shadow_results_days", where: "started_at_ms < $1 AND status <> 'running'" },
];

export type RetentionPolicy = Record<RetentionKey, number>;

export interface PrunedTable {
  table: string;
  /** The config key that keeps this table's rows. */
  key: RetentionKey;
  days: number;
  /** Rows older than this were deleted (or, in a dry run, would be). */
  cutoff_ms: number;
  rows: number;
}

export interface PruneResult {
  at_ms: number;
  dry_run: boolean;
  duration_ms: number;
  /** One entry per table with a retention (days > 0). */
  tables: PrunedTable[];
}

/** What runs the statements: a connection (deletes) or only a reader (dry runs). */
export interface PruneTarget {
  query(sql: string, values?: DuckDBValue[]): Promise<Record<string, unknown>[]>;
  /** Runs a statement; returns the rows it changed. Absent on read-only targets. */
  execute?(sql: string, values?: DuckDBValue[]): Promise<number>;
}

/** A DuckDB connection as a PruneTarget. */
export function pruneTarget(conn: DuckDBConnection): PruneTarget {
  return {
    ...queryable(conn),
    async execute(sql, values) {
      return (await conn.run(sql, values)).rowsChanged;
    },
  };
}

/**
 * Deletes (or with dryRun counts) every table's rows older than its retention. Each table is its
 * own statement and transaction: a failure leaves the tables before it pruned and is thrown.
 */
export async function pruneStore(
  target: PruneTarget,
  policy: RetentionPolicy,
  options: { now?: number; dryRun?: boolean } = {},
): Promise<PruneResult> {
  const now = options.now ?? Date.now();
  const dryRun = options.dryRun ?? false;
  if (!dryRun && !target.execute) throw new Error("pruneStore: this target is read-only (use dryRun)");
  const started = performance.now();
  const rules = RETENTION_RULES.filter((r) => policy[r.key] > 0);
  const present = new Set(
    (await target.query("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'")).map((r) =>
      String(r["table_name"]),
    ),
  );
  const missing = [...new Set(rules.map((r) => r.table).filter((t) => !present.has(t)))];
  if (missing.length)
    throw new Error(
      `the database has no table ${missing.join(", ")}: it was written by an older collector; start \`shadowvm-collector serve\` once to migrate it (or prune without --dry-run, which migrates it)`,
    );
  const tables: PrunedTable[] = [];
  for (const rule of rules) {
    const days = policy[rule.key];
    const cutoff = now - days * DAY_MS;
    const rows = dryRun
      ? Number(
          (await target.query(`SELECT count(*) AS n FROM ${rule.table} WHERE ${rule.where}`, [cutoff]))[0]?.[
            "n"
          ],
        )
      : await target.execute!(`DELETE FROM ${rule.table} WHERE ${rule.where}`, [cutoff]);
    tables.push({ table: rule.table, key: rule.key, days, cutoff_ms: cutoff, rows });
  }
  return { at_ms: now, dry_run: dryRun, duration_ms: performance.now() - started, tables };
}

/** The retention config as a policy. */
export function retentionPolicy(config: CollectorConfig): RetentionPolicy {
  const { schedule: _schedule, ...policy } = config.retention;
  return policy;
}

/**
 * Retentions shorter than what the risk engine reads would make it assess on less than it is
 * configured to (a trend without its window, a precursor forgotten inside its window): refused.
 */
export function retentionProblems(config: CollectorConfig): string[] {
  const r = config.retention;
  const risk = config.risk;
  const problems: string[] = [];
  const atLeast = (key: RetentionKey, hours: number, what: string) => {
    const days = r[key];
    if (days > 0 && days * 24 < hours)
      problems.push(
        `retention.${key} is invalid: expected 0 (keep forever) or at least ${+(hours / 24).toFixed(3)} days, the ${what} (actual: ${days})`,
      );
  };
  atLeast("samples_days", risk.telemetry_window_h, `risk.telemetry_window_h the trend is fitted on`);
  atLeast(
    "production_events_days",
    Math.max(risk.precursor_window_h, risk.production_failure_window_h),
    "longest of risk.precursor_window_h and risk.production_failure_window_h",
  );
  atLeast("shadow_results_days", risk.unstressed_window_h, "risk.unstressed_window_h");
  return problems;
}

export interface RetentionStatus {
  policy: RetentionPolicy;
  schedule: string;
  /** The newest completed prune, if one ran since start. */
  last: PruneResult | undefined;
  last_error: string | undefined;
}

/** What the query API uses of the service (GET /api/v1/retention, POST /api/v1/retention/prune). */
export interface RetentionControl {
  status(): RetentionStatus;
  prune(): Promise<PruneResult>;
  dryRun(): Promise<PruneResult>;
}

/**
 * Prunes at start and on a node-cron schedule, one prune at a time, on its own connection.
 * Failures are logged and counted and retried at the next run; they never stop the collector.
 */
export class RetentionService implements RetentionControl {
  private task: ScheduledTask | undefined;
  private running: Promise<PruneResult> | undefined;
  private last: PruneResult | undefined;
  private lastError: string | undefined;

  constructor(
    private readonly o: {
      conn: DuckDBConnection;
      policy: RetentionPolicy;
      schedule: string;
      logger: Logger;
      /** Called after each prune (metrics). */
      onPruned?: (result: PruneResult) => void;
      onError?: (err: Error) => void;
    },
  ) {}

  /** Starts the schedule ("" = none) and the first prune, in the background. */
  start(): void {
    if (this.o.schedule) {
      this.task = cron.schedule(this.o.schedule, () => this.runLogged("schedule"), {
        noOverlap: true,
        name: "shadowvm-retention",
      });
    }
    void this.runLogged("start");
  }

  /** Prunes now (after a running prune finishes). Throws what the prune threw. */
  async prune(): Promise<PruneResult> {
    while (this.running) await this.running.catch(() => {});
    this.running = pruneStore(pruneTarget(this.o.conn), this.o.policy).finally(() => {
      this.running = undefined;
    });
    try {
      const result = await this.running;
      this.last = result;
      this.lastError = undefined;
      this.o.onPruned?.(result);
      return result;
    } catch (err) {
      this.lastError = (err as Error).message;
      this.o.onError?.(err as Error);
      throw err;
    }
  }

  /** Counts what a prune now would delete, without deleting. */
  dryRun(): Promise<PruneResult> {
    return pruneStore(pruneTarget(this.o.conn), this.o.policy, { dryRun: true });
  }

  status(): RetentionStatus {
    return { policy: this.o.policy, schedule: this.o.schedule, last: this.last, last_error: this.lastError };
  }

  private async runLogged(trigger: string): Promise<void> {
    try {
      const result = await this.prune();
      const deleted = Object.fromEntries(result.tables.map((t) => [t.table, t.rows]));
      this.o.logger.info({ trigger, deleted, ms: Math.round(result.duration_ms) }, "retention: pruned");
    } catch (err) {
      this.o.logger.error({ err, trigger }, "retention: prune failed; retried at the next run");
    }
  }

  /** Stops the schedule and waits for a running prune. */
  async close(): Promise<void> {
    await this.task?.destroy();
    this.task = undefined;
    await this.running?.catch(() => {});
    this.o.conn.closeSync();
  }
}
