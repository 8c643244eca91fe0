// `shadowvm-agent shadow run|reap|capabilities`: campaigns of isolated, stressed shadows of a capture.
import { existsSync, readFileSync, rmSync } from "node:fs";
import { resolve } from "node:path";
import {
  describeError,
  formatTable,
  type Logger,
  ShadowvmError,
  type StressProfile,
  StressProfileError,
  stressProfileFromJson,
} from "@shadowvm/shared";
import { captureStoreLocation } from "../capture/capture-service.js";
import { CaptureStore } from "../capture/store/index.js";
import type { AgentConfig } from "../config/agent-config.js";
import type { DetectedFailure } from "../detection/index.js";
import { detectCgroups, ShadowCgroups } from "../host/cgroups.js";
import { restoreLibvirtCapture } from "../hypervisor/libvirt/libvirt-shadow.js";
import {
  createRestoreDir,
  openShadowLab,
  reapRestored,
  restoredRoot,
  shadowsDir,
} from "../shadow/open-lab.js";
import { emptyReapReport, type ReapReport, reapLeftovers, shadowsTag } from "../shadow/registry.js";
import type { RestoredCapture } from "../shadow/restored-capture.js";
import type { CampaignResult, LabEvent, ShadowLab, ShadowRunSpec } from "../shadow/shadow-lab.js";
import { type CommandContext, type ParsedCommand, parseCommand, UsageError } from "./cli-context.js";

export const SHADOW_USAGE = `Usage: shadowvm-agent shadow run <capture-id> --profile <json|file> [options]
       shadowvm-agent shadow capabilities <capture-id> [--json]
       shadowvm-agent shadow reap [--json]

run           boots isolated shadows of the capture, each pushed by a stress profile, watches how
              the guest breaks and tears everything down; streams what happens (started, stress
              applied, faults, failures, outcome). With --json, stdout holds one object:
              {"campaign","capture","control","runs":[{"shadow","profile","outcome","failures":[...]}]}
              (outcome ok|failed|inconclusive; each failure with class, title, fingerprint, ...)
              and the stream goes to stderr.
capabilities  what this host can do to shadows of the capture (stress kinds, fault kinds)
reap          removes what shadows of a dead agent left (also done at the start of every run)

Options of run:
  --profile <json|file>   a StressProfile (JSON object) or an array of them, inline or in a file;
                          repeatable; keys: cpu_load, memory_load, io_load, net_latency_ms,
                          net_loss_pct, faults [{kind, rate, at_s, duration_s}], duration_s
  --count K               K shadows of the one profile given (default: one per profile)
  --control               add an unstressed control shadow (validates the capture)
  --control-duration S    its run time (default: the longest profile's duration_s)
  --network user|netns    isolation mode (default: shadow.network)
  --bandwidth-kbit N      bandwidth cap per shadow (user mode: both directions; netns: towards the guest)
  --probe-path PATH       HTTP path the service probes GET (default: shadow.probe_path)
  --probe-port N          guest port of the service (default: shadow.probe_port)
  --key-file FILE         capture store key (default: capture.key_file or <data_dir>/keys/capture-store.key)
  --keep-restored         keep the restored capture (plaintext memory!) under <data_dir>/restored

Exit codes: 0 the campaign ran (its findings are in the outcomes), 1 it could not run, 2 usage.`;

const RUN_OPTIONS = {
  profile: { type: "string", multiple: true },
  count: { type: "string" },
  control: { type: "boolean" },
  "control-duration": { type: "string" },
  network: { type: "string" },
  "bandwidth-kbit": { type: "string" },
  "probe-path": { type: "string" },
  "probe-port": { type: "string" },
  "key-file": { type: "string" },
  "keep-restored": { type: "boolean" },
} as const;

/** Profiles from --profile values: inline JSON or a file; an object or an array each. */
export function parseProfiles(values: string[]): StressProfile[] {
  const out: StressProfile[] = [];
  for (const v of values) {
    const trimmed = v.trim();
    let text = trimmed;
    if (!trimmed.startsWith("{") && !trimmed.startsWith("[")) {
      if (!existsSync(trimmed)) throw new UsageError(`--profile ${v}: not JSON and no such file`);
      text = readFileSync(trimmed, "utf8");
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new UsageError(`--profile ${v.slice(0, 60)}: not valid JSON (${(err as Error).message})`);
    }
    const list = Array.isArray(json) ? json : [json];
    for (const [i, p] of list.entries()) {
      try {
        out.push(stressProfileFromJson(p));
      } catch (err) {
        if (err instanceof StressProfileError) {
          throw new UsageError(`${list.length > 1 ? `profile ${i + 1}: ` : ""}${err.message}`);
        }
        throw err;
      }
    }
  }
  return out;
}

function positiveNumber(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!(n > 0) || !Number.isFinite(n))
    throw new UsageError(`--${name} must be a positive number (actual: ${value})`);
  return n;
}

/** What `reapShadowLeftovers` did: the registry's report plus the restored captures it removed. */
export interface ShadowReapReport extends ReapReport {
  /** Restored captures (plaintext memory and disks) of dead runs removed from <data_dir>/restored. */
  restored: string[];
}

/** True when the reaper found nothing to remove and nothing went wrong. */
export function reapFoundNothing(r: ShadowReapReport): boolean {
  return (
    r.shadows.length + r.killed.length + r.netns.length + r.cgroups.length + r.dirs.length === 0 &&
    r.restored.length === 0 &&
    r.errors.length === 0
  );
}

/** One line for the operator (the CLI's output, a log message). */
export function describeReap(r: ShadowReapReport): string {
  return `reaped ${r.shadows.length} shadow(s): ${r.killed.length} process(es) killed, ${r.netns.length} namespace(s), ${r.cgroups.length} cgroup(s), ${r.dirs.length} director(y/ies), ${r.restored.length} restored capture(s) removed${r.skipped.length ? `; ${r.skipped.length} shadow(s) of a live agent left alone` : ""}${r.errors.length ? `; ${r.errors.length} error(s)` : ""}`;
}

/**
 * Reaps what shadows of a dead agent left (QEMU processes, namespaces, cgroups, overlays, sockets,
 * restored captures). For the agent's start-up (`serve`) as well as the CLI, so it never throws:
 * a shadows directory that does not exist (a fresh host) is nothing to reap and is not created,
 * and whatever fails is listed in `errors` while the rest is still reaped. It creates nothing
 * (no directory, no cgroup) and shadows of a live agent (a CLI run beside the service) are left
 * alone.
 */
export async function reapShadowLeftovers(config: AgentConfig, log?: Logger): Promise<ShadowReapReport> {
  const dir = shadowsDir(config);
  const message = (err: unknown) => (err instanceof Error ? err.message : String(err));
  let report: ShadowReapReport;
  try {
    let cgroups: ShadowCgroups | undefined;
    try {
      const support = detectCgroups();
      // The same parent the lab uses (ShadowLab's constructor), so its children are found.
      if (support.cpu || support.memory)
        cgroups = ShadowCgroups.forTag(support, shadowsTag(resolve(dir)), config.shadow.cgroup_parent);
    } catch {
      cgroups = undefined; // no cgroups to look at: shadows of this host had none either
    }
    report = { ...(await reapLeftovers(dir, cgroups, log)), restored: [] };
  } catch (err) {
    report = { ...emptyReapReport(), restored: [] };
    report.errors.push(`shadows under ${dir}: ${message(err)}`);
  }
  const restored = restoredRoot(config);
  try {
    report.restored = reapRestored(restored);
  } catch (err) {
    report.errors.push(`restored captures under ${restored}: ${message(err)}`);
  }
  return report;
}

function fmtOffset(ms: number): string {
  return `+${(ms / 1000).toFixed(1)}s`;
}

function describeEvent(e: LabEvent, t0: number): string {
  const at = `[${fmtOffset(Date.now() - t0)}]`;
  switch (e.type) {
    case "refused":
      return `${at} ${e.shadow} refused: ${e.reason}`;
    case "guard":
      return `${at} ${e.shadow} host guard stops it: ${e.reason}`;
    case "started":
      return `${at} ${e.shadow} started${e.control ? " (control)" : ""} in ${e.startMs} ms: pid ${e.pid}, ${e.network} network, probing ${e.probeUrl}`;
    case "stress":
      return `${at} ${e.shadow} stress ${e.what}: ${e.detail}`;
    case "fault":
      return `${at} ${e.shadow} fault ${e.what} at ${fmtOffset(e.offsetMs)}: ${e.detail}`;
    case "note":
      return `${at} ${e.shadow} note (${e.what}): ${e.detail}`;
    case "failure":
      return `${at} ${e.shadow} failure ${e.failure.class} "${e.failure.title}" (${e.failure.source}, ${fmtOffset(e.failure.offsetMs)})`;
    case "outcome":
      return `${at} ${e.shadow} outcome ${e.outcome}${e.failures.length ? `: ${e.failures.length} failure(s), first "${e.failures[0]!.title}"` : ""}${e.notes.length ? ` [${e.notes.join("; ")}]` : ""}`;
    case "stopped":
      return `${at} ${e.shadow} stopped (${e.reason}); ${e.leftovers.length ? `LEFT: ${e.leftovers.join(", ")}` : "every trace removed"}`;
    case "control":
      return `${at} control verdict: ${e.verdict.healthy ? "healthy, the capture is valid" : `UNHEALTHY (${e.verdict.reason}); stressed outcomes are inconclusive`}`;
  }
}

function failureJson(f: DetectedFailure): Record<string, unknown> {
  return {
    class: f.class,
    title: f.title,
    fingerprint: f.fingerprint,
    source: f.source,
    kind: f.kind,
    offset_ms: Math.round(f.offsetMs),
    count: f.count,
    evidence: f.evidence.slice(0, 10),
  };
}

export function campaignJson(r: CampaignResult): Record<string, unknown> {
  return {
    campaign: r.campaign,
    capture: r.capture,
    vm: r.vm,
    network: r.network,
    started_at: r.startedAt,
    finished_at: r.finishedAt,
    ...(r.control ? { control: r.control } : {}),
    runs: r.runs.map((run) => ({
      shadow: run.shadow,
      control: run.control,
      profile: run.profile,
      outcome: run.outcome,
      failures: run.failures.map(failureJson),
      notes: run.notes,
      ...(run.startMs !== undefined ? { start_ms: run.startMs } : {}),
      ...(run.ranMs !== undefined ? { ran_ms: run.ranMs } : {}),
      ...(run.stopReason ? { stop_reason: run.stopReason } : {}),
      ...(run.demand
        ? {
            demand: {
              cpu_cores: Number(run.demand.cpuCores.toFixed(4)),
              io_bytes_per_s: Math.round(run.demand.ioBytesPerSec),
              io_ops_per_s: Number(run.demand.ioOpsPerSec.toFixed(2)),
              ...(run.demand.memUsedBytes !== undefined ? { mem_used_bytes: run.demand.memUsedBytes } : {}),
            },
          }
        : {}),
      ...(run.consoleTail ? { console_tail: run.consoleTail } : {}),
      ...(run.probes
        ? {
            probes: {
              sent: run.probes.sent,
              ok: run.probes.ok,
              failed: run.probes.failed,
              p50_ms: run.probes.p50Ms,
            },
          }
        : {}),
    })),
  };
}

async function runCommand(ctx: CommandContext, cmd: ParsedCommand, captureId: string): Promise<number> {
  const v = cmd.values;
  let profiles = parseProfiles((v["profile"] as string[] | undefined) ?? []);
  const count = positiveNumber("count", v["count"] as string | undefined);
  if (count !== undefined) {
    if (!Number.isInteger(count)) throw new UsageError(`--count must be a whole number (actual: ${count})`);
    if (profiles.length === 1) profiles = Array.from({ length: count }, () => profiles[0]!);
    else if (profiles.length !== count)
      throw new UsageError(`--count ${count} does not match the ${profiles.length} profiles given`);
  }
  const control = v["control"] === true;
  if (profiles.length === 0 && !control)
    throw new UsageError("shadow run needs --profile (or --control alone)");
  const network = v["network"] as string | undefined;
  if (network !== undefined && network !== "user" && network !== "netns")
    throw new UsageError(`--network must be user or netns (actual: ${network})`);
  const bandwidth = positiveNumber("bandwidth-kbit", v["bandwidth-kbit"] as string | undefined);
  const controlDuration = positiveNumber("control-duration", v["control-duration"] as string | undefined);
  const probePath = v["probe-path"] as string | undefined;
  if (probePath !== undefined && !probePath.startsWith("/"))
    throw new UsageError(`--probe-path must start with / (actual: ${probePath})`);
  const probePort = positiveNumber("probe-port", v["probe-port"] as string | undefined);

  const json = v.json === true;
  const say = json ? ctx.io.err : ctx.io.out;
  const t0 = Date.now();
  const where = captureStoreLocation(cmd.config, v["key-file"] as string | undefined);
  const store = await CaptureStore.open({ dir: where.dir, keyFile: where.keyFile, readOnly: true });
  let restoreDir: string | undefined;
  let lab: ShadowLab | undefined;
  const abort = new AbortController();
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signals++;
    if (signals === 1) {
      say(`shadowvm-agent: ${sig}: stopping every shadow (again to quit at once)`);
      abort.abort();
      lab?.stopAll("campaign aborted");
    } else {
      lab?.killAllSync();
      process.exit(130);
    }
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    lab = await openShadowLab(cmd.config, {
      network: network as "user" | "netns" | undefined,
      probePath,
      probePort,
    });
    const reaped = lab.reaped;
    if (
      reaped &&
      (reaped.shadows.length || reaped.killed.length || reaped.netns.length || reaped.cgroups.length)
    ) {
      say(
        `reaped leftovers of earlier shadows: ${reaped.shadows.length} shadow(s), ${reaped.killed.length} process(es), ${reaped.netns.length} namespace(s), ${reaped.cgroups.length} cgroup(s)`,
      );
    }
    reapRestored(restoredRoot(cmd.config));
    const tRestore = Date.now();
    const runDir = createRestoreDir(cmd.config);
    restoreDir = runDir;
    let restored: RestoredCapture;
    try {
      restored = await restoreLibvirtCapture(store, captureId, runDir);
    } catch (err) {
      throw new ShadowvmError("shadow", "restore_failed", describeError(err), { cause: err });
    }
    say(`restored capture ${captureId} of ${restored.vm} in ${Date.now() - tRestore} ms`);
    lab.on("event", (e) => say(describeEvent(e, t0)));
    const runs: ShadowRunSpec[] = profiles.map((profile) => ({
      profile,
      ...(bandwidth !== undefined ? { bandwidthKbit: bandwidth } : {}),
    }));
    const result = await lab.runCampaign(restored, {
      runs,
      control,
      ...(controlDuration !== undefined ? { controlDurationS: controlDuration } : {}),
      signal: abort.signal,
    });
    if (json) ctx.io.out(JSON.stringify(campaignJson(result), null, 2));
    else {
      ctx.io.out(
        formatTable(
          ["SHADOW", "PROFILE", "OUTCOME", "FAILURES"],
          result.runs.map((r) => [
            r.shadow,
            r.control
              ? "control"
              : `cpu ${r.profile.cpu_load} mem ${r.profile.memory_load} io ${r.profile.io_load} net ${r.profile.net_latency_ms}ms/${r.profile.net_loss_pct}%${r.profile.faults.length ? ` faults ${r.profile.faults.map((f) => f.kind).join(",")}` : ""}`,
            r.outcome,
            r.failures.map((f) => `${f.class}:${f.title}`).join(" | ") || "-",
          ]),
        ),
      );
    }
    const ran = result.runs.some((r) => r.startMs !== undefined);
    return ran ? 0 : 1;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await lab?.close();
    await store.close();
    if (restoreDir && v["keep-restored"] !== true) rmSync(restoreDir, { recursive: true, force: true });
  }
}

export async function shadowCommand(ctx: CommandContext): Promise<number> {
  const cmd = parseCommand(ctx, RUN_OPTIONS);
  const [action, ...rest] = cmd.positionals;
  switch (action) {
    case "run": {
      if (rest.length !== 1) throw new UsageError("shadow run takes exactly one capture id");
      return runCommand(ctx, cmd, rest[0]!);
    }
    case "reap": {
      if (rest.length) throw new UsageError("shadow reap takes no arguments");
      const report = await reapShadowLeftovers(cmd.config);
      if (cmd.values.json) ctx.io.out(JSON.stringify(report, null, 2));
      else ctx.io.out(describeReap(report));
      for (const e of report.errors) ctx.io.err(`shadowvm-agent: error: ${e}`);
      return report.errors.length ? 1 : 0;
    }
    case "capabilities": {
      if (rest.length !== 1) throw new UsageError("shadow capabilities takes exactly one capture id");
      const where = captureStoreLocation(cmd.config, cmd.values["key-file"] as string | undefined);
      const store = await CaptureStore.open({ dir: where.dir, keyFile: where.keyFile, readOnly: true });
      const lab = await openShadowLab(cmd.config, {
        network: cmd.values["network"] as "user" | "netns" | undefined,
      });
      const runDir = createRestoreDir(cmd.config);
      try {
        const restored = await restoreLibvirtCapture(store, rest[0]!, runDir);
        const caps = await lab.capabilities(restored);
        if (cmd.values.json) ctx.io.out(JSON.stringify(caps, null, 2));
        else
          ctx.io.out(
            formatTable(
              ["CAPABILITY", "AVAILABLE", "WHY NOT"],
              Object.entries(caps).map(([k, c]) => [k, c.available ? "yes" : "no", c.reason ?? ""]),
            ),
          );
        return 0;
      } finally {
        await lab.close();
        await store.close();
        rmSync(runDir, { recursive: true, force: true });
      }
    }
    default:
      throw new UsageError(`shadow needs an action: run, capabilities or reap (actual: ${action ?? "none"})`);
  }
}
