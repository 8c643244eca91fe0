// `shadowvm-collector hosts|vms|runs|failures|signatures|alerts`: the main views as tables (or
// --json), read from the database, or from the running collector's API (./store-access.ts).
import { formatTable } from "@shadowvm/shared";
import * as q from "../api/fleet-queries.js";
import { DuckDbRiskSource } from "../api/risk-source.js";
import { type CommandContext, parseCommand, UsageError } from "./cli-context.js";
import { openAccess } from "./store-access.js";

type View = "hosts" | "vms" | "runs" | "failures" | "signatures" | "alerts";

const FILTERS = {
  limit: { type: "string" },
  vm: { type: "string" },
  outcome: { type: "string" },
  profile: { type: "string" },
  class: { type: "string" },
  fingerprint: { type: "string" },
  state: { type: "string" },
} as const;

export const QUERY_USAGE = `Usage: shadowvm-collector hosts [--limit N]
       shadowvm-collector vms [--state STATE] [--limit N]            VMs, highest risk first
       shadowvm-collector runs [--vm UUID|NAME] [--outcome ok|failed|inconclusive] [--profile TEXT] [--limit N]
       shadowvm-collector failures [--vm UUID|NAME] [--fingerprint FP] [--class CLASS] [--limit N]
       shadowvm-collector signatures [--vm UUID] [--class CLASS] [--limit N]   most failures first
       shadowvm-collector alerts [--vm UUID] [--state STATE] [--limit N]

Reads the database directly when the collector is stopped, or the running collector's query API
(with a temporary read token) when it holds the database. Times are UTC.`;

const iso = (ms: unknown): string =>
  typeof ms === "number" && ms > 0 ? new Date(ms).toISOString().slice(0, 19) : "-";
const fix = (v: unknown, d = 2): string => (typeof v === "number" ? v.toFixed(d) : "-");

function table(view: View, items: Record<string, unknown>[]): string {
  switch (view) {
    case "hosts":
      return formatTable(
        ["AGENT", "HOSTNAME", "CPUS", "MEMORY_GB", "VMS", "DRIVER", "UPDATED"],
        items.map((h) => [
          String(h["agent_id"]),
          String(h["hostname"]),
          String(h["cpus"]),
          fix(Number(h["memory_bytes"]) / 2 ** 30, 1),
          String(h["vm_count"]),
          String(h["hypervisor_driver"]),
          iso(h["updated_at_ms"]),
        ]),
      );
    case "vms":
      return formatTable(
        ["NAME", "UUID", "HOST", "STATE", "RISK", "CONFIDENCE", "LEVEL"],
        items.map((v) => {
          const r = v["risk"] as Record<string, unknown> | null;
          return [
            String(v["name"]),
            String(v["uuid"]),
            String(v["hostname"] ?? v["agent_id"]),
            String(v["state"]),
            fix(r?.["score"]),
            fix(r?.["confidence"]),
            String(r?.["level"] ?? "-"),
          ];
        }),
      );
    case "runs":
      return formatTable(
        ["ID", "VM", "OUTCOME", "FAILURES", "STRATEGY", "CONTROL", "STARTED"],
        items.map((r) => [
          String(r["id"]),
          String(r["vm_name"]),
          String(r["outcome"]),
          String(r["failure_count"]),
          String(r["strategy"]),
          r["control"] ? "yes" : "no",
          iso(r["started_at_ms"]),
        ]),
      );
    case "failures":
      return formatTable(
        ["WHEN", "VM", "RUN", "CLASS", "FINGERPRINT", "TITLE"],
        items.map((f) => [
          iso(f["occurred_at_ms"]),
          String(f["vm_name"] ?? "-"),
          String(f["shadow_run_id"]),
          String(f["class"]),
          String(f["fingerprint"]).slice(0, 16),
          String(f["title"]),
        ]),
      );
    case "signatures":
      return formatTable(
        ["FINGERPRINT", "COUNT", "CLASS", "VMS", "LAST_SEEN", "TITLE"],
        items.map((s) => [
          String(s["fingerprint"]).slice(0, 16),
          String(s["count"]),
          String(s["class"]),
          String((s["vms"] as unknown[]).length),
          iso(s["last_seen_ms"]),
          String(s["title"]),
        ]),
      );
    case "alerts":
      return formatTable(
        ["ID", "VM", "SEVERITY", "STATE", "STARTED", "TITLE"],
        items.map((a) => [
          String(a["id"]),
          String(a["vm_name"]),
          String(a["severity"]),
          String(a["state"]),
          iso(a["created_at_ms"]),
          String(a["title"]),
        ]),
      );
  }
}

function queryCommand(view: View) {
  return async (ctx: CommandContext): Promise<number> => {
    const cmd = parseCommand(ctx, FILTERS);
    if (cmd.positionals.length)
      throw new UsageError(`${view} takes options only (got ${cmd.positionals.join(" ")})`);
    const s = (k: keyof typeof FILTERS): string | undefined => {
      const v = cmd.values[k];
      return typeof v === "string" ? v : undefined;
    };
    const limitText = s("limit") ?? "50";
    const limit = Number(limitText);
    if (!Number.isInteger(limit) || limit < 1 || limit > 100_000)
      throw new UsageError(
        `--limit must be an integer from 1 to 100000 (actual: ${JSON.stringify(limitText)})`,
      );
    const outcome = s("outcome");
    if (outcome !== undefined && !(q.RUN_OUTCOMES as readonly string[]).includes(outcome))
      throw new UsageError(
        `--outcome must be one of ${q.RUN_OUTCOMES.join(", ")} (actual: ${JSON.stringify(outcome)})`,
      );
    const page = { limit, offset: 0 };
    const access = await openAccess(cmd.config, "read");
    let items: Record<string, unknown>[];
    try {
      if (access.kind === "db") {
        const db = access.db;
        const risk = new DuckDbRiskSource(db);
        const found = await {
          hosts: () => q.listHosts(db, {}, page),
          vms: () => q.listVms(db, risk, { state: s("state") }, page),
          runs: () =>
            q.listShadowRuns(db, { vm: s("vm"), outcome: s("outcome"), profile: s("profile") }, page),
          failures: () =>
            q.listFailures(db, { vm: s("vm"), fingerprint: s("fingerprint"), class: s("class") }, page),
          signatures: () => q.listSignatures(db, { vm: s("vm"), class: s("class") }, page),
          alerts: async () => ({
            items: await risk.alerts({ vm_uuid: s("vm"), state: s("state"), limit, offset: 0 }),
            more: false,
          }),
        }[view]();
        items = found.items as unknown as Record<string, unknown>[];
      } else {
        const params = new URLSearchParams({ limit: String(Math.min(limit, 1000)) });
        const add = (name: string, v: string | undefined) => v !== undefined && params.set(name, v);
        const path = {
          hosts: "hosts",
          vms: "vms",
          runs: "shadow-runs",
          failures: "failures",
          signatures: "signatures",
          alerts: "alerts",
        }[view];
        if (view === "vms" || view === "alerts") add("state", s("state"));
        if (view !== "hosts" && view !== "vms") add("vm", s("vm"));
        if (view === "runs") {
          add("outcome", s("outcome"));
          add("profile", s("profile"));
        }
        if (view === "failures") add("fingerprint", s("fingerprint"));
        if (view === "failures" || view === "signatures") add("class", s("class"));
        items = await access.requestPage(`/api/v1/${path}?${params}`);
      }
    } finally {
      access.close();
    }
    if (cmd.values.json) ctx.io.out(JSON.stringify(items, null, 2));
    else if (items.length === 0) ctx.io.err(`no ${view}`);
    else ctx.io.out(table(view, items));
    return 0;
  };
}

export const hostsCommand = queryCommand("hosts");
export const vmsCommand = queryCommand("vms");
export const runsCommand = queryCommand("runs");
export const failuresCommand = queryCommand("failures");
export const signaturesCommand = queryCommand("signatures");
export const alertsCommand = queryCommand("alerts");
