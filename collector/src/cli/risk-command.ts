// `shadowvm-collector risk`: the latest round of risk assessments, as a table or JSON. Reads the
// database read-only when the collector is stopped, or the running collector's query API
// (GET /api/v1/risk, /risk/history) when it holds the database (./store-access.ts).
import { formatTable, formatTimeToFailure } from "@shadowvm/shared";
import { DuckDbRiskSource } from "../api/risk-source.js";
import type { RiskAssessment } from "../risk/risk-engine.js";
import { type CommandContext, parseCommand, UsageError } from "./cli-context.js";
import { openAccess } from "./store-access.js";

export const RISK_USAGE = `Usage: shadowvm-collector risk [--vm UUID|NAME]

Prints the latest risk round: per VM and failure signature, the probability of failure within the
horizon, the confidence, the time to failure, the dominating stress dimension and the first
mitigation step. Rows without a claimed risk (no telemetry, not forecastable) are shown too.
--vm prints that VM's assessment history instead (the newest 200, newest first). Works whether or
not the collector runs (a running collector is asked through its query API).`;

/** How many rows of a VM's history are shown. */
const HISTORY_ROWS = 200;

const fmt = (v: number | null) => (v === null ? "-" : v.toFixed(2));

export async function riskCommand(ctx: CommandContext): Promise<number> {
  const cmd = parseCommand(ctx, { vm: { type: "string" } });
  if (cmd.positionals.length)
    throw new UsageError(`risk takes no arguments (actual: ${cmd.positionals.join(" ")})`);
  const vm = typeof cmd.values["vm"] === "string" ? cmd.values["vm"] : undefined;
  const access = await openAccess(cmd.config, "read");
  let rows: RiskAssessment[];
  try {
    if (access.kind === "db") {
      const filter = { vm, limit: vm === undefined ? 100_000 : HISTORY_ROWS };
      rows = await new DuckDbRiskSource(access.db).assessments(filter, vm !== undefined);
    } else {
      rows =
        vm === undefined
          ? await access.requestAll<RiskAssessment>("/api/v1/risk")
          : await access.requestAll<RiskAssessment>(
              `/api/v1/risk/history?${new URLSearchParams({ vm })}`,
              HISTORY_ROWS,
            );
    }
  } finally {
    access.close();
  }
  if (cmd.values.json) {
    ctx.io.out(JSON.stringify(rows, null, 2));
    return 0;
  }
  if (rows.length === 0) {
    ctx.io.err(
      vm !== undefined
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
}
