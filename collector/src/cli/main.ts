// shadowvm-collector: the collector's command line. Each command lives in its own module; the
// shared frame (shared/src/cli/command-line.ts) dispatches and turns errors into one clear line
// and an exit code: 0 ok, 1 the operation failed, 2 bad usage or configuration.
import { type CliProgram, runProgram, stdio } from "@shadowvm/shared";
import { AGENTS_USAGE, agentsCommand } from "./agents-command.js";
import { API_TOKEN_USAGE, apiTokenCommand } from "./api-token-command.js";
import { type CommandContext, GLOBAL_USAGE, type Output } from "./cli-context.js";
import { COMPACT_USAGE, compactCommand } from "./compact-command.js";
import { PRUNE_USAGE, pruneCommand } from "./prune-command.js";
import {
  alertsCommand,
  failuresCommand,
  hostsCommand,
  QUERY_USAGE,
  runsCommand,
  signaturesCommand,
  vmsCommand,
} from "./query-command.js";
import { REPORT_USAGE, reportCommand } from "./report-command.js";
import { RISK_USAGE, riskCommand } from "./risk-command.js";
import { SERVE_USAGE, serveCommand } from "./serve-command.js";
import { TOKEN_USAGE, tokenCommand } from "./token-command.js";

const COMMANDS: CliProgram<CommandContext>["commands"] = {
  serve: { summary: "run the collector (ingest, store, metrics)", usage: SERVE_USAGE, run: serveCommand },
  token: { summary: "create, list and revoke enrollment tokens", usage: TOKEN_USAGE, run: tokenCommand },
  agents: { summary: "list and revoke enrolled agents", usage: AGENTS_USAGE, run: agentsCommand },
  "api-token": {
    summary: "create, list and revoke query API tokens",
    usage: API_TOKEN_USAGE,
    run: apiTokenCommand,
  },
  report: { summary: "write a risk report now, list reports", usage: REPORT_USAGE, run: reportCommand },
  hosts: { summary: "hypervisor hosts as a table", usage: QUERY_USAGE, run: hostsCommand },
  vms: { summary: "VMs with their current risk", usage: QUERY_USAGE, run: vmsCommand },
  runs: { summary: "shadow runs (filter by VM, outcome, profile)", usage: QUERY_USAGE, run: runsCommand },
  failures: { summary: "failures with where and when", usage: QUERY_USAGE, run: failuresCommand },
  signatures: {
    summary: "failure signatures, most frequent first",
    usage: QUERY_USAGE,
    run: signaturesCommand,
  },
  alerts: { summary: "alerts from the risk engine", usage: QUERY_USAGE, run: alertsCommand },
  risk: { summary: "current failure risk per VM and signature", usage: RISK_USAGE, run: riskCommand },
  prune: { summary: "delete the data past its retention now", usage: PRUNE_USAGE, run: pruneCommand },
  compact: {
    summary: "give deleted rows' space back to the file system (collector stopped)",
    usage: COMPACT_USAGE,
    run: compactCommand,
  },
};

const PROGRAM: CliProgram<CommandContext> = {
  name: "shadowvm-collector",
  tagline: "stores what shadowvm agents see and find.",
  globalUsage: GLOBAL_USAGE,
  commands: COMMANDS,
};

export function main(
  argv: string[],
  io: Output = stdio,
  env: Record<string, string | undefined> = process.env,
  signal?: AbortSignal,
): Promise<number> {
  return runProgram(PROGRAM, argv, { io, env, ...(signal ? { signal } : {}) });
}
