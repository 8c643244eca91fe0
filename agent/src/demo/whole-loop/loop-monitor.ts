// What the operator watching the demo sees: one line per event of the loop, from the agent's JSON
// log lines (campaign, capture, shadows) and from polling the collector's API (VMs seen, telemetry
// stored, shadow runs and failures stored, risk rounds) and Alertmanager (alerts as received).
// It also keeps the times the summary reports.
import { type Failure, formatTimeToFailure, type RiskAssessment, type ShadowRun } from "@shadowvm/shared";
import type { Alertmanager, AlertmanagerAlert } from "./alertmanager.js";
import type { CollectorApi } from "./collector-api.js";

export interface ReceivedAlert {
  /** When this process first saw it in Alertmanager (polled about every second). */
  seenAtMs: number;
  alert: AlertmanagerAlert;
}

export interface MonitorState {
  vmsSeen: Map<string, string>;
  samplesStored: number;
  captureAtMs?: number;
  campaignStartedAtMs?: number;
  campaignFinishedAtMs?: number;
  campaignError?: string;
  runs: Map<string, ShadowRun>;
  failures: Map<string, Failure>;
  /** received_at_ms of the first failure the collector stored. */
  firstFailureStoredAtMs?: number;
  /** When this process first saw a stored failure through the API. */
  firstFailureSeenAtMs?: number;
  risk: Map<string, RiskAssessment>;
  /** Every alert ever seen in Alertmanager (fingerprinted by labels): first sighting, latest copy. */
  allAlerts: Map<string, ReceivedAlert>;
}

const pct = (v: unknown) => (typeof v === "number" ? `${Math.round(v * 100)} %` : "-");
const num = (v: unknown, d = 2) => (typeof v === "number" ? v.toFixed(d) : "-");

/** A stress profile in a few words: only what is applied. */
export function describeProfile(profile: unknown): string {
  // A JSON profile as the API or the agent's log carries it; missing knobs count as idle.
  if (!profile || typeof profile !== "object") return "control (no stress)";
  const p = profile as Record<string, unknown>;
  const parts: string[] = [];
  const cpu = Number(p["cpu_load"] ?? 0);
  const mem = Number(p["memory_load"] ?? 0);
  const io = Number(p["io_load"] ?? 0);
  const lat = Number(p["net_latency_ms"] ?? 0);
  const loss = Number(p["net_loss_pct"] ?? 0);
  if (cpu > 1) parts.push(`cpu ${cpu.toFixed(1)}x`);
  if (mem > 0) parts.push(`memory ${mem.toFixed(2)}`);
  if (io > 1) parts.push(`io ${io.toFixed(1)}x`);
  if (lat > 0) parts.push(`+${Math.round(lat)} ms`);
  if (loss > 0) parts.push(`${loss.toFixed(1)} % loss`);
  const faults = (p["faults"] as { kind: string; rate: number }[] | undefined) ?? [];
  for (const f of faults) parts.push(`${f.kind}@${num(f.rate)}`);
  return parts.length ? parts.join(", ") : "no stress";
}

export class LoopMonitor {
  readonly state: MonitorState = {
    vmsSeen: new Map(),
    samplesStored: 0,
    runs: new Map(),
    failures: new Map(),
    risk: new Map(),
    allAlerts: new Map(),
  };
  private lastSamplesNote = 0;
  private readonly riskNotes = new Map<string, { gist: string; at: number }>();

  constructor(
    private readonly o: {
      api: CollectorApi;
      alertmanager: Alertmanager;
      say: (line: string) => void;
      now?: () => number;
    },
  ) {}

  private now(): number {
    return this.o.now?.() ?? Date.now();
  }

  /** One line of the agent's output (pino JSON); the interesting ones become progress lines. */
  onAgentLine(line: string): void {
    let e: Record<string, unknown>;
    try {
      e = JSON.parse(line) as Record<string, unknown>;
    } catch {
      if (line.trim()) this.o.say(`agent: ${line.trim()}`);
      return;
    }
    const msg = String(e["msg"] ?? "");
    const level = Number(e["level"] ?? 30);
    const vmField = e["vm"] ? String(e["vm"]) : "";
    const vm = vmField ? `${this.state.vmsSeen.get(vmField) ?? vmField}: ` : "";
    switch (msg) {
      case "campaign: started":
        this.state.campaignStartedAtMs ??= this.now();
        this.o.say(
          `${vm}campaign: capture, then ${e["budget"]} stressed shadows, ${e["parallel"]} at a time (${e["strategy"]} explorer)`,
        );
        return;
      case "campaign: capturing":
        this.o.say(
          e["reason"]
            ? `${vm}fresh live capture, because ${e["reason"]}`
            : `${vm}live capture (memory, disks, configuration at one instant)`,
        );
        return;
      case "campaign: captured":
        this.state.captureAtMs ??= this.now();
        this.o.say(
          `${vm}capture ${e["capture"]} done: guest paused ${num(e["pause_ms"], 1)} ms, ${mib(e["stored_bytes"])} stored`,
        );
        return;
      case "shadow: started": {
        const control = e["control"] === true;
        this.o.say(
          `${vm}shadow ${e["shadow"]} started${control ? " (control, unstressed)" : `: ${describeProfile(e["profile"])}`}`,
        );
        return;
      }
      case "shadow: failure":
        this.o.say(`${vm}shadow ${e["shadow"]} FAILURE ${e["class"]}: "${e["title"]}"`);
        return;
      case "shadow: outcome": {
        const failures = (e["failures"] as string[] | undefined) ?? [];
        this.o.say(
          `${vm}shadow ${e["shadow"]} finished: ${e["outcome"]}${failures.length ? ` (${[...new Set(failures)].map((f) => `"${f}"`).join(", ")})` : ""}`,
        );
        return;
      }
      case "shadow: control verdict": {
        const v = e["verdict"] as { healthy?: boolean; latencyThresholdMs?: number } | undefined;
        this.o.say(
          `${vm}control shadow: ${v?.healthy ? "healthy, the capture is valid" : "UNHEALTHY"}${typeof v?.latencyThresholdMs === "number" ? `; probe latency threshold ${Math.round(v.latencyThresholdMs)} ms` : ""}`,
        );
        return;
      }
      case "campaign: batch done":
        this.o.say(`${vm}batch done: ${e["done"]} of ${e["budget"]} stressed runs`);
        return;
      case "campaign: finished": {
        this.state.campaignFinishedAtMs ??= this.now();
        const sigs = (e["signatures"] as { title?: string; class?: string }[] | undefined) ?? [];
        this.o.say(
          `${vm}campaign finished: ${e["failed"]} of ${e["trials"]} stressed runs failed; signatures: ${sigs.map((s) => `${s.class} "${s.title}"`).join(", ") || "none"}${e["stopped_early"] ? ` (stopped early: ${e["stopped_early"]})` : ""}`,
        );
        return;
      }
      case "campaigns: campaign failed":
      case "campaign: failed":
        this.state.campaignError = String(e["err"] ?? msg);
        this.o.say(`${vm}campaign FAILED: ${this.state.campaignError}`);
        return;
      default:
        // Anything else the agent warns about is worth a line; routine info is in the log file.
        if (level >= 40 || /^(campaign|shadow)/.test(msg)) {
          const rest = Object.entries(e)
            .filter(
              ([k]) =>
                ![
                  "level",
                  "time",
                  "pid",
                  "hostname",
                  "msg",
                  "vm",
                  "vm_uuid",
                  "name",
                  "service",
                  "agent_id",
                ].includes(k),
            )
            .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
            .join(" ");
          this.o.say(
            `agent${level >= 50 ? " ERROR" : level >= 40 ? " warning" : ""}: ${vm}${msg}${rest ? ` (${rest.slice(0, 300)})` : ""}`,
          );
        }
    }
  }

  /** One look at the collector and Alertmanager; prints what changed. */
  async poll(): Promise<void> {
    const { api, say } = this.o;
    const vms = await api.vms();
    for (const v of vms) {
      if (!this.state.vmsSeen.has(v.uuid)) {
        this.state.vmsSeen.set(v.uuid, v.name);
        const labels = Object.entries(v.labels)
          .map(([k, x]) => `${k}=${x}`)
          .join(",");
        say(
          `collector: VM ${v.name} seen (${v.vcpus} vCPU, ${v.memory_mb} MiB${labels ? `, ${labels}` : ""})`,
        );
      }
    }
    const samples = await api.metric("shadowvm_collector_rows_written_total", { table: "samples" });
    if (samples > 0 && (this.state.samplesStored === 0 || this.now() - this.lastSamplesNote >= 60_000)) {
      say(`collector: telemetry flowing, ${samples} samples stored`);
      this.lastSamplesNote = this.now();
    }
    this.state.samplesStored = samples;

    for (const r of await api.shadowRuns()) {
      const known = this.state.runs.get(r.id);
      this.state.runs.set(r.id, r);
      if (!known && r.finished_at_ms) {
        say(
          `collector: shadow run ${r.id} stored: ${r.control ? "control" : describeProfile(r.profile)} -> ${r.outcome}${r.failure_count ? `, ${r.failure_count} failure(s)` : ""}`,
        );
      }
    }
    const failures = await api.failures();
    for (const f of failures.sort((a, b) => a.received_at_ms - b.received_at_ms)) {
      if (this.state.failures.has(f.failure_id)) continue;
      this.state.failures.set(f.failure_id, f);
      if (this.state.firstFailureStoredAtMs === undefined) {
        this.state.firstFailureStoredAtMs = f.received_at_ms;
        this.state.firstFailureSeenAtMs = this.now();
        say(`collector: first shadow failure stored: ${f.class} "${f.title}" (run ${f.shadow_run_id})`);
      }
    }

    for (const v of vms) {
      if (!v.risk) continue;
      const prev = this.state.risk.get(v.uuid);
      if (prev && prev.assessed_at_ms === v.risk.assessed_at_ms) continue;
      const a = await api.risk(v.uuid);
      if (!a) continue;
      this.state.risk.set(v.uuid, a);
      const top = a.signatures[0];
      const b = a.boundary.find((x) => x.fingerprint === top?.fingerprint);
      // Rounds come every few seconds while telemetry flows: a line when the picture changes
      // (signature, dimension, probability in 10 % steps, confidence level), else once a minute.
      const gist = `${top?.fingerprint}|${b?.dimension}|${Math.round((top?.probability ?? -1) * 10)}|${top?.confidence_level}`;
      const last = this.riskNotes.get(v.uuid);
      if (last && last.gist === gist && this.now() - last.at < 60_000) continue;
      this.riskNotes.set(v.uuid, { gist, at: this.now() });
      say(
        `risk round: ${v.name}: ${top ? `${top.class} "${top.title}" ${top.status}, P(fail within horizon) ${pct(top.probability)}, confidence ${top.confidence_level} ${num(top.confidence)}${top.time_to_failure_h !== null ? `, time to failure ${formatTimeToFailure(top.time_to_failure_h)}` : ""}${b ? `; ${b.dimension} boundary ${num(b.boundary)} ± ${num(b.boundary_uncertainty)}, production at ${num(b.level)}` : ""}` : "no signature"}`,
      );
    }
    await this.pollAlertmanager();
  }

  /** Alerts as Alertmanager holds them (the first sighting of each VM's alert is kept). */
  async pollAlertmanager(): Promise<void> {
    const alerts = await this.o.alertmanager.alerts('alertname="ShadowvmFailureRisk"');
    for (const a of alerts) {
      const key = JSON.stringify(a.labels);
      const seen = this.state.allAlerts.get(key);
      this.state.allAlerts.set(key, { seenAtMs: seen?.seenAtMs ?? this.now(), alert: a });
      if (!seen)
        this.o.say(
          `ALERT in Alertmanager: ${a.labels["vm"] ?? "?"} ${a.labels["severity"]} ${a.labels["failure_class"]}: ${a.annotations["summary"]}; confidence ${a.annotations["confidence"]}; mitigation: ${firstStep(a.annotations["mitigation"])}`,
        );
    }
  }

  /**
   * The first alert for a VM that named the given failure class, or (no class given) its first
   * alert of any class. Two alerts for one VM often arrive in the same round (an OOM and the
   * latency breach the same memory pressure causes), so "first for the VM" would be a coin toss.
   */
  firstAlert(vm: string, failureClass?: string): ReceivedAlert | undefined {
    let first: ReceivedAlert | undefined;
    for (const r of this.state.allAlerts.values()) {
      if (r.alert.labels["vm"] !== vm) continue;
      if (failureClass !== undefined && r.alert.labels["failure_class"] !== failureClass) continue;
      if (!first || r.seenAtMs < first.seenAtMs) first = r;
    }
    return first;
  }

  /** The newest risk round time over all VMs, 0 when none. */
  lastRiskRoundMs(): number {
    let t = 0;
    for (const a of this.state.risk.values()) t = Math.max(t, a.assessed_at_ms);
    return t;
  }

  lastFailureStoredMs(): number {
    let t = 0;
    for (const f of this.state.failures.values()) t = Math.max(t, f.received_at_ms);
    return t;
  }
}

function mib(v: unknown): string {
  return typeof v === "number" ? `${(v / 1048576).toFixed(1)} MiB` : "?";
}

function firstStep(m: string | undefined): string {
  if (!m) return "-";
  const first = m.split("\n")[0] ?? m;
  return first.replace(/^1\.\s*/, "");
}
