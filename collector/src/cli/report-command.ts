// `shadowvm-collector report --now | list | show <id>`: risk reports (collector/src/reports).
// --now writes one through the running collector's API (which owns the database) or, when the
// collector is stopped, directly from a read-only view of the database.
import { formatTable } from "@shadowvm/shared";
import { DuckDbRiskSource } from "../api/risk-source.js";
import { reportsDir } from "../config/collector-config.js";
import { REPORT_FORMATS, type ReportMeta, ReportService } from "../reports/report-service.js";
import { type CommandContext, parseCommand, UsageError } from "./cli-context.js";
import { openAccess } from "./store-access.js";

export const REPORT_USAGE = `Usage: shadowvm-collector report --now [--threshold 0..1]
       shadowvm-collector report list
       shadowvm-collector report show <id> [--format json|csv|html|parquet]

--now    writes a report (JSON, CSV, Parquet, HTML with charts) into reports.dir
         (default <data_dir>/reports) and prints its id and files.
list     the stored reports, newest first (reports.retention_days / reports.max_reports prune them).
show     the path of one report's file (default html).`;

function service(
  config: ReturnType<typeof parseCommand>["config"],
  db: ConstructorParameters<typeof ReportService>[0]["db"],
) {
  return new ReportService({
    dir: reportsDir(config),
    db,
    risk: new DuckDbRiskSource(db),
    atRiskThreshold: config.reports.at_risk_threshold,
    retentionDays: config.reports.retention_days,
    maxReports: config.reports.max_reports,
  });
}

const noDb = { query: async () => [] };

export async function reportCommand(ctx: CommandContext): Promise<number> {
  const cmd = parseCommand(ctx, {
    now: { type: "boolean" },
    threshold: { type: "string" },
    format: { type: "string" },
  });
  const [action, ...rest] = cmd.positionals;
  const dir = reportsDir(cmd.config);
  if (cmd.values["now"]) {
    if (action) throw new UsageError(`report --now takes no action (got ${action})`);
    const t = cmd.values["threshold"];
    const threshold = typeof t === "string" ? Number(t) : undefined;
    if (threshold !== undefined && !(threshold >= 0 && threshold <= 1))
      throw new UsageError(`--threshold must be a number from 0 to 1 (actual: ${JSON.stringify(t)})`);
    const access = await openAccess(cmd.config, "admin");
    let meta: ReportMeta;
    try {
      if (access.kind === "db") {
        meta = await service(cmd.config, access.db).generate(
          "cli",
          threshold !== undefined ? { atRiskThreshold: threshold } : {},
        );
      } else {
        meta = (await access.request(
          "POST",
          "/api/v1/reports",
          threshold !== undefined ? { at_risk_threshold: threshold } : {},
        )) as ReportMeta;
      }
    } finally {
      access.close();
    }
    if (cmd.values.json) ctx.io.out(JSON.stringify(meta, null, 2));
    else {
      ctx.io.out(meta.id);
      ctx.io.err(
        `report ${meta.id}: ${meta.vms} VMs, ${meta.at_risk_vms} at risk; files in ${dir}/${meta.id}`,
      );
    }
    return 0;
  }
  const reports = service(cmd.config, noDb);
  switch (action) {
    case "list": {
      const all = reports.list();
      if (cmd.values.json) ctx.io.out(JSON.stringify(all, null, 2));
      else if (all.length === 0) ctx.io.err("no reports (write one with: shadowvm-collector report --now)");
      else
        ctx.io.out(
          formatTable(
            ["ID", "GENERATED", "TRIGGER", "VMS", "AT_RISK"],
            all.map((m) => [
              m.id,
              new Date(m.generated_at_ms).toISOString(),
              m.trigger,
              String(m.vms),
              String(m.at_risk_vms),
            ]),
          ),
        );
      return 0;
    }
    case "show": {
      if (rest.length !== 1) throw new UsageError("report show takes exactly one report id");
      const format = typeof cmd.values["format"] === "string" ? cmd.values["format"] : "html";
      if (!(REPORT_FORMATS as readonly string[]).includes(format))
        throw new UsageError(`--format must be one of ${REPORT_FORMATS.join(", ")} (actual: ${format})`);
      const f = reports.file(rest[0]!, format as (typeof REPORT_FORMATS)[number]);
      if (!f) {
        ctx.io.err(`shadowvm-collector: error: no report ${JSON.stringify(rest[0])}`);
        return 1;
      }
      ctx.io.out(f.path);
      return 0;
    }
    default:
      throw new UsageError(
        action
          ? `unknown report action "${action}"; expected --now, list or show`
          : "report needs --now, list or show",
      );
  }
}
