// Constructed histories for the risk and alert tests: real protobuf frames (inventory, shadow runs
// with their failures, telemetry with the operating point in `extra`), committed through the
// collector's store exactly as the ingest path commits what agents stream.

import type { IngestStore } from "@shadowvm/collector";
import { toIngestFrame } from "@shadowvm/collector/ingest/ingest-frame";
import { decodeFrame, type EnvelopeInit, encodeFrame } from "@shadowvm/shared";

export const AGENT = "agent-risk";
const EPOCH = 1_700_000_000_000;

export interface Sig {
  title: string;
  class: string;
  fingerprint: string;
}

export const OOM: Sig = { title: "Out of memory: Killed process", class: "oom", fingerprint: "fp-oom-0001" };
export const HANG: Sig = {
  title: "INFO: task blocked for more than 120 seconds",
  class: "hang",
  fingerprint: "fp-hang-0002",
};

export class History {
  private seq = 0;
  readonly frames: EnvelopeInit[] = [];

  private add(init: Omit<EnvelopeInit, "agent_id" | "epoch" | "sent_at_ms" | "seq">): void {
    this.frames.push({ ...init, seq: 0 } as EnvelopeInit);
  }

  vm(
    uuid: string,
    name: string,
    opts: { labels?: Record<string, string>; memory_mb?: number; vcpus?: number } = {},
  ): this {
    this.add({
      vm_inventory: {
        uuid,
        name,
        state: 1,
        vcpus: opts.vcpus ?? 2,
        memory_mb: opts.memory_mb ?? 2048,
        machine_type: "pc-q35-7.2",
        labels: opts.labels ?? {},
      },
    });
    return this;
  }

  /**
   * One finished shadow run; `sig` = it failed with that signature, undefined = it ran ok.
   * `consequences`: more failures of the same run after the primary one (marked primary then).
   * `opts`: an unstressed control run, and the capture and campaign the run belongs to.
   */
  run(
    vmUuid: string,
    vmName: string,
    id: string,
    load: { cpu_load?: number; memory_load?: number; io_load?: number },
    sig?: Sig,
    consequences: Sig[] = [],
    opts: { control?: boolean; capture?: string; campaign?: string } = {},
  ): this {
    const failure = (s: Sig, primary: boolean) => ({
      title: s.title,
      class: s.class,
      frame: "",
      fingerprint: s.fingerprint,
      offset_ms: 5000,
      source: 1,
      shadow_run_id: id,
      primary,
    });
    const now = Date.now();
    this.add({
      shadow_run: {
        id,
        campaign_id: opts.campaign ?? "c1",
        capture_id: opts.capture ?? "cap1",
        vm_name: vmName,
        vm_uuid: vmUuid,
        profile: {
          cpu_load: load.cpu_load ?? 1,
          memory_load: load.memory_load ?? 0.3,
          io_load: load.io_load ?? 0.5,
          net_latency_ms: 0,
          net_loss_pct: 0,
          faults: [],
          duration_s: 120,
        },
        strategy: opts.control ? "control" : "adaptive",
        control: opts.control ?? false,
        started_at_ms: now - 200_000,
        finished_at_ms: now - 60_000,
        outcome: sig ? 2 : 1,
        // Without consequences the run is sent as an agent before Failure.primary sent it.
        failures: sig
          ? [failure(sig, consequences.length > 0), ...consequences.map((c) => failure(c, false))]
          : [],
      },
    });
    return this;
  }

  /**
   * Operating-point samples of one VM: `points` samples spread evenly over the last `spanH` hours
   * (the newest `endAgoMs` before now), memory = f(t hours, negative = past).
   */
  telemetry(
    vmUuid: string,
    f: (tH: number, i: number) => { memory?: number; cpu?: number; io?: number },
    opts: { points?: number; spanH?: number; endAgoMs?: number } = {},
  ): this {
    const points = opts.points ?? 72;
    const spanH = opts.spanH ?? 6;
    const end = Date.now() - (opts.endAgoMs ?? 1000);
    const samples = [];
    for (let i = 0; i < points; i++) {
      const ts = end - ((points - 1 - i) * spanH * 3_600_000) / Math.max(1, points - 1);
      const tH = (ts - Date.now()) / 3_600_000;
      const v = f(tH, i);
      samples.push({
        scope: 2,
        vm_uuid: vmUuid,
        ts_ms: Math.round(ts),
        cpu_usage: 0.5,
        memory_used_bytes: 1_000_000,
        memory_available_bytes: 2_000_000,
        extra: { op_avg_cpu: v.cpu ?? 0.3, op_avg_memory: v.memory ?? 0.3, op_avg_disk_io: v.io ?? 0.1 },
      });
    }
    this.add({ telemetry_batch: { samples } });
    return this;
  }

  /** A ProductionEvent: a precursor of `sig` (or, kind "failure", `sig` itself) on a VM's console `agoMs` ago. */
  production(
    vmUuid: string,
    vmName: string,
    kind: "precursor" | "failure",
    sig: Sig,
    line: string,
    agoMs: number,
    pattern = "",
    /** Shadow runs the pattern preceded the failure in, and runs that showed it without. */
    runs?: { with: number; without: number },
  ): this {
    this.add({
      production_event: {
        vm_uuid: vmUuid,
        vm_name: vmName,
        ts_ms: Date.now() - agoMs,
        kind: kind === "precursor" ? 1 : 2,
        fingerprint: sig.fingerprint,
        title: sig.title,
        class: sig.class,
        line,
        pattern,
        ...(runs ? { precursor_runs_with: runs.with, precursor_runs_without: runs.without } : {}),
      },
    });
    return this;
  }

  /** Commits every frame added so far (in order) through the store; clears the list. */
  async commit(store: IngestStore): Promise<void> {
    const frames = this.frames.splice(0).map((init) => {
      const bytes = encodeFrame({
        ...init,
        agent_id: AGENT,
        epoch: EPOCH,
        sent_at_ms: Date.now(),
        seq: ++this.seq,
      });
      return toIngestFrame(decodeFrame(bytes), bytes.byteLength);
    });
    await store.commit(frames);
  }
}

/** Small deterministic noise in [-a, a]. */
export function noise(i: number, a = 0.003): number {
  return a * Math.sin(i * 12.9898 + 78.233);
}
