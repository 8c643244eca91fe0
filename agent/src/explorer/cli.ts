// `shadowvm-agent explore`: runs a campaign against an oracle command and prints the result.
// The agent's CLI (cli/explore-command.ts) parses the arguments once with parseExploreArgs, since
// it also handles `--vm`, and calls runOracleCampaign; runExploreCommand(argv) is the same from raw
// arguments to an exit code, for callers without that wiring (the tests).
import { readFile } from "node:fs/promises";
import { FAULT_KINDS, type FaultKind } from "@shadowvm/shared";
import type { ProductionVmData } from "./baseline.js";
import type { SignatureBoundary } from "./boundary.js";
import { type ExploreResult, explore } from "./explore.js";
import { OracleProcessRunner } from "./runner.js";
import { ExplorerStateStore } from "./state-store.js";
import { STRATEGIES, type StrategyName } from "./types.js";

export const EXPLORE_USAGE = `Usage: shadowvm-agent explore --oracle "<command>" [options]
       shadowvm-agent explore --vm <name|uuid> [--config FILE] [--data-dir DIR] [options]

Runs a stress-profile campaign. With --oracle, the oracle command is started once (sh -c) and gets
one JSON StressProfile per line on stdin; it must answer each with one line
{"failed": bool, "signatures": [...]}. With --vm, the trials run on real shadows of that VM: a live
capture, then batches of --batch-size isolated shadows (a control shadow with the first), failures
detected on their consoles, QEMU events and service probes; signatures are fingerprints, and the
runs go to the collector through the agent's spool when no running agent holds it.

Options:
  --oracle <command>       oracle program
  --vm <name|uuid>         run on real shadows of this production VM instead
  --no-control             (with --vm) no control shadow
  --budget <n>             trials to run (default 20)
  --strategy <name>        baseline | adaptive | random (default adaptive)
  --seed <s>               random seed (default 1)
  --vm-profile <file>      JSON with average_cpu_usage, average_memory_usage, average_disk_io
  --faults <a,b|none>      fault kinds to inject (default all: ${FAULT_KINDS.join(",")})
  --batch-size <k>         profiles per step, run together (default 4; with --vm: campaigns.parallel)
  --duration <s>           seconds per shadow run (default 120; with --vm: campaigns.duration_s)
  --timeout-ms <ms>        longest wait for one oracle answer (default 60000)
  --state-db <dir>         LevelDB directory for explorer state (with --vm-id)
  --vm-id <id>             resume this VM's campaign and save it after every batch
  --prior-vm <id,...>      import these VMs' trials from --state-db as priors
  --json                   print the result as JSON
Exit codes: 0 done, 1 the oracle failed (trials so far are still printed), 2 bad arguments.`;

export interface CommandIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

const defaultIo: CommandIo = {
  stdout: (t) => process.stdout.write(t),
  stderr: (t) => process.stderr.write(t),
};

export class ExploreUsageError extends Error {}
const UsageError = ExploreUsageError;

export interface ParsedArgs {
  /** Exactly one of oracle and vm is set. */
  oracle?: string;
  vm?: string;
  control: boolean;
  /** Agent config and data dir (real shadows). */
  config?: string;
  dataDir?: string;
  /** Flags given explicitly (real shadows fall back to the config for the others). */
  given: Set<string>;
  budget: number;
  strategy: StrategyName;
  seed: number | string;
  vmProfile?: string;
  faults?: FaultKind[];
  batchSize: number;
  durationS: number;
  timeoutMs: number;
  stateDb?: string;
  vmId?: string;
  priorVms: string[];
  json: boolean;
}

export function parseExploreArgs(argv: readonly string[]): ParsedArgs | "help" {
  const out: Partial<ParsedArgs> & { priorVms: string[]; json: boolean; given: Set<string> } = {
    priorVms: [],
    json: false,
    control: true,
    given: new Set(),
  };
  const num = (flag: string, v: string, integer: boolean, min: number) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min || (integer && !Number.isInteger(n))) {
      throw new UsageError(`${flag} needs ${integer ? "an integer" : "a number"} >= ${min}, got "${v}"`);
    }
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    if (flag === "--help" || flag === "-h") return "help";
    if (flag === "--json") {
      out.json = true;
      continue;
    }
    if (flag === "--no-control") {
      out.control = false;
      continue;
    }
    const eq = flag.indexOf("=");
    const name = eq > 0 ? flag.slice(0, eq) : flag;
    const value = eq > 0 ? flag.slice(eq + 1) : argv[++i];
    if (value === undefined) throw new UsageError(`${name} needs a value`);
    out.given.add(name);
    switch (name) {
      case "--oracle":
        out.oracle = value;
        break;
      case "--vm":
        out.vm = value;
        break;
      case "--config":
        out.config = value;
        break;
      case "--data-dir":
        out.dataDir = value;
        break;
      case "--budget":
        out.budget = num(name, value, true, 0);
        break;
      case "--strategy":
        if (!STRATEGIES.includes(value as StrategyName)) {
          throw new UsageError(`--strategy must be one of ${STRATEGIES.join(", ")}, got "${value}"`);
        }
        out.strategy = value as StrategyName;
        break;
      case "--seed":
        out.seed = /^-?\d+$/.test(value) ? Number(value) : value;
        break;
      case "--vm-profile":
        out.vmProfile = value;
        break;
      case "--faults": {
        const kinds = value === "none" || value === "" ? [] : value.split(",").map((s) => s.trim());
        for (const k of kinds) {
          if (!FAULT_KINDS.includes(k as FaultKind)) {
            throw new UsageError(`unknown fault kind "${k}"; known: ${FAULT_KINDS.join(", ")}`);
          }
        }
        out.faults = kinds as FaultKind[];
        break;
      }
      case "--batch-size":
        out.batchSize = num(name, value, true, 1);
        break;
      case "--duration":
        out.durationS = num(name, value, false, 1);
        break;
      case "--timeout-ms":
        out.timeoutMs = num(name, value, true, 1);
        break;
      case "--state-db":
        out.stateDb = value;
        break;
      case "--vm-id":
        out.vmId = value;
        break;
      case "--prior-vm":
        out.priorVms.push(...value.split(",").filter(Boolean));
        break;
      default:
        throw new UsageError(`unknown option ${name}`);
    }
  }
  if (!out.oracle && !out.vm) throw new UsageError("--oracle <command> or --vm <name|uuid> is required");
  if (out.oracle && out.vm) throw new UsageError("--oracle and --vm exclude each other");
  if ((out.vmId !== undefined || out.priorVms.length > 0) && !out.stateDb) {
    throw new UsageError("--vm-id and --prior-vm need --state-db");
  }
  return {
    budget: 20,
    strategy: "adaptive",
    seed: 1,
    batchSize: 4,
    durationS: 120,
    timeoutMs: 60_000,
    ...out,
  } as ParsedArgs;
}

export async function loadVmProfile(file: string): Promise<ProductionVmData> {
  let data: unknown;
  try {
    data = JSON.parse(await readFile(file, "utf8"));
  } catch (e) {
    throw new UsageError(`cannot read --vm-profile ${file}: ${(e as Error).message}`);
  }
  const o = (data ?? {}) as Record<string, unknown>;
  for (const k of ["average_cpu_usage", "average_memory_usage", "average_disk_io"]) {
    if (typeof o[k] !== "number" || !Number.isFinite(o[k]) || (o[k] as number) < 0) {
      throw new UsageError(`--vm-profile ${file}: "${k}" must be a non-negative number`);
    }
  }
  return {
    average_cpu_usage: o.average_cpu_usage as number,
    average_memory_usage: o.average_memory_usage as number,
    average_disk_io: o.average_disk_io as number,
  };
}

/** Runs `explore` from CLI arguments; returns the process exit code. */
export async function runExploreCommand(argv: readonly string[], io: CommandIo = defaultIo): Promise<number> {
  let args: ParsedArgs | "help";
  try {
    args = parseExploreArgs(argv);
  } catch (e) {
    return usageFailure(e, io);
  }
  if (args === "help") {
    io.stdout(`${EXPLORE_USAGE}\n`);
    return 0;
  }
  return runOracleCampaign(args, io);
}

/** A usage error becomes the message, the usage and exit code 2; anything else is rethrown. */
function usageFailure(e: unknown, io: CommandIo): number {
  if (!(e instanceof UsageError)) throw e;
  io.stderr(`explore: ${e.message}\n\n${EXPLORE_USAGE}\n`);
  return 2;
}

/** The oracle campaign of parsed `explore --oracle` arguments; returns the process exit code. */
export async function runOracleCampaign(args: ParsedArgs, io: CommandIo = defaultIo): Promise<number> {
  let vmProfile: ProductionVmData | undefined;
  try {
    if (args.vmProfile) vmProfile = await loadVmProfile(args.vmProfile);
  } catch (e) {
    return usageFailure(e, io);
  }

  const store = args.stateDb ? new ExplorerStateStore(args.stateDb) : undefined;
  if (!args.oracle) {
    io.stderr("explore: --vm runs on real shadows through the agent command line (shadowvm-agent explore)\n");
    return 2;
  }
  const runner = new OracleProcessRunner(args.oracle, { timeoutMs: args.timeoutMs });
  let result: ExploreResult;
  try {
    await store?.open();
    const priors = [];
    for (const id of args.priorVms) {
      const st = await store!.load(id);
      if (!st) io.stderr(`explore: no saved state for prior VM "${id}", skipped\n`);
      else priors.push(st);
    }
    result = await explore({
      runner,
      budget: args.budget,
      strategy: args.strategy,
      seed: args.seed,
      batchSize: args.batchSize,
      durationS: args.durationS,
      ...(vmProfile ? { vmProfile } : {}),
      ...(args.faults ? { faultKinds: args.faults } : {}),
      ...(store && args.vmId !== undefined ? { store, vmId: args.vmId } : {}),
      priors,
      onBatch: args.json
        ? undefined
        : (done, budget, sigs) => io.stderr(`explore: ${done}/${budget} trials, ${sigs} signature(s)\n`),
    });
  } finally {
    await runner.close();
    await store?.close();
  }

  if (args.json) {
    io.stdout(
      `${JSON.stringify({
        trials: result.trials.map((t) => ({ profile: t.profile, outcome: t.outcome })),
        signatures_found: result.signatures_found,
        boundary: result.boundary,
        ...(result.error ? { error: result.error } : {}),
      })}\n`,
    );
  } else io.stdout(formatSummary(result));
  if (result.error) {
    io.stderr(`explore: stopped early: ${result.error.message}\n`);
    return 1;
  }
  return 0;
}

/** The human-readable report. */
export function formatSummary(r: ExploreResult): string {
  const lines: string[] = [];
  const failed = r.trials.filter((t) => t.outcome.failed).length;
  lines.push(`strategy ${r.strategy}, seed ${String(r.seed)}: ${r.trials.length} trials, ${failed} failed`);
  if (r.signatures_found.length === 0) lines.push("no failure signatures found");
  else {
    lines.push(`signatures found (${r.signatures_found.length}):`);
    for (const sig of r.signatures_found) {
      const b = r.boundary[sig];
      const first = r.trials.findIndex((t) => t.outcome.signatures.includes(sig));
      const where = first >= 0 ? `first at trial ${first + 1}` : "seen in an earlier campaign";
      lines.push(`  ${sig}: ${where}, seen ${b?.trials_with_signature ?? 0} time(s)`);
      if (!b) continue;
      // The interval holds the true least stress in over 9 of 10 estimates (docs/explorer.md, point 4).
      const interval = b.min_stress_interval
        ? ` (likely between ${b.min_stress_interval[0]} and ${b.min_stress_interval[1]})`
        : "";
      const needs =
        b.needs
          .map(
            (n) =>
              `${n.knob} >= ${formatLevel(n.at_least)} (runs: ${formatLevel(n.between[0])}-${formatLevel(n.between[1])})${standInText(n)}`,
          )
          .join(", ") || "nothing";
      lines.push(
        `    least stress seen ${b.observed_min_stress}; estimated ${b.min_stress}${interval}, needs ${needs}`,
      );
      const p = b.min_stress_profile;
      const faults = p.faults.map((f) => `${f.kind}@${f.rate.toFixed(2)}`).join(" ") || "none";
      lines.push(
        `    at cpu ${p.cpu_load.toFixed(2)} mem ${p.memory_load.toFixed(2)} io ${p.io_load.toFixed(2)} ` +
          `latency ${p.net_latency_ms.toFixed(0)}ms loss ${p.net_loss_pct.toFixed(1)}% faults ${faults}`,
      );
    }
  }
  if (r.error) lines.push(`stopped early: ${r.error.message}`);
  return `${lines.join("\n")}\n`;
}

/** What could replace a need the runs have not established, for the text report. */
function standInText(n: SignatureBoundary["needs"][number]): string {
  if (n.established) return "";
  const others = n.stand_ins ?? [];
  return others.length === 0 ? " (may not be needed)" : ` (or instead: ${others.join(", ")})`;
}

/** A threshold in its profile unit: whole milliseconds or percent stay readable, loads keep two decimals. */
function formatLevel(v: number): string {
  return Math.abs(v) >= 10 ? v.toFixed(0) : v.toFixed(2);
}
