// Risk reports: built from the store and the risk source, written as JSON, CSV, Parquet (DuckDB's
// COPY) and a self-contained HTML file into <reports dir>/<id>/, listed and served by the API,
// generated on a node-cron schedule (reports.schedule), on demand (POST /api/v1/reports,
// `shadowvm-collector report --now`), and pruned by age and count (reports.retention_days,
// reports.max_reports).
import { randomBytes } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { type Logger, silentLogger } from "@shadowvm/shared";
import cron, { type ScheduledTask } from "node-cron";
import {
  boundaryPoints,
  listSignatures,
  listVms,
  type VmSignatureCount,
  vmSignatureCounts,
} from "../api/fleet-queries.js";
import type { Queryable } from "../api/reader-pool.js";
import type { RiskSource } from "../api/risk-source.js";
import { renderReportHtml } from "./report-html.js";

export const REPORT_FORMATS = ["json", "csv", "parquet", "html"] as const;
export type ReportFormat = (typeof REPORT_FORMATS)[number];
const FILES: Record<ReportFormat, { name: string; type: string }> = {
  json: { name: "report.json", type: "application/json" },
  csv: { name: "ranking.csv", type: "text/csv; charset=utf-8" },
  parquet: { name: "ranking.parquet", type: "application/vnd.apache.parquet" },
  html: { name: "report.html", type: "text/html; charset=utf-8" },
};

export interface RankingRow {
  rank: number;
  agent_id: string;
  hostname: string | null;
  vm_uuid: string;
  vm_name: string;
  state: string;
  score: number | null;
  confidence: number | null;
  level: string | null;
  assessed_at_ms: number | null;
  failures: number;
  signatures: number;
}

export interface AtRiskVm {
  agent_id: string;
  hostname: string | null;
  vm_uuid: string;
  vm_name: string;
  score: number | null;
  confidence: number | null;
  level: string | null;
  assessed_at_ms: number;
  /** The VM's own failure signatures from its shadow runs (most failures first). */
  signatures: VmSignatureCount[];
  /** What the risk source says (null when it says nothing). */
  risk_signatures: unknown;
  boundary: unknown;
  mitigations: unknown;
  explanation: unknown;
  risk_history: { t: number; score: number }[];
  boundary_points: Awaited<ReturnType<typeof boundaryPoints>>;
}

export interface ReportChanges {
  previous_report_id: string | null;
  previous_generated_at_ms: number | null;
  new_at_risk: string[];
  no_longer_at_risk: string[];
  score_changes: { vm_uuid: string; vm_name: string; from: number | null; to: number | null }[];
  new_signatures: string[];
}

export interface ReportData {
  id: string;
  generated_at_ms: number;
  trigger: "schedule" | "api" | "cli";
  at_risk_threshold: number;
  fleet: {
    hosts: number;
    vms: number;
    assessed_vms: number;
    at_risk_vms: number;
    shadow_runs: number;
    failures: number;
    signatures: number;
  };
  ranking: RankingRow[];
  at_risk: AtRiskVm[];
  signatures: {
    fingerprint: string;
    title: string;
    class: string;
    count: number;
    vms: number;
    last_seen_ms: number;
  }[];
  changes: ReportChanges;
}

/**
 * Names for the "what changed" lists: a name two VMs share across the two reports (a VM re-created
 * under its old name, say) gets its uuid's first 8 characters, or the same name would read as both
 * newly at risk and no longer at risk.
 */
export function vmLabeller(
  vms: readonly { vm_uuid: string; vm_name: string }[],
): (vm: { vm_uuid: string; vm_name: string }) => string {
  const uuidsByName = new Map<string, Set<string>>();
  for (const v of vms) {
    const set = uuidsByName.get(v.vm_name) ?? new Set<string>();
    set.add(v.vm_uuid);
    uuidsByName.set(v.vm_name, set);
  }
  return (v) =>
    (uuidsByName.get(v.vm_name)?.size ?? 0) > 1 ? `${v.vm_name} (${v.vm_uuid.slice(0, 8)})` : v.vm_name;
}

export interface ReportMeta {
  id: string;
  generated_at_ms: number;
  trigger: ReportData["trigger"];
  vms: number;
  at_risk_vms: number;
  files: Record<ReportFormat, number>;
}

export interface ReportOptions {
  dir: string;
  db: Queryable;
  risk: RiskSource;
  atRiskThreshold: number;
  retentionDays: number;
  maxReports: number;
  logger?: Logger;
}

const ID_RE = /^\d{8}T\d{9}Z-[0-9a-f]{4}$/;

function newId(now: number): string {
  return `${new Date(now).toISOString().replace(/[-:.]/g, "")}-${randomBytes(2).toString("hex")}`;
}

function csvCell(v: unknown): string {
  if (v === null || v === undefined) return "";
  const s = String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function toCsv(rows: readonly object[], columns: readonly string[]): string {
  const lines = [columns.join(",")];
  for (const r of rows) lines.push(columns.map((c) => csvCell((r as Record<string, unknown>)[c])).join(","));
  return `${lines.join("\n")}\n`;
}

const RANKING_COLUMNS = [
  "rank",
  "agent_id",
  "hostname",
  "vm_uuid",
  "vm_name",
  "state",
  "score",
  "confidence",
  "level",
  "assessed_at_ms",
  "failures",
  "signatures",
] as const;

export class ReportService {
  private task: ScheduledTask | undefined;
  private running: Promise<ReportMeta> | undefined;
  private readonly logger: Logger;

  constructor(private readonly o: ReportOptions) {
    this.logger = o.logger ?? silentLogger();
    mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  }

  /** Starts the schedule ("" = none). Throws on an invalid cron expression. */
  schedule(expression: string): void {
    if (!expression) return;
    if (!cron.validate(expression))
      throw new Error(`reports.schedule is not a valid cron expression: ${expression}`);
    this.task = cron.schedule(
      expression,
      async () => {
        try {
          const meta = await this.generate("schedule");
          this.logger.info({ report: meta.id }, "reports: scheduled report written");
        } catch (err) {
          this.logger.error({ err }, "reports: scheduled report failed");
        }
      },
      { noOverlap: true, name: "shadowvm-report" },
    );
  }

  async stop(): Promise<void> {
    await this.task?.destroy();
    this.task = undefined;
    await this.running?.catch(() => {});
  }

  /** One report at a time: a request while one is being written waits for it and gets a new one after. */
  async generate(
    trigger: ReportData["trigger"],
    options: { atRiskThreshold?: number } = {},
  ): Promise<ReportMeta> {
    const previous = this.running?.catch(() => undefined);
    const run = (async () => {
      await previous;
      return this.write(await this.build(trigger, Date.now(), options.atRiskThreshold));
    })();
    this.running = run;
    return run;
  }

  async build(
    trigger: ReportData["trigger"],
    now = Date.now(),
    atRiskThreshold?: number,
  ): Promise<ReportData> {
    const { db, risk } = this.o;
    const id = newId(now);
    const vms = await listVms(db, risk, {}, { limit: 100_000, offset: 0 });
    const perVm = await db.query(
      `SELECT r.agent_id, r.vm_uuid, count(*)::BIGINT AS failures, count(DISTINCT f.fingerprint)::BIGINT AS signatures
         FROM failures f JOIN shadow_runs r ON r.agent_id = f.agent_id AND r.id = f.shadow_run_id
        GROUP BY r.agent_id, r.vm_uuid`,
    );
    const counts = new Map(perVm.map((r) => [`${r["agent_id"]}\u0000${r["vm_uuid"]}`, r]));
    const ranking: RankingRow[] = vms.items.map((v, i) => {
      const c = counts.get(`${v.agent_id}\u0000${v.uuid}`);
      return {
        rank: i + 1,
        agent_id: v.agent_id,
        hostname: v.hostname,
        vm_uuid: v.uuid,
        vm_name: v.name,
        state: v.state,
        score: v.risk?.score ?? null,
        confidence: v.risk?.confidence ?? null,
        level: v.risk?.level ?? null,
        assessed_at_ms: v.risk?.assessed_at_ms ?? null,
        failures: Number(c?.["failures"] ?? 0),
        signatures: Number(c?.["signatures"] ?? 0),
      };
    });
    const threshold = atRiskThreshold ?? this.o.atRiskThreshold;
    const at_risk: AtRiskVm[] = [];
    for (const r of ranking) {
      if (r.score === null || r.score < threshold) continue;
      const [history, points, sigs] = await Promise.all([
        risk.riskHistory(r.agent_id, r.vm_uuid, { limit: 500 }),
        boundaryPoints(db, r.agent_id, r.vm_uuid),
        vmSignatureCounts(db, r.agent_id, r.vm_uuid, 20),
      ]);
      const latest = history[0];
      at_risk.push({
        agent_id: r.agent_id,
        hostname: r.hostname,
        vm_uuid: r.vm_uuid,
        vm_name: r.vm_name,
        score: r.score,
        confidence: r.confidence,
        level: r.level,
        assessed_at_ms: r.assessed_at_ms ?? 0,
        signatures: sigs,
        risk_signatures: latest?.signatures ?? null,
        boundary: latest?.boundary ?? null,
        mitigations: latest?.mitigations ?? null,
        explanation: latest?.explanation ?? null,
        risk_history: history
          .filter((h) => h.score !== null)
          .map((h) => ({ t: h.assessed_at_ms, score: h.score ?? 0 })),
        boundary_points: points,
      });
    }
    const sigs = await listSignatures(db, {}, { limit: 50, offset: 0 });
    const totals = (
      await db.query(
        `SELECT (SELECT count(*) FROM hosts)::BIGINT AS hosts, (SELECT count(*) FROM shadow_runs)::BIGINT AS runs,
                (SELECT count(*) FROM failures)::BIGINT AS failures,
                (SELECT count(DISTINCT fingerprint) FROM signatures)::BIGINT AS signatures`,
      )
    )[0];
    const signatures = sigs.items.map((s) => ({
      fingerprint: s.fingerprint,
      title: s.title,
      class: s.class,
      count: s.count,
      vms: s.vms.length,
      last_seen_ms: s.last_seen_ms,
    }));
    const data: ReportData = {
      id,
      generated_at_ms: now,
      trigger,
      at_risk_threshold: threshold,
      fleet: {
        hosts: Number(totals?.["hosts"] ?? 0),
        vms: ranking.length,
        assessed_vms: ranking.filter((r) => r.score !== null).length,
        at_risk_vms: at_risk.length,
        shadow_runs: Number(totals?.["runs"] ?? 0),
        failures: Number(totals?.["failures"] ?? 0),
        signatures: Number(totals?.["signatures"] ?? 0),
      },
      ranking,
      at_risk,
      signatures,
      changes: this.changes(ranking, at_risk, signatures),
    };
    return data;
  }

  private changes(ranking: RankingRow[], atRisk: AtRiskVm[], sigs: ReportData["signatures"]): ReportChanges {
    const prevMeta = this.list()[0];
    const prev = prevMeta ? this.readData(prevMeta.id) : undefined;
    if (!prev)
      return {
        previous_report_id: null,
        previous_generated_at_ms: null,
        new_at_risk: [],
        no_longer_at_risk: [],
        score_changes: [],
        new_signatures: [],
      };
    const prevAtRisk = new Set(prev.at_risk.map((v) => v.vm_uuid));
    const nowAtRisk = new Set(atRisk.map((v) => v.vm_uuid));
    const prevScore = new Map(prev.ranking.map((r) => [r.vm_uuid, r.score]));
    const prevSigs = new Set(prev.signatures.map((s) => s.fingerprint));
    const label = vmLabeller([...prev.ranking, ...prev.at_risk, ...ranking, ...atRisk]);
    return {
      previous_report_id: prev.id,
      previous_generated_at_ms: prev.generated_at_ms,
      new_at_risk: atRisk.filter((v) => !prevAtRisk.has(v.vm_uuid)).map(label),
      no_longer_at_risk: prev.at_risk.filter((v) => !nowAtRisk.has(v.vm_uuid)).map(label),
      score_changes: ranking
        .filter(
          (r) =>
            prevScore.has(r.vm_uuid) && Math.abs((prevScore.get(r.vm_uuid) ?? 0) - (r.score ?? 0)) >= 0.05,
        )
        .map((r) => ({
          vm_uuid: r.vm_uuid,
          vm_name: label(r),
          from: prevScore.get(r.vm_uuid) ?? null,
          to: r.score,
        })),
      new_signatures: sigs.filter((s) => !prevSigs.has(s.fingerprint)).map((s) => s.fingerprint),
    };
  }

  /** Writes the four files into a temporary directory, then renames it into place (never half a report). */
  private async write(data: ReportData): Promise<ReportMeta> {
    const final = join(this.o.dir, data.id);
    const tmp = join(this.o.dir, `.${data.id}.tmp`);
    mkdirSync(tmp, { recursive: true, mode: 0o700 });
    try {
      writeFileSync(join(tmp, FILES.json.name), `${JSON.stringify(data, null, 2)}\n`);
      writeFileSync(join(tmp, FILES.csv.name), toCsv(data.ranking, RANKING_COLUMNS));
      writeFileSync(join(tmp, FILES.html.name), renderReportHtml(data));
      // Parquet through DuckDB's COPY. COPY's target cannot be a bound parameter; both paths are
      // built here from the report directory and a generated id (no request input), quotes doubled.
      const src = join(tmp, FILES.csv.name).replace(/'/g, "''");
      const dst = join(tmp, FILES.parquet.name).replace(/'/g, "''");
      const types =
        "{'rank':'INTEGER','agent_id':'VARCHAR','hostname':'VARCHAR','vm_uuid':'VARCHAR','vm_name':'VARCHAR','state':'VARCHAR','score':'DOUBLE','confidence':'DOUBLE','level':'VARCHAR','assessed_at_ms':'BIGINT','failures':'BIGINT','signatures':'BIGINT'}";
      await this.o.db.query(
        `COPY (SELECT * FROM read_csv('${src}', header = true, columns = ${types})) TO '${dst}' (FORMAT parquet)`,
      );
      const files = Object.fromEntries(
        REPORT_FORMATS.map((f) => [f, statSync(join(tmp, FILES[f].name)).size]),
      ) as Record<ReportFormat, number>;
      const meta: ReportMeta = {
        id: data.id,
        generated_at_ms: data.generated_at_ms,
        trigger: data.trigger,
        vms: data.fleet.vms,
        at_risk_vms: data.fleet.at_risk_vms,
        files,
      };
      writeFileSync(join(tmp, "meta.json"), `${JSON.stringify(meta)}\n`);
      renameSync(tmp, final);
      this.prune(data.generated_at_ms);
      return meta;
    } catch (err) {
      rmSync(tmp, { recursive: true, force: true });
      throw err;
    }
  }

  /** Deletes reports older than the retention and beyond the count, oldest first; returns their ids. */
  prune(now = Date.now()): string[] {
    const all = this.list();
    const cutoff = now - this.o.retentionDays * 86_400_000;
    const gone = all.filter((m, i) => i >= this.o.maxReports || m.generated_at_ms < cutoff).map((m) => m.id);
    for (const id of gone) rmSync(join(this.o.dir, id), { recursive: true, force: true });
    return gone;
  }

  /** Reports, newest first. */
  list(): ReportMeta[] {
    if (!existsSync(this.o.dir)) return [];
    const out: ReportMeta[] = [];
    for (const id of readdirSync(this.o.dir)) {
      const m = this.get(id);
      if (m) out.push(m);
    }
    return out.sort((a, b) => b.generated_at_ms - a.generated_at_ms || b.id.localeCompare(a.id));
  }

  get(id: string): ReportMeta | undefined {
    if (!ID_RE.test(id)) return undefined;
    try {
      return JSON.parse(readFileSync(join(this.o.dir, id, "meta.json"), "utf8")) as ReportMeta;
    } catch {
      return undefined;
    }
  }

  readData(id: string): ReportData | undefined {
    if (!this.get(id)) return undefined;
    try {
      return JSON.parse(readFileSync(join(this.o.dir, id, FILES.json.name), "utf8")) as ReportData;
    } catch {
      return undefined;
    }
  }

  /** The file of one format, with its content type and a download name; undefined if no such report. */
  file(id: string, format: ReportFormat): { path: string; type: string; name: string } | undefined {
    if (!this.get(id)) return undefined;
    const f = FILES[format];
    return { path: join(this.o.dir, id, f.name), type: f.type, name: `shadowvm-report-${id}.${format}` };
  }

  delete(id: string): boolean {
    if (!this.get(id)) return false;
    rmSync(join(this.o.dir, id), { recursive: true, force: true });
    return true;
  }
}
