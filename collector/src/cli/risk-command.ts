// `shadowvm-collector risk`: the latest round of risk assessments, as a table or JSON. Reads the
// database read-only, so it works while no collector holds the file; with a running collector,
// use the HTTP API (DuckDB lets only one process open the file).
import { createError, formatTable, formatTimeToFailure } from "@shadowvm/shared";
import { databasePath } from "../config/collector-config.js";
import { currentRisk, riskHistory } from "../risk/risk-engine.js";
import { openReadOnly } from "../store/ingest-store.js";
import { type CommandContext, parseCommand, UsageError } from "./cli-context.js";

export const RISK_USAGE = `Usage: shadowvm-collector risk [--vm UUID] [--all]

Prints the latest risk round: per VM and failure signature, the probability of failure within the
horizon, the confidence, the time to failure, the dominating stress dimension and the first
mitigation step. Rows without a claimed risk (no telemetry, not forecastable) are shown unless
--json is given with a filter; --vm UUID prints that VM's assessment history instead.`;

const fmt = (v: number | null) => (v === null ? "-" : v.toFixed(2));

export async function riskCommand(ctx: CommandContext): Promise<number> {
  const cmd = parseCommand(ctx, { vm: { type: "string" } });
  if (cmd.positionals.length)
    throw new UsageError(`risk takes no arguments (actual: ${cmd.positionals.join(" ")})`);
  const path = databasePath(cmd.config);
  let db: Awaited<ReturnType<typeof openReadOnly>>;
  try {
    db = await openReadOnly(path);
  } catch (err) {
    const msg = (err as Error).message;
    throw createError(
      "store",
      "open_failed",
      `cannot open ${path} read-only${/lock/i.test(msg) ? " (a running collector holds it: use the HTTP API)" : ""}: ${msg}`,
    );
  }
  try {
    const vm = cmd.values["vm"];
    const rows = typeof vm === "string" ? await riskHistory(db, vm, { limit: 200 }) : await currentRisk(db);
    if (cmd.values.json) {
      ctx.io.out(JSON.stringify(rows, null, 2));
      return 0;
    }
    if (rows.length === 0) {
      ctx.io.err(
        typeof vm === "string"
          ? `no risk assessments for VM ${vm}`
          : "no risk assessments (no shadow run has failed yet)",
      );
      return 0;
    }
    ctx.io.out(
      formatTable(
        [
          "COMPUTED",
          "VM",
          "SIGNATURE",
          "CLASS",
          "STATUS",
          "P(FAIL)",
          "CONFIDENCE",
          "TTF",
          "DIMENSION",
          "SOURCE",
          "MITIGATION",
        ],
        rows.map((a) => [
          new Date(a.computed_at_ms).toISOString(),
          a.vm_name,
          a.title.length > 40 ? `${a.title.slice(0, 39)}…` : a.title,
          a.class,
          a.status,
          fmt(a.probability),
          `${a.confidence_level} ${a.confidence.toFixed(2)}`,
          formatTimeToFailure(a.time_to_failure_h),
          a.dimension || "-",
          a.source,
          a.mitigations[0]?.action ?? "-",
        ]),
      ),
    );
    return 0;
  } finally {
    db.close();
  }
}
