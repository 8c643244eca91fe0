// The shadow lab: campaigns of shadows from one capture.
//
// A campaign starts K shadows of one restored capture in parallel, each with its own stress
// profile, plus (optionally) an unstressed control shadow, and for each one:
//   admission (host guard) -> registry record -> cgroup -> start (shadow-vm.ts, isolated) ->
//   observation (detection's ShadowObserver: console, QMP events, service probes) ->
//   calibration and stress (stress.ts) -> faults at their times -> end after duration_s, or
//   failure_grace_s after the first failure, or when the host guard needs the resources back, or
//   on abort -> teardown (QEMU, overlays, sockets, namespace, cgroup, record).
// The control runs for the campaign's longest duration; it must run clean (assessControl): then
// the capture is valid and the other shadows' outcomes stand, else they are inconclusive. A
// control that fails stops the whole campaign after failure_grace_s: nothing more can count.
// Its probes also give the latency threshold of the stressed shadows' probes as soon as it has
// enough of them.
//
// Every trace is removed at the end of each shadow, on abort and on the agent's exit (a
// synchronous last resort kills what is left); what a killed agent left is reaped by the next
// one at start-up (registry.ts).
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readSync, rmdirSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import {
  type Logger,
  ShadowvmError,
  type StressProfile,
  silentLogger,
  stressProfileFromJson,
} from "@shadowvm/shared";
import {
  assessControl,
  type ControlVerdict,
  type DetectedFailure,
  decideOutcome,
  latencyThresholdFromControl,
  type ObservationResult,
  type ProbeStats,
  type RunOutcome,
  ShadowObserver,
} from "../detection/index.js";
import { type CgroupSupport, detectCgroups, type ShadowCgroup, ShadowCgroups } from "../host/cgroups.js";
import { type HostBudget, HostGuard, type HostProbe, realHostProbe } from "../host/host-guard.js";
import { freeDiskBytes, processStartTicks } from "../host/proc.js";
import type { DriverCapabilities } from "../hypervisor/driver.js";
import { checkProfile, detectCapabilities, type LabCapabilities } from "./capabilities.js";
import { deleteShadowNetns, netnsPids } from "./netns.js";
import { netnsName, newRecord, type ReapReport, reapLeftovers, shadowsTag, writeRecord } from "./registry.js";
import type { RestoredCapture } from "./restored-capture.js";
import { type ShadowNetworkMode, type ShadowVm, startShadow } from "./shadow-vm.js";
import { type Demand, ShadowStress, type StressEvent } from "./stress.js";

const MiB = 1024 * 1024;

/** The lab's settings (the config's `shadow:` section, resolved). */
export interface ShadowLabSettings {
  network: ShadowNetworkMode;
  budget: HostBudget;
  overlayReserveBytes: number;
  qemuOverheadBytes: number;
  cgroupParent: string | undefined;
  calibrationMs: number;
  minBalloonBytes: number;
  workloadProcesses: string[];
  probe: { port: number; path: string; intervalMs: number; timeoutMs: number; failures: number };
  stopOnFailure: boolean;
  failureGraceMs: number;
  startTimeoutMs: number;
  watchIntervalMs: number;
  controlMinProbeSuccess: number;
}

/** Settings from the config's `shadow:` section (see agent-config.ts). */
export function labSettingsFromConfig(
  s: {
    network: ShadowNetworkMode;
    max_shadows: number;
    cpu_share: number;
    require_cpu_cap: boolean;
    memory_budget_mb?: number | undefined;
    host_reserve_mb: number;
    emergency_available_mb: number;
    disk_budget_mb: number;
    min_free_disk_mb: number;
    emergency_free_disk_mb: number;
    overlay_reserve_mb: number;
    qemu_overhead_mb: number;
    cgroup_parent?: string | undefined;
    calibration_s: number;
    min_balloon_mb: number;
    workload_processes: string[];
    probe_port: number;
    probe_path: string;
    probe_interval_ms: number;
    probe_timeout_ms: number;
    probe_failures: number;
    stop_on_failure: boolean;
    failure_grace_s: number;
    start_timeout_s: number;
    watch_interval_ms: number;
    control_min_probe_success: number;
  },
  hostMemoryBytes: number,
): ShadowLabSettings {
  return {
    network: s.network,
    budget: {
      maxShadows: s.max_shadows,
      cpuShare: s.cpu_share,
      memoryBudgetBytes: (s.memory_budget_mb ?? Math.floor(hostMemoryBytes / MiB / 2)) * MiB,
      hostReserveBytes: s.host_reserve_mb * MiB,
      emergencyAvailableBytes: s.emergency_available_mb * MiB,
      diskBudgetBytes: s.disk_budget_mb * MiB,
      minFreeDiskBytes: s.min_free_disk_mb * MiB,
      emergencyFreeDiskBytes: s.emergency_free_disk_mb * MiB,
      requireCpuCap: s.require_cpu_cap,
    },
    overlayReserveBytes: s.overlay_reserve_mb * MiB,
    qemuOverheadBytes: s.qemu_overhead_mb * MiB,
    cgroupParent: s.cgroup_parent,
    calibrationMs: s.calibration_s * 1000,
    minBalloonBytes: s.min_balloon_mb * MiB,
    workloadProcesses: s.workload_processes,
    probe: {
      port: s.probe_port,
      path: s.probe_path,
      intervalMs: s.probe_interval_ms,
      timeoutMs: s.probe_timeout_ms,
      failures: s.probe_failures,
    },
    stopOnFailure: s.stop_on_failure,
    failureGraceMs: s.failure_grace_s * 1000,
    startTimeoutMs: s.start_timeout_s * 1000,
    watchIntervalMs: s.watch_interval_ms,
    controlMinProbeSuccess: s.control_min_probe_success,
  };
}

export interface ShadowRunSpec {
  profile: StressProfile;
  /** Bandwidth cap for this shadow, kbit/s per direction (not part of the profile). */
  bandwidthKbit?: number;
}

export interface CampaignOptions {
  runs: ShadowRunSpec[];
  /** Add an unstressed control shadow (runs for the longest duration unless given). */
  control?: boolean;
  controlDurationS?: number;
  signal?: AbortSignal;
}

export type LabEvent =
  | { type: "refused"; shadow: string; reason: string }
  /** The host guard stops a running shadow: the host runs short. */
  | { type: "guard"; shadow: string; reason: string }
  | {
      type: "started";
      shadow: string;
      control: boolean;
      profile: StressProfile;
      /** ms from the start request until the shadow ran. */
      startMs: number;
      pid: number;
      network: ShadowNetworkMode;
      probeUrl: string;
    }
  | { type: "stress" | "fault" | "note"; shadow: string; what: string; detail: string; offsetMs: number }
  | { type: "failure"; shadow: string; failure: DetectedFailure }
  | { type: "outcome"; shadow: string; outcome: RunOutcome; failures: DetectedFailure[]; notes: string[] }
  | { type: "stopped"; shadow: string; reason: string; leftovers: string[] }
  | { type: "control"; verdict: ControlVerdict };

export interface ShadowRunResult {
  shadow: string;
  control: boolean;
  profile: StressProfile;
  outcome: RunOutcome;
  failures: DetectedFailure[];
  notes: string[];
  /** ms from the start request until the shadow ran. */
  startMs?: number;
  /** Why the shadow was stopped. */
  stopReason?: string;
  demand?: Demand;
  probes?: ProbeStats;
  /** ms the shadow ran. */
  ranMs?: number;
  /** The last lines of the shadow's serial console (the evidence, kept after teardown). */
  consoleTail?: string[];
  /** The console's patterns after start-up (ObservationResult.consolePatterns); not reported. */
  consolePatterns?: string[];
}

export interface CampaignResult {
  campaign: string;
  capture: string;
  vm: string;
  network: ShadowNetworkMode;
  startedAt: string;
  finishedAt: string;
  control?: ControlVerdict;
  runs: ShadowRunResult[];
}

export interface ShadowLabOptions {
  shadowsDir: string;
  settings: ShadowLabSettings;
  driver?: DriverCapabilities;
  logger?: Logger;
  /** Tests: a fake host. */
  hostProbe?: HostProbe;
  cgroupSupport?: CgroupSupport;
}

/** The last `lines` lines of a console file (read from its last 64 KiB). */
export function consoleTail(file: string, lines: number): string[] {
  try {
    const fd = openSync(file, "r");
    try {
      const size = fstatSync(fd).size;
      const len = Math.min(size, 64 * 1024);
      const buf = Buffer.alloc(len);
      readSync(fd, buf, 0, len, size - len);
      const text = buf.toString("utf8").replace(/\r/g, "");
      return text
        .split("\n")
        .filter((l) => l.trim() !== "")
        .slice(-lines);
    } finally {
      closeSync(fd);
    }
  } catch {
    return [];
  }
}

/** The unstressed profile of a control shadow. */
export function controlProfile(durationS: number): StressProfile {
  return {
    cpu_load: 0,
    memory_load: 0,
    io_load: 0,
    net_latency_ms: 0,
    net_loss_pct: 0,
    faults: [],
    duration_s: durationS,
  };
}

interface Live {
  id: string;
  control: boolean;
  shadow?: ShadowVm;
  cgroup?: ShadowCgroup;
  netns?: string;
  workDir: string;
  stop?: (reason: string) => void;
  /** A stop asked for while the shadow was still starting. */
  pendingStop?: string;
}

/** Stops a running shadow now, or one still starting as soon as it can be. */
function stopLive(live: Live, reason: string): void {
  if (live.stop) live.stop(reason);
  else live.pendingStop ??= reason;
}

export class ShadowLab extends EventEmitter<{ event: [LabEvent] }> {
  readonly shadowsDir: string;
  readonly settings: ShadowLabSettings;
  readonly tag: string;
  readonly cgroups: ShadowCgroups | undefined;
  readonly guard: HostGuard;
  readonly log: Logger;
  /** What the start-up reaping removed. */
  reaped: ReapReport | undefined;
  private readonly support: CgroupSupport;
  private readonly driver: DriverCapabilities | undefined;
  private readonly live = new Map<string, Live>();
  private readonly exitHook = () => this.killAllSync();
  private closed = false;

  private constructor(o: ShadowLabOptions, support: CgroupSupport) {
    super();
    this.shadowsDir = resolve(o.shadowsDir);
    this.settings = o.settings;
    this.tag = shadowsTag(this.shadowsDir);
    this.support = support;
    this.driver = o.driver;
    this.log = o.logger ?? silentLogger();
    this.cgroups =
      support.cpu || support.memory
        ? ShadowCgroups.forTag(support, this.tag, o.settings.cgroupParent)
        : undefined;
    const probe = o.hostProbe ?? realHostProbe(this.shadowsDir, freeDiskBytes);
    this.guard = new HostGuard(
      o.settings.budget,
      probe,
      support.cpu ? undefined : support.problems.join("; "),
    );
  }

  /**
   * Opens the lab: reaps what earlier agents left, prepares the shadows' parent cgroup (their CPU
   * share and memory budget) and starts the host guard's watch.
   */
  static async open(o: ShadowLabOptions): Promise<ShadowLab> {
    mkdirSync(o.shadowsDir, { recursive: true, mode: 0o700 });
    const lab = new ShadowLab(o, o.cgroupSupport ?? detectCgroups());
    lab.reaped = await reapLeftovers(lab.shadowsDir, lab.cgroups, lab.log);
    if (lab.cgroups) {
      lab.cgroups.ensureParent({
        cpuCores: lab.support.cpu ? lab.guard.cpuCores : undefined,
        memoryBytes: lab.support.memory ? o.settings.budget.memoryBudgetBytes : undefined,
      });
    }
    lab.guard.on("kill", ({ id, reason }) => {
      const l = lab.live.get(id);
      lab.log.warn({ shadow: id, reason }, "host guard stops a shadow");
      lab.emitEvent({ type: "guard", shadow: id, reason });
      if (l) stopLive(l, `host guard: ${reason}`);
    });
    lab.guard.startWatch(o.settings.watchIntervalMs);
    process.on("exit", lab.exitHook);
    return lab;
  }

  private emitEvent(e: LabEvent): void {
    this.emit("event", e);
  }

  /** What this host can do to shadows of the capture. */
  capabilities(capture: RestoredCapture): Promise<LabCapabilities> {
    return detectCapabilities({
      capture,
      cgroups: this.support,
      ...(this.driver ? { driver: this.driver } : {}),
      network: this.settings.network,
      scratchNetns: `svm${this.tag}-probe`,
    });
  }

  /** Runs one campaign to its end and returns every shadow's outcome. */
  async runCampaign(capture: RestoredCapture, options: CampaignOptions): Promise<CampaignResult> {
    if (this.closed) throw new ShadowvmError("shadow-lab", "closed", "the shadow lab is closed");
    // Validated (and normalized) like every profile from outside: a bad one names its key.
    options = {
      ...options,
      runs: options.runs.map((r) => ({ ...r, profile: stressProfileFromJson(r.profile) })),
    };
    const caps = await this.capabilities(capture);
    for (const [i, r] of options.runs.entries()) {
      checkProfile(r.profile, caps, {
        label: `stress profile ${i + 1}`,
        network: this.settings.network,
        ...(r.bandwidthKbit !== undefined ? { bandwidthKbit: r.bandwidthKbit } : {}),
      });
    }
    if (options.runs.length === 0 && !options.control) {
      throw new ShadowvmError(
        "shadow-lab",
        "invalid",
        "a campaign needs at least one stress profile or a control shadow",
      );
    }
    const campaign = randomBytes(3).toString("hex");
    const startedAt = new Date().toISOString();
    const longest = Math.max(0, ...options.runs.map((r) => r.profile.duration_s));
    const plans: { id: string; control: boolean; spec: ShadowRunSpec }[] = options.runs.map((spec, i) => ({
      id: `${campaign}-${i + 1}`,
      control: false,
      spec,
    }));
    if (options.control) {
      plans.unshift({
        id: `${campaign}-c`,
        control: true,
        spec: { profile: controlProfile(options.controlDurationS ?? (longest || 60)) },
      });
    }
    const guestRam = capture.inventory.memory_mb * MiB;
    const observers = new Map<string, ShadowObserver>();
    const controlThreshold: { value?: number } = {};
    const runs = await Promise.all(
      plans.map((p) =>
        this.runShadow(
          capture,
          campaign,
          p.id,
          p.control,
          p.spec,
          guestRam,
          options.signal,
          observers,
          controlThreshold,
          caps.netem.available,
        ),
      ),
    );
    // The control's verdict decides whether the stressed outcomes stand.
    const controlRun = runs.find((r) => r.control);
    let verdict: ControlVerdict | undefined;
    if (controlRun) {
      verdict = !controlRun.observation
        ? { healthy: false, reason: controlRun.result.notes[0] ?? "the control shadow did not run" }
        : controlRun.interruption
          ? {
              healthy: false,
              reason: `the control shadow did not run its course (${controlRun.interruption.reason})`,
            }
          : assessControl(controlRun.observation, { minProbeSuccess: this.settings.controlMinProbeSuccess });
      this.emitEvent({ type: "control", verdict });
      for (const r of runs) {
        if (r.control || !r.observation) continue;
        const decided = decideOutcome({
          failures: r.observation.failures,
          ...(r.interruption ? { interruption: r.interruption } : {}),
          control: verdict,
        });
        r.result.outcome = decided.outcome;
        for (const n of decided.notes) if (!r.result.notes.includes(n)) r.result.notes.push(n);
      }
    }
    return {
      campaign,
      capture: capture.captureId,
      vm: capture.vm,
      network: this.settings.network,
      startedAt,
      finishedAt: new Date().toISOString(),
      ...(verdict ? { control: verdict } : {}),
      runs: runs.map((r) => r.result),
    };
  }

  private async runShadow(
    capture: RestoredCapture,
    campaign: string,
    id: string,
    control: boolean,
    spec: ShadowRunSpec,
    guestRam: number,
    signal: AbortSignal | undefined,
    observers: Map<string, ShadowObserver>,
    controlThreshold: { value?: number },
    netem: boolean,
  ): Promise<{
    control: boolean;
    result: ShadowRunResult;
    observation?: ObservationResult;
    interruption?: { reason: string; offsetMs: number };
  }> {
    const s = this.settings;
    const result: ShadowRunResult = {
      shadow: id,
      control,
      profile: spec.profile,
      outcome: "inconclusive",
      failures: [],
      notes: [],
    };
    const admission = this.guard.admit({
      id,
      memoryBytes: guestRam + s.qemuOverheadBytes,
      diskBytes: s.overlayReserveBytes,
      control,
    });
    if (!admission.ok) {
      result.notes.push(admission.reason);
      this.emitEvent({ type: "refused", shadow: id, reason: admission.reason });
      return { control, result };
    }
    const workDir = join(this.shadowsDir, id);
    const live: Live = { id, control, workDir };
    this.live.set(id, live);
    const record = newRecord(id, campaign, workDir);
    let stress: ShadowStress | undefined;
    let observer: ShadowObserver | undefined;
    let observation: ObservationResult | undefined;
    let interruption: { reason: string; offsetMs: number } | undefined;
    let stopReason = "duration reached";
    try {
      mkdirSync(workDir, { recursive: true, mode: 0o700 });
      if (s.network === "netns") record.netns = netnsName(this.tag, id);
      live.netns = record.netns;
      writeRecord(record);
      if (this.cgroups) {
        live.cgroup = this.cgroups.create(id);
        record.cgroup = { name: id, dirs: live.cgroup.dirs };
        writeRecord(record);
      }
      if (signal?.aborted) throw new ShadowvmError("shadow-lab", "aborted", "campaign aborted");
      const shadow = await startShadow(capture, {
        id,
        workDir,
        network: s.network,
        ...(record.netns ? { netnsName: record.netns } : {}),
        servicePort: s.probe.port,
        startTimeoutMs: s.startTimeoutMs,
        onSpawn: (pid) => {
          live.cgroup?.addProcess(pid);
          this.guard.setPid(id, pid);
          record.qemu = { pid, startTicks: processStartTicks(pid) };
          writeRecord(record);
        },
      });
      live.shadow = shadow;
      const startedAtMs = Date.now();
      result.startMs = shadow.startMs;
      const helperPids = shadow.netns ? await netnsPids(shadow.netns.name) : [];
      record.helpers = helperPids
        .filter((p) => p !== shadow.pid)
        .map((pid) => ({ pid, startTicks: processStartTicks(pid) }));
      writeRecord(record);
      const probeUrl = `http://127.0.0.1:${shadow.httpPort}${s.probe.path}`;
      this.emitEvent({
        type: "started",
        shadow: id,
        control,
        profile: spec.profile,
        startMs: shadow.startMs,
        pid: shadow.pid,
        network: shadow.network,
        probeUrl,
      });

      let firstFailureAt: number | undefined;
      let wake: (() => void) | undefined;
      const stopped: { reason?: string } = {};
      live.stop = (reason) => {
        stopped.reason ??= reason;
        wake?.();
      };
      if (live.pendingStop) live.stop(live.pendingStop);
      const onAbort = () => live.stop?.("campaign aborted");
      signal?.addEventListener("abort", onAbort);

      observer = new ShadowObserver({
        qmp: shadow.qmp,
        consoleLog: shadow.consoleLog,
        process: shadow.process,
        probe: { url: probeUrl, intervalMs: s.probe.intervalMs, timeoutMs: s.probe.timeoutMs },
        heartbeat: { consoleSilenceMs: 0, probeFailures: s.probe.failures },
        startedAtMs,
        ...(controlThreshold.value !== undefined && !control
          ? { latencyThresholdMs: controlThreshold.value }
          : {}),
      });
      const obs = observer;
      observers.set(id, obs);
      obs.on("failure", (f) => {
        this.emitEvent({ type: "failure", shadow: id, failure: f });
        // Symptoms seen from outside (probes, heartbeat) do not end the run: the guest kernel's
        // own report of what broke usually follows, and it makes the better signature.
        if (firstFailureAt === undefined && (f.source === "console" || f.source === "qemu_event")) {
          firstFailureAt = Date.now();
          wake?.();
        }
      });
      obs.on("note", (n) =>
        this.emitEvent({ type: "note", shadow: id, what: "detection", detail: n, offsetMs: obs.now() }),
      );
      obs.start();

      const onStress = (e: StressEvent) =>
        this.emitEvent({ type: e.kind, shadow: id, what: e.what, detail: e.detail, offsetMs: e.offsetMs });
      if (!control) {
        stress = new ShadowStress({
          shadow,
          cgroup: live.cgroup,
          profile: spec.profile,
          ...(spec.bandwidthKbit !== undefined ? { bandwidthKbit: spec.bandwidthKbit } : {}),
          startedAtMs,
          calibrationMs: s.calibrationMs,
          minBalloonBytes: s.minBalloonBytes,
          workloadProcesses: s.workloadProcesses,
          netem: netem,
          guestRamBytes: guestRam,
          onEvent: onStress,
        });
        stress.scheduleFaults();
        const st = stress;
        void (async () => {
          try {
            await st.applyNetwork();
            const demand = await st.calibrate();
            result.demand = demand;
            if (!stopped.reason) await st.apply(demand);
          } catch (err) {
            if (!stopped.reason) {
              result.notes.push(`stress could not be applied: ${(err as Error).message}`);
              onStress({
                kind: "note",
                what: "stress",
                detail: `could not be applied: ${(err as Error).message}`,
                offsetMs: obs.now(),
              });
              live.stop?.("stress could not be applied");
            }
          }
        })();
      } else {
        // The control's probes give the stressed shadows their latency threshold.
        void (async () => {
          while (!stopped.reason && controlThreshold.value === undefined) {
            await new Promise((r) => setTimeout(r, s.probe.intervalMs));
            const ok = obs.probeSamples().filter((p) => p.ok && p.offsetMs > s.calibrationMs);
            if (ok.length < 20) continue;
            try {
              controlThreshold.value = latencyThresholdFromControl(ok.map((p) => p.latencyMs));
              for (const [other, o] of observers)
                if (other !== id) o.setLatencyThreshold(controlThreshold.value);
            } catch {
              /* not enough spread yet */
            }
          }
        })();
      }

      // Run until the duration, a failure (plus grace), the guard, an abort, or QEMU's death.
      // A failing control ends its whole batch (below) whatever stop_on_failure says: with an
      // unhealthy control no stressed outcome counts, so running on only costs time.
      const stopsOnFailure = control || s.stopOnFailure;
      const durationMs = spec.profile.duration_s * 1000;
      const exited = new Promise<void>((r) => shadow.process.once("exit", () => r()));
      void exited.then(() => live.stop?.("shadow QEMU exited"));
      for (;;) {
        const now = Date.now();
        if (stopped.reason) {
          stopReason = stopped.reason;
          break;
        }
        if (now - startedAtMs >= durationMs) {
          stopReason = "duration reached";
          break;
        }
        if (firstFailureAt !== undefined && stopsOnFailure && now - firstFailureAt >= s.failureGraceMs) {
          const title =
            obs.failures().find((f) => f.source === "console" || f.source === "qemu_event")?.title ?? "?";
          stopReason = `failure seen (${title})`;
          if (control) this.stopBatch(campaign, id, `the control shadow failed (${title})`);
          break;
        }
        const until = Math.min(
          startedAtMs + durationMs,
          firstFailureAt !== undefined && stopsOnFailure
            ? firstFailureAt + s.failureGraceMs
            : Number.POSITIVE_INFINITY,
        );
        await new Promise<void>((r) => {
          const t = setTimeout(r, Math.max(10, until - now));
          wake = () => {
            clearTimeout(t);
            r();
          };
        });
        wake = undefined;
      }
      signal?.removeEventListener("abort", onAbort);
      result.ranMs = Date.now() - startedAtMs;
      await stress?.stop();
      // Lines the control shadow printed too are noise, not precursors of this run's failures.
      const controlConsole = control ? undefined : this.live.get(`${campaign}-c`)?.shadow?.consoleLog;
      observation = await obs.finish(controlConsole ? { noiseConsoleLog: controlConsole } : {});
      result.failures = observation.failures;
      result.notes.push(...observation.notes);
      result.probes = observation.probes;
      if (observation.consolePatterns) result.consolePatterns = observation.consolePatterns;
      // Stopped before its time for a reason that is not the guest's (the host guard, an abort,
      // stress that could not be applied): what it showed until then stands, its silence does not.
      const early = stopReason !== "duration reached" && !stopReason.startsWith("failure seen");
      interruption =
        observation.interruption ??
        (early ? { reason: `stopped early: ${stopReason}`, offsetMs: result.ranMs } : undefined);
      const decided = decideOutcome({
        failures: observation.failures,
        ...(interruption ? { interruption } : {}),
      });
      result.outcome = decided.outcome;
      for (const n of decided.notes) if (!result.notes.includes(n)) result.notes.push(n);
    } catch (err) {
      stopReason = `error: ${(err as Error).message}`;
      result.notes.push((err as Error).message);
      result.outcome = "inconclusive";
      await stress?.stop().catch(() => undefined);
      if (observer) {
        const seen = await observer.finish().catch(() => undefined);
        if (seen) result.failures = seen.failures;
      }
    } finally {
      result.stopReason = stopReason;
      if (live.shadow) result.consoleTail = consoleTail(live.shadow.consoleLog, 40);
      const leftovers = await this.teardown(live, stopReason);
      this.emitEvent({
        type: "outcome",
        shadow: id,
        outcome: result.outcome,
        failures: result.failures,
        notes: result.notes,
      });
      this.emitEvent({ type: "stopped", shadow: id, reason: stopReason, leftovers });
    }
    return {
      control,
      result,
      ...(observation ? { observation } : {}),
      ...(interruption ? { interruption } : {}),
    };
  }

  /** Stops every other shadow of a lab batch (their shadow ids start with the batch's id). */
  private stopBatch(campaign: string, except: string, reason: string): void {
    for (const [id, live] of this.live)
      if (id !== except && id.startsWith(`${campaign}-`)) stopLive(live, reason);
  }

  /** Removes every trace of one shadow; returns what could not be removed. */
  private async teardown(live: Live, reason: string): Promise<string[]> {
    const leftovers: string[] = [];
    try {
      await live.shadow?.stop(reason);
    } catch (err) {
      leftovers.push(`shadow: ${(err as Error).message}`);
    }
    if (live.netns) {
      await deleteShadowNetns(live.netns).catch((err) =>
        leftovers.push(`netns ${live.netns}: ${(err as Error).message}`),
      );
    }
    if (live.cgroup)
      await live.cgroup.remove().catch((err) => leftovers.push(`cgroup: ${(err as Error).message}`));
    rmSync(live.workDir, { recursive: true, force: true });
    if (existsSync(live.workDir)) leftovers.push(`directory ${live.workDir}`);
    this.guard.release(live.id);
    this.live.delete(live.id);
    return leftovers;
  }

  /** Stops every running shadow of every campaign (they end with outcome inconclusive). */
  stopAll(reason: string): void {
    for (const l of this.live.values()) stopLive(l, reason);
  }

  /** Ids of shadows running now. */
  running(): string[] {
    return [...this.live.keys()];
  }

  /** Last resort on process exit: synchronous kill and removal of everything still there. */
  killAllSync(): void {
    for (const l of this.live.values()) {
      const pid = l.shadow?.pid;
      if (pid) {
        try {
          process.kill(-pid, "SIGKILL");
        } catch {
          try {
            process.kill(pid, "SIGKILL");
          } catch {
            /* gone */
          }
        }
      }
      if (l.netns) {
        try {
          const pids = execFileSync("ip", ["netns", "pids", l.netns], { encoding: "utf8", timeout: 5000 });
          for (const p of pids.split(/\s+/).filter(Boolean)) {
            try {
              process.kill(Number(p), "SIGKILL");
            } catch {
              /* gone */
            }
          }
          execFileSync("ip", ["netns", "del", l.netns], { stdio: "ignore", timeout: 5000 });
        } catch {
          /* reaped at the next start */
        }
      }
      for (const dir of l.cgroup?.dirs ?? []) {
        for (let i = 0; i < 50; i++) {
          try {
            rmdirSync(dir);
            break;
          } catch {
            Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
          }
        }
      }
      rmSync(l.workDir, { recursive: true, force: true });
    }
    this.live.clear();
  }

  /** Stops every shadow, then the guard; the lab cannot be used afterwards. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopAll("shadow lab closed");
    for (let i = 0; i < 600 && this.live.size > 0; i++) await new Promise((r) => setTimeout(r, 50));
    this.guard.stopWatch();
    await this.cgroups?.removeParentIfEmpty().catch(() => undefined);
    process.off("exit", this.exitHook);
  }
}
