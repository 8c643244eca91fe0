// One exploration campaign of one production VM, from start to finish: a live capture, the capture
// restored once, the explorer's profiles run K at a time as isolated shadows, the outcomes fed back
// to the explorer, every run and failure reported, and everything torn down (shadows, restored
// plaintext) whatever happens. Used by `serve` (on a schedule) and `explore` without --oracle.
import { randomBytes } from "node:crypto";
import { rmSync } from "node:fs";
import {
  DEFAULT_PROFILE_BOUNDS,
  FAULT_KINDS,
  type FaultKind,
  type Logger,
  ShadowvmError,
  silentLogger,
} from "@shadowvm/shared";
import {
  type CaptureDriver,
  type CaptureRecord,
  captureSettings,
  captureStoreLocation,
  captureVm,
} from "../capture/capture-service.js";
import { CaptureStore } from "../capture/store/index.js";
import type { AgentConfig } from "../config/agent-config.js";
import type { ProductionVmData } from "../explorer/baseline.js";
import { type ExploreResult, explore } from "../explorer/explore.js";
import type { ProfileBounds } from "../explorer/space.js";
import type { ExplorerStateStore } from "../explorer/state-store.js";
import type { StrategyName } from "../explorer/types.js";
import { restoreLibvirtCapture } from "../hypervisor/libvirt/libvirt-shadow.js";
import { createRestoreDir, openShadowLab, reapRestored, restoredRoot } from "../shadow/open-lab.js";
import type { RestoredCapture } from "../shadow/restored-capture.js";
import type { CampaignResult, LabEvent } from "../shadow/shadow-lab.js";
import type { SignatureDb } from "../signatures/index.js";
import { type RecordSink, RunReporter } from "./run-reporter.js";
import { ShadowTrialRunner } from "./shadow-trial-runner.js";

export interface CampaignPlan {
  /** Production VM: name or uuid as the driver knows it. */
  vm: string;
  budget: number;
  /** Shadows at once (K). */
  parallel: number;
  strategy: StrategyName;
  durationS: number;
  control: boolean;
  /** Fault kinds the explorer may use; intersected with what the host can do. */
  faults?: readonly FaultKind[] | undefined;
  seed?: number | string;
  /** The production VM's operating point (the baseline generator's input). */
  vmProfile?: ProductionVmData | undefined;
  /** Search bounds per knob (campaigns.bounds), within what the host can apply. */
  bounds?: Partial<ProfileBounds> | undefined;
}

export interface CampaignServices {
  config: AgentConfig;
  /** Reaches the production VM for the capture (qemu or libvirt driver). */
  driver: CaptureDriver;
  /** Where runs, failures, captures and signature updates go; undefined = not shipped. */
  sink?: RecordSink | undefined;
  signatures?: SignatureDb | undefined;
  /** Explorer knowledge per VM (survives restarts). */
  explorerStore?: ExplorerStateStore | undefined;
  logger?: Logger;
  signal?: AbortSignal;
  /** Progress: capture done, every lab event, every finished batch. */
  onEvent?: (event: CampaignEvent) => void;
}

export type CampaignEvent =
  | { type: "capturing"; vm: string /** Why a fresh capture, for all but the first. */; reason?: string }
  | { type: "captured"; record: CaptureRecord }
  | { type: "faults"; usable: FaultKind[]; unavailable: { kind: FaultKind; reason: string }[] }
  | { type: "lab"; event: LabEvent }
  | { type: "batch"; result: CampaignResult; done: number; budget: number };

export interface CampaignReport {
  campaignId: string;
  vm: string;
  vmUuid: string;
  /** The capture the last runs used. */
  capture: CaptureRecord;
  /** Every capture taken, in order: more than one when a control found a capture unusable. */
  captures: CaptureRecord[];
  explore: ExploreResult;
  batches: CampaignResult[];
  /** Title and class of every fingerprint seen, for people (the explorer knows fingerprints only). */
  titles: Record<string, { title: string; class: string }>;
  /** False when no spool took the results (they exist only in this report). */
  shipped: boolean;
}

export function newCampaignId(): string {
  return `c-${Date.now().toString(36)}-${randomBytes(2).toString("hex")}`;
}

export async function runShadowCampaign(
  services: CampaignServices,
  plan: CampaignPlan,
): Promise<CampaignReport> {
  const { config } = services;
  const log = services.logger ?? silentLogger();
  const say = services.onEvent ?? (() => undefined);
  const campaignId = newCampaignId();
  const store = await CaptureStore.open(captureStoreLocation(config));
  reapRestored(restoredRoot(config));
  let restoreDir: string | undefined;
  const lab = await openShadowLab(config);
  const stopLab = () => lab.stopAll("campaign stopped");
  services.signal?.addEventListener("abort", stopLab, { once: true });
  const captures: CaptureRecord[] = [];
  let reporter: RunReporter | undefined;
  /** A live capture of the VM, shipped, and restored for the shadows (the previous one removed). */
  const captureAndRestore = async (reason?: string): Promise<RestoredCapture> => {
    say({ type: "capturing", vm: plan.vm, ...(reason ? { reason } : {}) });
    const record = await captureVm({
      driver: services.driver,
      store,
      vm: plan.vm,
      ...captureSettings(config),
      logger: log,
    });
    captures.push(record);
    say({ type: "captured", record });
    reporter ??= new RunReporter(
      {
        campaignId,
        captureId: record.id,
        vmName: record.vm,
        vmUuid: record.vm_uuid,
        strategy: plan.strategy,
      },
      services.sink,
      services.signatures,
    );
    await reporter.captured(record);
    if (services.signal?.aborted) throw new ShadowvmError("campaign", "aborted", "the campaign was stopped");
    if (restoreDir) rmSync(restoreDir, { recursive: true, force: true });
    restoreDir = createRestoreDir(config);
    return restoreLibvirtCapture(store, record.id, restoreDir);
  };
  try {
    const restored = await captureAndRestore();
    const caps = await lab.capabilities(restored);
    const faults = usableFaults(caps, plan.faults);
    say({ type: "faults", ...faults });
    const bounds = boundsFor(caps, plan.bounds);

    const onLab = (event: LabEvent) => say({ type: "lab", event });
    lab.on("event", onLab);
    const runner = new ShadowTrialRunner({
      lab,
      capture: restored,
      reporter: reporter!,
      control: plan.control,
      recapture: (reason) => {
        log.warn(
          { vm: plan.vm, capture: captures.at(-1)?.id, reason },
          "campaign: the control shadow found the capture unusable; taking a fresh one",
        );
        return captureAndRestore(
          `the control shadow of capture ${captures.at(-1)?.id} was unhealthy: ${reason}`,
        );
      },
      ...(services.signal ? { signal: services.signal } : {}),
    });
    let result: ExploreResult;
    try {
      result = await explore({
        runner,
        budget: plan.budget,
        strategy: plan.strategy,
        seed: plan.seed ?? campaignId,
        batchSize: plan.parallel,
        durationS: plan.durationS,
        faultKinds: faults.usable,
        bounds,
        ...(plan.vmProfile ? { vmProfile: plan.vmProfile } : {}),
        ...(services.explorerStore
          ? { store: services.explorerStore, vmId: captures[0]!.vm_uuid || captures[0]!.vm }
          : {}),
        onBatch: (done, budget) => {
          const last = runner.batches.at(-1);
          if (last) say({ type: "batch", result: last, done, budget });
        },
      });
    } finally {
      lab.off("event", onLab);
    }
    const titles: CampaignReport["titles"] = {};
    for (const b of runner.batches) {
      for (const r of b.runs)
        for (const f of r.failures) titles[f.fingerprint] = { title: f.title, class: f.class };
    }
    const first = captures[0]!;
    return {
      campaignId,
      vm: first.vm,
      vmUuid: first.vm_uuid,
      capture: captures.at(-1)!,
      captures,
      explore: result,
      batches: runner.batches,
      titles,
      shipped: reporter!.shipping,
    };
  } finally {
    services.signal?.removeEventListener("abort", stopLab);
    await lab.close();
    await store.close();
    if (restoreDir) rmSync(restoreDir, { recursive: true, force: true });
  }
}

/**
 * The explorer's default search bounds, cut to what the host can apply: without a CPU cap no
 * contention beyond the guest's own demand, without a balloon no memory pressure, and so on.
 */
export function boundsFor(
  caps: Record<string, { available: boolean }>,
  wanted: Partial<ProfileBounds> = {},
): ProfileBounds {
  const has = (c: string) => caps[c]?.available === true;
  const b = DEFAULT_PROFILE_BOUNDS;
  const host: ProfileBounds = {
    ...b,
    cpu_load: has("cpu_contention") ? b.cpu_load : [b.cpu_load[0], Math.min(1, b.cpu_load[1])],
    memory_load: has("memory_pressure") ? b.memory_load : [0, 0],
    io_load: has("io_throttling") ? b.io_load : [b.io_load[0], Math.min(1, b.io_load[1])],
    net_latency_ms: has("net_impairment") ? b.net_latency_ms : [0, 0],
    net_loss_pct: has("net_impairment") ? b.net_loss_pct : [0, 0],
  };
  // Configured ranges, clamped into what the host can apply (an empty overlap pins the knob low).
  const out = { ...host };
  for (const k of Object.keys(wanted) as (keyof ProfileBounds)[]) {
    const w = wanted[k];
    if (!w) continue;
    const lo = Math.max(w[0], host[k][0]);
    const hi = Math.min(w[1], host[k][1]);
    out[k] = hi >= lo ? [lo, hi] : [host[k][0], host[k][0]];
  }
  return out;
}

/**
 * The fault kinds a campaign can use: the ones asked for (default all) that this host can inject
 * into shadows of this capture (a profile asking for another would be refused by the lab).
 */
export function usableFaults(
  caps: Record<string, { available: boolean; reason?: string }>,
  wanted: readonly FaultKind[] | undefined,
): { usable: FaultKind[]; unavailable: { kind: FaultKind; reason: string }[] } {
  const usable: FaultKind[] = [];
  const unavailable: { kind: FaultKind; reason: string }[] = [];
  for (const kind of wanted ?? FAULT_KINDS) {
    const c = caps[kind];
    if (c?.available) usable.push(kind);
    else unavailable.push({ kind, reason: c?.reason ?? "not supported by this host" });
  }
  return { usable, unavailable };
}
